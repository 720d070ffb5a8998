"""loadgenkit.http_sender.HttpSender on a fake clock and a fake server: a POST goes out when
its last record is due; a slow answer is caught up on, not made up for by a lower rate; a 503
is resent after its Retry-After, and nothing is lost or sent twice."""

from __future__ import annotations

import json
from typing import Any

import pytest

from loadgenkit.config import Config
from loadgenkit.http_sender import HttpSender
from loadgenkit.payloads import make_filler
from loadgenkit.schedule import make_schedule
from loadgenkit.shared import ST_MAXLAG_US, ST_RETRIES, ST_SENT, Shared

from .support import FakeClock, config, shared_state


class Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.reason = {202: "Accepted", 503: "Service Unavailable"}.get(status, "")
        self._body = body
        self._headers = headers

    def read(self) -> bytes:
        return self._body

    def getheader(self, name: str) -> str | None:
        return self._headers.get(name)


class Server:
    """http.client.HTTPConnection's part a sender uses. Takes every batch (202) unless
    `answers` says otherwise for the n-th POST (1-based): ("slow", seconds) or ("503",
    Retry-After)."""

    def __init__(self, clock: FakeClock, answers: dict[int, tuple[str, float]] | None = None
                 ) -> None:
        self.clock = clock
        self.answers = answers or {}
        self.posts: list[tuple[float, list[dict[str, Any]]]] = []
        self.taken: list[dict[str, Any]] = []
        self.sock: object | None = object()
        self._pending: list[dict[str, Any]] = []

    def request(self, method: str, path: str, body: bytes, headers: dict[str, str]) -> None:
        assert (method, headers["Content-Type"]) == ("POST", "application/json")
        self._pending = json.loads(body)
        self.posts.append((self.clock.t, self._pending))

    def getresponse(self) -> Answer:
        kind, value = self.answers.get(len(self.posts), ("ok", 0.0))
        if kind == "503":
            return Answer(503, b'{"error": "busy"}', {"Retry-After": f"{value:g}"})
        if kind == "slow":
            self.clock.t += value
        self.taken.extend(self._pending)
        return Answer(202, json.dumps({"accepted": len(self._pending)}).encode(), {})

    def close(self) -> None:
        self.sock = None


def run_sender(cfg: Config, shared: Shared, clock: FakeClock,
               answers: dict[int, tuple[str, float]] | None = None) -> Server:
    server = Server(clock, answers)
    sender = HttpSender(cfg, shared, 0, 0, server,  # type: ignore[arg-type]
                        make_filler(cfg.seed, cfg.size))
    sender.monotonic = clock.monotonic  # type: ignore[method-assign]
    sender.sleep = clock.sleep  # type: ignore[method-assign]
    sender.send_loop()
    return server


def seqs(records: list[dict[str, Any]]) -> list[int]:
    return [r["metadata"]["seq"] for r in records]


def test_a_post_goes_out_when_its_last_record_is_due() -> None:
    cfg = config("--target", "http://127.0.0.1:9/v1/logs", "--rate", "2000", "--batch",
                 "100", "--count", "2000")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    sched = make_schedule(cfg)
    assert sched is not None
    server = run_sender(cfg, shared, clock)
    assert [len(batch) for _, batch in server.posts] == [100] * 20
    for when, batch in server.posts:
        last_due = start + sched.time_of(batch[-1]["metadata"]["seq"] + 1)
        assert when >= last_due - 1e-5, "a POST went out before its last record was due"
        assert when - last_due <= 1e-3
    assert seqs(server.taken) == list(range(2000))
    assert shared.status[ST_SENT] == 2000


def test_a_slow_answer_is_caught_up_on_back_to_back() -> None:
    cfg = config("--target", "http://127.0.0.1:9/v1/logs", "--rate", "2000", "--batch",
                 "100", "--count", "4000")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    start = shared.start.value
    server = run_sender(cfg, shared, clock, answers={5: ("slow", 1.0)})
    times = [when - start for when, _ in server.posts]
    # The 5th answer took 1 s; 20 batches fell due meanwhile: they go out at once, one after
    # the other, instead of the schedule moving 1 s later.
    assert times[5:25] == [times[5]] * 20
    assert times[5] == pytest.approx(times[4] + 1.0)
    assert shared.status[ST_MAXLAG_US] / 1e6 == pytest.approx(0.95, abs=0.01)
    assert times[-1] == pytest.approx(2.0, abs=1e-3), "the run ends on schedule"
    assert seqs(server.taken) == list(range(4000))


def test_a_503_is_resent_after_retry_after_and_nothing_is_lost() -> None:
    cfg = config("--target", "http://127.0.0.1:9/v1/logs", "--rate", "1000", "--batch",
                 "100", "--count", "1000")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    server = run_sender(cfg, shared, clock, answers={3: ("503", 0.5)})
    third, again = server.posts[2], server.posts[3]
    assert seqs(third[1]) == seqs(again[1]), "the refused batch itself is sent again"
    assert again[0] - third[0] == pytest.approx(0.5, abs=1e-3)
    assert seqs(server.taken) == list(range(1000)), "every record taken once"
    assert shared.status[ST_RETRIES] == 1


def test_the_last_post_of_a_duration_run_carries_what_is_due_by_its_end() -> None:
    cfg = config("--target", "http://127.0.0.1:9/v1/logs", "--rate", "1000", "--batch",
                 "300", "--duration", "1")
    clock = FakeClock()
    shared = shared_state(cfg, clock)
    server = run_sender(cfg, shared, clock)
    assert [len(batch) for _, batch in server.posts] == [300, 300, 300, 100]
    assert seqs(server.taken) == list(range(1000))
