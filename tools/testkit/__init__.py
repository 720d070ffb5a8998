"""What the tests and tools/bench share to run logd against real things.

    testkit.harness          logd as a real process (LogdProcess), loadgen and logctl runs
    testkit.inprocess        logd in the caller's event loop (run_daemon), for component tests
    testkit.clickhouse       a ClickHouse server in a temp dir, and a database per test
    testkit.postgres         a PostgreSQL server in a temp dir, and a database per test
    testkit.kafka            a Kafka-protocol broker (tansu), or the Kafka at $LOGD_TEST_KAFKA
    testkit.analyzer_client  an analyzer in a thread, with knobs for faults
    testkit.wire             frames of the emitter port, random payloads
    testkit.configs          config texts on port 0 with state in a temp dir
    testkit.props            budgets of the property tests (imports hypothesis)

tools/ is on sys.path when a tools/ script runs, and pytest adds it (pyproject.toml's
`pythonpath`), so `import testkit` works from both without editing sys.path. Standard
library only, except where a module says otherwise (testkit.kafka's consumer, props).
"""
