"""LCClient / LCReporter against a tiny local HTTP fake: retries, timeouts, 4xx, counters."""

from __future__ import annotations

import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np
import pytest

from sedna.service.client import LCClient, LCReporter

OK = (200, {"Status": 200, "Message": "OK"})


class FakeLC:
    """Answers POSTs from a queue of ``(status, body)`` (then 200 OK); records every request."""

    def __init__(self) -> None:
        self.answers: list[tuple[int, Any]] = []
        self.requests: list[tuple[str, dict[str, Any]]] = []
        self.delay = 0.0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = json.loads(self.rfile.read(length))
                fake.requests.append((self.path, body))
                if fake.delay:
                    time.sleep(fake.delay)
                status, answer = fake.answers.pop(0) if fake.answers else OK
                data = json.dumps(answer).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except OSError:
                    pass  # the client gave up (timeout test)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def lc() -> Iterator[FakeLC]:
    fake = FakeLC()
    yield fake
    fake.close()


@pytest.fixture(autouse=True)
def fast_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LCClient, "retry_interval", 0.01)
    LCClient.reset_log_state()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


BODY = {
    "name": "edgeworker-abc",
    "namespace": "default",
    "ownerName": "helmet",
    "ownerKind": "jointinferenceservice",
    "kind": "inference",
    "status": "running",
    "results": [],
}


def test_send_posts_the_upstream_route_and_body(lc: FakeLC) -> None:
    answer = LCClient.send(lc.url + "/", "edgeworker-abc", BODY)
    assert answer == {"Status": 200, "Message": "OK"}
    [(path, body)] = lc.requests
    assert path == "/sedna/workers/edgeworker-abc/info"
    assert body == BODY


def test_numpy_values_are_encoded(lc: FakeLC) -> None:
    message = {**BODY, "results": [{"metrics": {"acc": np.float32(0.5), "v": np.arange(2)}}]}
    assert LCClient.send(lc.url, "edgeworker-abc", message) is not None
    assert lc.requests[0][1]["results"][0]["metrics"] == {"acc": 0.5, "v": [0, 1]}


def test_5xx_is_retried_then_succeeds(lc: FakeLC) -> None:
    lc.answers = [(503, {"Status": 503, "Message": "retry"}), OK]
    assert LCClient.send(lc.url, "w", BODY) == OK[1]
    assert len(lc.requests) == 2


def test_5xx_gives_up_after_bounded_retries(lc: FakeLC) -> None:
    lc.answers = [(500, {"Message": "boom"})] * 5
    assert LCClient.send(lc.url, "w", BODY, retries=3) is None
    assert len(lc.requests) == 3


def test_4xx_is_not_retried_and_logged_once(lc: FakeLC, caplog: pytest.LogCaptureFixture) -> None:
    bad = {"Status": 400, "Message": "name: 'x' does not match the worker name in the path"}
    lc.answers = [(400, bad), (400, bad), (400, bad)]
    with caplog.at_level(logging.DEBUG, logger="sedna.service.client"):
        for _ in range(3):
            assert LCClient.send(lc.url, "w", {**BODY, "name": "x"}) is None
    assert len(lc.requests) == 3  # one attempt per send
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "does not match the worker name" in warnings[0].getMessage()
    assert "HTTP 400" in warnings[0].getMessage()
    # After a success the next problem is reported at WARNING again.
    caplog.clear()
    assert LCClient.send(lc.url, "w", BODY) is not None
    lc.answers = [(400, bad)]
    with caplog.at_level(logging.WARNING, logger="sedna.service.client"):
        LCClient.send(lc.url, "w", BODY)
    assert len(caplog.records) == 1


def test_unreachable_lc_returns_none_quickly(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    start = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="sedna.service.client"):
        assert LCClient.send(url, "w", BODY, timeout=1.0) is None
        assert LCClient.send(url, "w", BODY, timeout=1.0) is None
    assert time.monotonic() - start < 3
    assert len(caplog.records) == 1
    assert "unreachable" in caplog.records[0].getMessage()
    assert "3 attempt" in caplog.records[0].getMessage()


def test_slow_lc_times_out(lc: FakeLC) -> None:
    lc.delay = 1.0
    # Had the client waited for the (slow but successful) answer, send would return it.
    assert LCClient.send(lc.url, "w", BODY, timeout=0.2, retries=2) is None
    assert len(lc.requests) == 2


def test_bad_url_and_unserializable_body_do_not_raise() -> None:
    assert LCClient.send("not-a-url", "w", BODY) is None
    assert LCClient.send("http://127.0.0.1:1", "w", {"x": float("nan")}, retries=1) is None
    assert LCClient.send("http://127.0.0.1:1", "w", {"x": {1, 2}}, retries=1) is None


def test_reporter_sends_the_message_as_given_without_adding_a_status(lc: FakeLC) -> None:
    reporter = LCReporter(lc.url, {k: v for k, v in BODY.items() if k != "status"})
    reporter.update_for_edge_inference()
    reporter.report()
    assert "status" not in lc.requests[0][1]  # as upstream's reporter; the LC accepts it


def test_reporter_sends_counters_only_after_inferences(lc: FakeLC) -> None:
    reporter = LCReporter(lc.url, BODY, period_interval=30)
    assert reporter.daemon
    assert reporter.report() is None
    assert not lc.requests
    for _ in range(3):
        reporter.update_for_edge_inference()
    reporter.update_for_collaboration_inference()
    sent = reporter.report()
    assert sent is not None
    [(path, body)] = lc.requests
    assert path == "/sedna/workers/edgeworker-abc/info"
    info = body["ownerInfo"]
    assert info["inferenceNumber"] == 4
    assert info["hardExampleNumber"] == 1
    assert info["uploadCloudRatio"] == pytest.approx(0.25)
    assert time.strptime(info["startTime"], "%Y-%m-%d %H:%M:%S")
    assert time.strptime(info["updateTime"], "%Y-%m-%d %H:%M:%S")
    assert {k: v for k, v in body.items() if k != "ownerInfo"} == BODY
    assert body["status"] == "running"
    assert "ownerInfo" not in reporter.message  # the template stays clean
    assert reporter.report() is None  # no new inferences in this period
    reporter.update_for_edge_inference()
    reporter.report()
    assert lc.requests[-1][1]["ownerInfo"]["inferenceNumber"] == 5  # cumulative


def test_reporter_thread_reports_periodically_and_stops(lc: FakeLC) -> None:
    reporter = LCReporter(lc.url, BODY, period_interval=0.05)
    reporter.update_for_edge_inference()
    reporter.start()
    deadline = time.monotonic() + 5
    while not lc.requests and time.monotonic() < deadline:
        time.sleep(0.01)
    reporter.stop(timeout=2)
    assert not reporter.is_alive()
    assert len(lc.requests) == 1


def test_reporter_survives_an_unreachable_lc() -> None:
    reporter = LCReporter(f"http://127.0.0.1:{free_port()}", BODY, period_interval=0.02)
    reporter.update_for_edge_inference()
    reporter.start()
    time.sleep(0.2)
    reporter.update_for_collaboration_inference()
    time.sleep(0.2)
    assert reporter.is_alive()
    reporter.stop(timeout=5)
    assert not reporter.is_alive()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [({"period_interval": 0}, "period_interval"), ({"message": {"kind": "inference"}}, "name")],
)
def test_reporter_rejects_bad_arguments(kwargs: dict[str, Any], fragment: str) -> None:
    args: dict[str, Any] = {"lc_server": "http://lc", "message": BODY, **kwargs}
    with pytest.raises(ValueError, match=fragment):
        LCReporter(**args)
