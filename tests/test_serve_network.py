"""nerft serve over real sockets on loopback: connections that never finish their headers are closed and cannot
lock served clients out, the connection limit answers 503 in /metrics, the Host check (DNS rebinding), and the
flags checked before any model loads."""

import concurrent.futures
import contextlib
import socket
import threading
import time

import httpx
import pytest
import uvicorn
from helpers_models import shared_run_dir
from test_serve import FakePredictor

from nerft.cli import main
from nerft.serve import ServeSettings, create_app
from nerft.serve.cli import uvicorn_options
from nerft.serve.connections import ConnectionGuard


@contextlib.contextmanager
def real_server(settings: ServeSettings, predictor=None):
    """The app served by uvicorn as ``nerft serve`` runs it, in a thread, on a free loopback port."""
    guard = ConnectionGuard(settings.header_timeout, settings.max_connections, settings.min_body_rate)
    app = create_app(predictor or FakePredictor(), settings, connections=guard)
    # uvicorn's own backlog: with Python's default (128) a busy machine drops handshakes past it, the client
    # retries them and the server accepts those connections out of the order they were made
    sock = socket.create_server(("127.0.0.1", 0), backlog=2048)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", **uvicorn_options(settings, guard)))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", guard
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()


def idle_sockets(url: str, n: int) -> list[socket.socket]:
    """``n`` connections: a third send nothing, the rest the start of a request line and stop."""
    port = int(url.rsplit(":", 1)[1])
    out = []
    for k in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        if k % 3:
            s.sendall(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        out.append(s)
    return out


def closed_by_server(s: socket.socket, wait: float) -> bool:
    s.settimeout(wait)
    try:
        return s.recv(1) == b""
    except ConnectionResetError:  # closed before the server read what the client sent: the kernel resets it
        return True
    except TimeoutError:
        return False


def metric(url: str, series: str) -> float:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(url + "/metrics").text
    return sum(s.value for f in text_string_to_metric_families(text) for s in f.samples
               if s.name == series.split("{")[0] and (("{" not in series) or
                                                      series.split("{")[1].rstrip("}") in
                                                      ",".join(f'{k}="{v}"' for k, v in s.labels.items())))


def test_the_uvicorn_internals_the_guard_subclasses_are_where_it_expects():
    """``ConnectionGuard.protocol_class`` subclasses uvicorn's private ``H11Protocol`` (pyproject pins uvicorn's
    range for it): the hooks it overrides and the attributes it reads must still be there. When a uvicorn release
    moves them, this fails by name before the network tests fail by symptom."""
    import inspect
    import re

    from uvicorn.protocols.http import h11_impl

    for hook in ("connection_made", "connection_lost", "data_received", "on_response_complete"):
        assert callable(getattr(h11_impl.H11Protocol, hook, None)), hook
    protocol, cycle = inspect.getsource(h11_impl.H11Protocol), inspect.getsource(h11_impl.RequestResponseCycle)
    for attribute in ("cycle", "headers", "transport", "loop"):
        assert re.search(rf"self\.{attribute}\b\s*(:[^=\n]*)?=[^=]", protocol), attribute
    assert re.search(r"self\.more_body\b\s*(:[^=\n]*)?=[^=]", cycle)
    assert ConnectionGuard(1.0).protocol_class().__mro__[1] is h11_impl.H11Protocol


def test_idle_connections_cannot_lock_clients_out():
    settings = ServeSettings(header_timeout=8.0, queue_size=16, max_batch=4)  # the old limit: 16 + 4 + 16 = 36
    with real_server(settings) as (url, guard):
        idle = idle_sockets(url, 300)
        start = time.monotonic()

        def ask(k: int) -> int:
            with httpx.Client(timeout=10) as c:
                path = "/health" if k % 2 else "/v1/ner"
                r = c.get(url + path) if k % 2 else c.post(url + path, json={"texts": [f"张三在北京{k}"]})
                return r.status_code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            codes = list(pool.map(ask, range(40)))
        assert codes == [200] * 40  # every served client answered while 300 idle connections were open
        assert guard.timed_out == 0 and guard.open >= 300  # ... while all the idle ones were still open
        assert all(closed_by_server(s, 8.0) for s in idle)  # then each closed by the server, none left open
        assert 7.0 <= time.monotonic() - start < 8.0 + 8.0  # not before the timeout (less the opening time)
        for s in idle:
            s.close()
        assert metric(url, "nerft_connections_timed_out_total") == 300
        assert guard.open <= 2


def test_a_full_server_closes_the_longest_waiting_connection_to_let_a_new_client_in():
    """At --max-connections, a new connection closes the one that has waited longest without a request for the
    app (an idle one, one stuck in its headers), oldest first: 1,000 idle sockets cannot lock clients out."""
    with real_server(ServeSettings(max_connections=50, header_timeout=60)) as (url, guard):
        idle = idle_sockets(url, 200)  # four times the limit, each holding its slot as long as it may
        time.sleep(0.3)
        assert guard.open <= 50
        oldest_closed = [closed_by_server(s, 0.5) for s in idle[:150]]
        assert all(oldest_closed) and not any(closed_by_server(s, 0.2) for s in idle[-40:])  # the newest kept
        codes = [httpx.get(url + path).status_code for path in ("/health", "/v1/labels", "/metrics")]
        assert codes == [200, 200, 200]
        assert metric(url, 'nerft_connections_closed_total{reason="for_room"}') >= 150
        for s in idle:
            s.close()


def test_a_served_keep_alive_connection_outlasts_fresh_ones_when_the_server_is_full():
    """A client's connection between two requests is closed for room only after every connection that has never
    had an answer: a flood of fresh connections does not cut legitimate keep-alive clients off (under serve_load's
    slow-body attack 36 of 132 legitimate requests lost their connection so)."""
    with real_server(ServeSettings(max_connections=10, header_timeout=60)) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        client = socket.create_connection(("127.0.0.1", port))
        request = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"

        def answered() -> bool:
            client.sendall(request)
            client.settimeout(5)
            response = b""
            while not response.endswith(b"}"):  # the head and the JSON body may come in two reads
                part = client.recv(4096)
                if not part:
                    return False
                response += part
            return response.startswith(b"HTTP/1.1 200")

        assert answered()
        idle = idle_sockets(url, 40)  # four times the limit, all newer than the client's connection
        time.sleep(0.3)
        assert guard.open <= 10 and sum(closed_by_server(s, 0.5) for s in idle) >= 30
        assert answered()  # the same connection, still open
        client.close()
        for s in idle:
            s.close()


def test_a_slow_body_is_closed_like_a_slow_header():
    """A request that declares a body and sends none (or trickles it) is closed after header_timeout + its
    length / --min-body-rate, not kept until --timeout."""
    with real_server(ServeSettings(header_timeout=1.0, min_body_rate=1000, timeout=60)) as (url, guard):
        port = int(url.rsplit(":", 1)[1])
        s = socket.create_connection(("127.0.0.1", port))
        s.sendall(b"POST /v1/ner HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"texts\"")
        start = time.monotonic()
        assert closed_by_server(s, 5.0) and time.monotonic() - start < 3.0  # 1 s + 100 / 1000 s, not 60
        s.close()
        assert guard.slow_bodies == 1 and metric(url, 'nerft_connections_closed_total{reason="slow_body"}') == 1
        r = httpx.post(url + "/v1/ner", json={"texts": ["张三在北京"]})  # a body that arrives is answered
        assert r.status_code == 200


def test_a_request_beyond_the_connection_limit_gets_503_in_metrics_but_health_answers():
    """Only when every open connection's request is with the app does a new request get 503 (counted in
    /metrics); /health is answered even then."""
    predictor = FakePredictor(slow=2.0)
    with real_server(ServeSettings(max_connections=3, header_timeout=30, max_batch=1), predictor) as (url, _):
        def slow(k: int) -> int:
            return httpx.post(url + "/v1/ner", json={"texts": [f"慢{k}"]}, timeout=30).status_code

        with concurrent.futures.ThreadPoolExecutor(3) as pool:
            busy = [pool.submit(slow, k) for k in range(3)]
            time.sleep(0.5)  # the three requests are with the app
            r = httpx.get(url + "/v1/labels")
            assert r.status_code == 503 and r.headers["retry-after"] == "1" and "--max-connections" in r.text
            assert httpx.get(url + "/health").status_code == 200
            assert [f.result() for f in busy] == [200, 200, 200]
        assert metric(url, 'nerft_http_requests_total{code="503"}') == 1


def test_accept_errors_are_logged_once_per_interval_with_their_count(caplog):
    """asyncio's 'socket.accept() out of system resource' (EMFILE) used to log a traceback per refused client."""
    import asyncio
    import logging

    guard = ConnectionGuard(10.0)
    loop = asyncio.new_event_loop()
    try:
        guard.watch_accept_errors(loop, interval=60.0)
        error = OSError(24, "Too many open files")
        with caplog.at_level(logging.ERROR, logger="nerft.serve"):
            for _ in range(500):
                loop.call_exception_handler({"message": "socket.accept() out of system resource",
                                             "exception": error})
        assert guard.accept_errors == 500
        lines = [r for r in caplog.records if "accept() failed" in r.getMessage()]
        assert len(lines) == 1 and "Too many open files" in lines[0].getMessage() and not lines[0].exc_info
    finally:
        loop.close()


def test_the_connection_limit_stays_below_the_descriptor_limit():
    import resource

    from nerft.serve.connections import connection_limit

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    limit, why = connection_limit(soft * 2)
    assert limit == soft - 64 and "ulimit -n" in why
    assert connection_limit(10) == (10, None)


def test_a_loopback_server_without_a_key_answers_only_loopback_host_names():
    with real_server(ServeSettings(allowed_hosts=["loopback", "127.0.0.1"])) as (url, _):
        port = url.rsplit(":", 1)[1]
        evil = httpx.get(url + "/v1/labels", headers={"Host": f"evil.example:{port}"})
        assert evil.status_code == 421 and "--allowed-hosts" in evil.text
        for host in (f"localhost:{port}", f"127.0.0.1:{port}", f"[::1]:{port}", "127.1.2.3"):
            assert httpx.get(url + "/v1/labels", headers={"Host": host}).status_code == 200, host
    with real_server(ServeSettings(allowed_hosts=["ner.example.org"])) as (url, _):
        assert httpx.get(url + "/health", headers={"Host": "ner.example.org"}).status_code == 200
        assert httpx.get(url + "/health", headers={"Host": "localhost"}).status_code == 421


@pytest.fixture
def served(monkeypatch):
    """nerft serve with the model loader and uvicorn replaced: records what would have been served."""
    import nerft.inference.loading

    started: dict = {}
    monkeypatch.delenv("NERFT_API_KEY", raising=False)
    monkeypatch.setattr(nerft.inference.loading, "open_predictor",
                        lambda load, opts: started.setdefault("p", FakePredictor()))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    return started


def test_serve_defaults_to_loopback_host_names_without_a_key(served, monkeypatch, tiny_tokenizer):
    run = str(shared_run_dir(tiny_tokenizer))
    assert main(["serve", "--model", run, "--port", "18391"]) == 0
    assert served["app"].state.settings.allowed_hosts == ["loopback", "127.0.0.1"]
    assert main(["serve", "--model", run, "--port", "18391", "--allowed-hosts", "*"]) == 0
    assert served["app"].state.settings.allowed_hosts == ["*"]
    monkeypatch.setenv("NERFT_API_KEY", "k")
    assert main(["serve", "--model", run, "--port", "18391"]) == 0
    assert served["app"].state.settings.allowed_hosts is None  # a key: a rebinding page cannot send it


@pytest.mark.parametrize("flags, words", [
    (["--port", "99999"], "--port 99999 is not a TCP port"),
    (["--port", "-1"], "--port -1 is not a TCP port"),
    (["--timeout", "nan"], "timeout must be positive"),
    (["--header-timeout", "inf"], "header_timeout must be positive"),
    (["--max-connections", "0"], "max_connections must be positive"),
])
def test_bad_serve_flags_stop_before_the_model_loads(served, capsys, flags, words):
    assert main(["serve", "--model", "/no/such/run", *flags]) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and "\n" not in err and err.startswith("nerft serve: error:")
    assert served == {}


def test_a_port_in_use_stops_before_the_model_loads(served, capsys):
    with socket.create_server(("127.0.0.1", 0)) as busy:
        port = busy.getsockname()[1]
        assert main(["serve", "--model", "/no/such/run", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert f"cannot listen on 127.0.0.1:{port}" in err and "in use" in err and "\n" not in err
    assert served == {}
