"""Fixtures every test folder shares: the event loop, real servers, the hypothesis profiles.

Event loop: async tests run on uvloop, as logd does. An exception that reaches a test's loop
unhandled (a callback that raised, a task whose failure nobody retrieved) fails the test,
even when the test itself passed: it would be a log line nobody reads in production.
Warnings are errors (pyproject.toml).

Servers: one ClickHouse, one PostgreSQL and one Kafka broker serve the whole run. Each starts
when a test first asks for it and stops when the run ends; each test gets a database (or a
topic) of its own on it, so tests never see each other's rows. A test that stops, freezes or
restarts its server asks for a private_* one instead: started for it alone, so an outage
cannot reach another test.

Hypothesis: "ci" (the default) is derandomized and keeps no example database: every run
tries the same inputs, so a red build fails again on the next run and on a laptop, and no
.hypothesis/ directory appears in the checkout. It cannot find anything new, though; that is
what "explore" is for: `pytest --hypothesis-profile=explore tests/unit -k props` draws new
inputs each run, ten times as many, and remembers failures in .hypothesis/. A failure found
that way becomes an ordinary test with the minimal example written out. The budgets live in
testkit.props.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvloop
from hypothesis import settings
from pytest_asyncio import is_async_test

from testkit.clickhouse import ClickHouseDatabase, ClickHouseServer
from testkit.kafka import KafkaBroker, KafkaTopic
from testkit.postgres import PostgresDatabase, PostgresServer

# deadline=None: the machine is shared, and a slow example under load is not a bug.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")


# -- the event loop --

# What reached the exception handler of the loop of the test that runs now.
_LOOP_ERRORS: list[dict[str, Any]] = []


def _on_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    _LOOP_ERRORS.append(context)
    loop.default_exception_handler(context)  # logged as well: the traceback shows in reports


def _new_loop() -> asyncio.AbstractEventLoop:
    loop = uvloop.new_event_loop()
    loop.set_exception_handler(_on_loop_error)
    return loop


def pytest_asyncio_loop_factories(config: pytest.Config,
                                  item: pytest.Item) -> dict[str, Any]:
    """pytest-asyncio makes every test's loop here."""
    return {"uvloop": _new_loop}


@pytest.fixture(autouse=True)
def fail_on_loop_errors(request: pytest.FixtureRequest) -> Iterator[None]:
    """Fails an async test whose loop saw an exception nobody handled.

    Autouse fixtures are set up first and torn down last: this check runs after the test's
    loop has been closed, with what its shutdown found (tasks that failed during
    cancellation) included."""
    if not is_async_test(request.node):
        yield
        return
    _LOOP_ERRORS.clear()
    yield
    # A task that failed with nobody awaiting it reports itself when it is collected.
    gc.collect()
    errors = list(_LOOP_ERRORS)
    _LOOP_ERRORS.clear()
    if errors:
        pytest.fail("exceptions reached the event loop unhandled:\n" + "\n".join(
            f"- {e.get('message')}: {e.get('exception')!r}" for e in errors), pytrace=False)


# -- ClickHouse --

@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """The run's ClickHouse. Tests take a database on it through `clickhouse`."""
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    server.start()
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def clickhouse(clickhouse_server: ClickHouseServer) -> Iterator[ClickHouseDatabase]:
    """A database name of the test's own on the shared ClickHouse (logd creates it)."""
    db = ClickHouseDatabase(clickhouse_server)
    yield db
    db.drop()


@pytest.fixture
def private_clickhouse(tmp_path: Path) -> Iterator[ClickHouseDatabase]:
    """A ClickHouse server for this test alone, for a test that stops, freezes or restarts
    it (`private_clickhouse.server`); its database is `logs_db`."""
    server = ClickHouseServer(tmp_path / "clickhouse")
    server.start()
    try:
        yield ClickHouseDatabase(server, "logs_db")
    finally:
        server.cleanup()


# -- PostgreSQL --

@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The run's PostgreSQL. Tests take a database on it through `postgres`."""
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def postgres(postgres_server: PostgresServer) -> Iterator[PostgresDatabase]:
    """An empty database of the test's own on the shared PostgreSQL."""
    db = postgres_server.create_database()
    yield db
    db.drop()


@pytest.fixture
def private_postgres() -> Iterator[PostgresDatabase]:
    """A PostgreSQL server for this test alone, for a test that stops or restarts it
    (`private_postgres.server`); its database is `logd`."""
    server = PostgresServer()
    try:
        server.start()
        yield PostgresDatabase(server, server.database)
    finally:
        server.cleanup()


# -- Kafka --

@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[KafkaBroker]:
    """The run's broker: tansu, or the Kafka at $LOGD_TEST_KAFKA."""
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def kafka(kafka_broker: KafkaBroker) -> KafkaTopic:
    """A topic of the test's own on the shared broker (logd creates it)."""
    return kafka_broker.new_topic()


@pytest.fixture
def private_kafka() -> Iterator[KafkaTopic]:
    """A broker for this test alone, for a test that pauses it (`private_kafka.broker`).
    With $LOGD_TEST_KAFKA it is that Kafka, which cannot be paused (`broker.external`)."""
    broker = KafkaBroker()
    try:
        broker.start()
        yield broker.new_topic()
    finally:
        broker.stop()
