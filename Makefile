# Two commands on a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

PREFIX ?= /usr/local

# ruff finds the .py files under a folder; the scripts in tools/ are named one by one.
LINTED := logd tests tools tools/loadgen tools/bench tools/analyzer tools/filegen

.PHONY: run test test-deps lint bench bench-deps bench-compare check-config install clean

# setup.py builds logd/_linescan.c into logd/ (pip install -e): a change to it rebuilds.
$(STAMP): pyproject.toml setup.py logd/_linescan.c
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

## run: start logd on etc/logd.dev.toml (TCP frames on :8080, lines on :8082, files in ./var)
run: $(STAMP)
	mkdir -p var
	$(BIN)/logd --config etc/logd.dev.toml

## test: install what the tests need, lint, type-check, run the whole suite
test: $(STAMP) test-deps
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy
	$(BIN)/pytest

# Real servers the tests start (Debian packages): systemd-analyze checks the unit file;
# clickhouse-server (18.16) and postgresql back the database outputs' integration tests;
# rsyslog forwards to the syslog listener (util-linux's logger sends to it).
TEST_PACKAGES := systemd clickhouse-server clickhouse-client postgresql rsyslog
test-deps:
	@missing=""; \
	command -v systemd-analyze >/dev/null || missing="$$missing systemd"; \
	[ -x /usr/sbin/clickhouse-server ] || command -v clickhouse-server >/dev/null || \
		missing="$$missing clickhouse-server clickhouse-client"; \
	ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -x /usr/sbin/rsyslogd ] || missing="$$missing rsyslog"; \
	command -v logger >/dev/null || missing="$$missing bsdutils"; \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" != 0 ]; then echo "tests need Debian packages:$$missing" >&2; exit 1; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing \
			>/dev/null; \
	fi

## lint: ruff over the tree, mypy over logd
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/mypy

## bench: the benchmark scenarios (tools/bench --help for options)
bench: $(STAMP)
	$(BIN)/python tools/bench $(BENCH_ARGS)

# tools/bench compare: matplotlib for its charts (the `bench` extra) and Debian's rsyslog, the
# peer it runs (with a config of its own; the system's rsyslog service is not used).
BENCH_STAMP := $(VENV)/.bench-stamp
$(BENCH_STAMP): $(STAMP) pyproject.toml
	$(BIN)/pip install --quiet -e '.[test,bench]'
	touch $(BENCH_STAMP)

## bench-deps: what `tools/bench compare` needs: matplotlib in the venv, Debian's rsyslog
bench-deps: $(BENCH_STAMP)
	@command -v rsyslogd >/dev/null || [ -x /usr/sbin/rsyslogd ] || { \
		if [ "$$(id -u)" != 0 ]; then \
			echo "bench compare needs Debian's rsyslog package: sudo apt-get install rsyslog" >&2; \
			exit 1; \
		fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rsyslog \
			>/dev/null; }

## bench-compare: logd against rsyslog, every scenario (~9 minutes), into bench-results/compare
## (more options: make bench-compare COMPARE_ARGS="--duration 60 --scenarios basic")
bench-compare: bench-deps
	$(BIN)/python tools/bench compare --out bench-results/compare $(COMPARE_ARGS)

check-config: $(STAMP)
	for f in etc/*.toml; do $(BIN)/logd --check-config $$f || exit 2; done

## install: logd in /opt/logd, logd/logctl in $(PREFIX)/bin, the systemd units (logd, and
## logd@ for several instances), and /etc/logd/logd.toml (kept if present); then:
## systemctl enable --now logd
install:
	id logd >/dev/null 2>&1 || useradd --system --home-dir /var/lib/logd \
		--shell /usr/sbin/nologin logd
	$(PYTHON) -m venv /opt/logd
	/opt/logd/bin/pip install --quiet .
	ln -sf /opt/logd/bin/logd $(PREFIX)/bin/logd
	ln -sf /opt/logd/bin/logctl $(PREFIX)/bin/logctl
	install -d -m 0755 /etc/logd
	test -e /etc/logd/logd.toml || install -m 0640 -g logd etc/logd.toml /etc/logd/logd.toml
	install -D -m 0644 README.md $(PREFIX)/share/doc/logd/README.md
	install -D -m 0644 systemd/logd.service /etc/systemd/system/logd.service
	install -D -m 0644 systemd/logd@.service /etc/systemd/system/logd@.service
	-systemctl daemon-reload

clean:
	rm -rf var .pytest_cache bench-results
