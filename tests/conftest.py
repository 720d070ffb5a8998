"""Fixtures every test folder shares: real servers, and the hypothesis profiles.

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

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from testkit.clickhouse import ClickHouseDatabase, ClickHouseServer
from testkit.kafka import KafkaBroker, KafkaTopic
from testkit.postgres import PostgresDatabase, PostgresServer

# deadline=None: the machine is shared, and a slow example under load is not a bug.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("explore", max_examples=1000, deadline=None, print_blob=True)
settings.load_profile("ci")


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
