# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench check-config clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start logd on etc/logd.dev.toml (TCP frames on :8080, lines on :8082, files in ./var)
run: $(STAMP)
	mkdir -p var
	$(BIN)/logd --config etc/logd.dev.toml

## test: install what the tests need, lint, run the whole suite
test: $(STAMP)
	$(BIN)/ruff check logd tests tools/loadgen tools/bench
	$(BIN)/pytest

## lint: ruff over the tree
lint: $(STAMP)
	$(BIN)/ruff check logd tests tools/loadgen tools/bench

## bench: the benchmark scenarios (tools/bench --help for options)
bench: $(STAMP)
	$(BIN)/python tools/bench $(BENCH_ARGS)

check-config: $(STAMP)
	$(BIN)/logd --check-config etc/logd.toml
	$(BIN)/logd --check-config etc/logd.dev.toml

clean:
	rm -rf var .pytest_cache bench-results
