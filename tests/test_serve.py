"""nerft serve, in-process (httpx's ASGI transport, Starlette's TestClient, or raw ASGI calls): endpoints, request
checks, micro-batching, isolation of a bad request, deadlines, abandoned requests, body limit, API key, metrics,
shutdown, the bind check of the CLI, and one run on the real tiny predictor."""

import asyncio
import contextlib
import json
import re
import threading
import time

import httpx
import pytest
from fastapi import APIRouter, Request
from fastapi.testclient import TestClient
from helpers_models import shared_run_dir

from nerft.cli import main
from nerft.inference.base import Prediction, PredictStats
from nerft.inference.loading import load_predictor
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import Entity, NerftError
from nerft.serve import Batcher, ServerStats, ServeSettings, create_app
from nerft.serve.openai_api import openai_router

SURROGATE = "\ud800王伟"  # a lone surrogate: valid JSON ("\ud800"), not valid Unicode text


class FakePredictor:
    """Finds every occurrence of 北京 (LOC) and 张三 (PER) and records each call. ``delay``: seconds per call;
    ``slow``: seconds more for a call holding a text with 慢. A text with "boom" makes the call raise NerftError
    (bad input), one with "crash" a RuntimeError (a server fault); each text is encoded as a tokenizer would."""

    labels = ccfbdci_labels()
    name = "fake"

    def __init__(self, delay: float = 0.0, slow: float = 0.0):
        self.calls: list[list[str]] = []
        self.delay, self.slow = delay, slow
        self.lock = threading.Lock()
        self.stats = PredictStats()

    @property
    def batches(self) -> list[int]:
        return [len(c) for c in self.calls]

    @property
    def seen(self) -> list[str]:
        return [t for c in self.calls for t in c]

    def predict(self, texts, labels=None):
        with self.lock:
            self.calls.append(list(texts))
        time.sleep(self.delay + (self.slow if any("慢" in t for t in texts) else 0.0))
        for t in texts:
            t.encode("utf-8")
        if any("boom" in t for t in texts):
            raise NerftError("boom")
        if any("crash" in t for t in texts):
            raise RuntimeError("crash")
        self.stats.texts += len(texts)
        out = []
        for t in texts:
            ents = [Entity(i, i + 2, lab, w, 0.9) for w, lab in (("北京", "LOC"), ("张三", "PER"))
                    for i in range(len(t)) if t.startswith(w, i) and (labels is None or lab in labels)]
            out.append(sorted(ents))
        return out

    def predict_detailed(self, texts, labels=None):
        return [Prediction(ents) for ents in self.predict(texts, labels)]


def post_json(client, payload, path: str = "/v1/ner", **kwargs):
    """POST with the JSON written ASCII-only, so that a lone surrogate travels as its escape (as any client's)."""
    headers = {"content-type": "application/json", **kwargs.pop("headers", {})}
    return client.post(path, content=json.dumps(payload), headers=headers, **kwargs)


@contextlib.asynccontextmanager
async def serving(app):
    """The app with its lifespan running, and an in-process client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test", timeout=30) as client:
            yield client


async def asgi_post(app, chunk: bytes, n_chunks: int, headers=(), gone: asyncio.Event | None = None):
    """POST /v1/ner as raw ASGI: the body arrives as ``n_chunks`` x ``chunk``; after it, the next receive waits
    for ``gone`` (the client disconnecting). Returns (status, response body, chunks the app read)."""
    read, status, body = 0, None, b""

    async def receive():
        nonlocal read
        if read < n_chunks:
            read += 1
            return {"type": "http.request", "body": chunk, "more_body": read < n_chunks}
        await (gone or asyncio.Event()).wait()
        return {"type": "http.disconnect"}

    async def send(message):
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        else:
            body += message.get("body", b"")

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
             "path": "/v1/ner", "raw_path": b"/v1/ner", "root_path": "", "query_string": b"",
             "headers": [(b"content-type", b"application/json"), *headers], "client": ("127.0.0.1", 5000),
             "server": ("test", 80)}
    await app(scope, receive, send)
    return status, body, read


@pytest.fixture
def client():
    with TestClient(create_app(FakePredictor(), ServeSettings(max_texts=3, max_text_chars=20))) as c:
        yield c


def test_endpoints(client):
    assert client.get("/health").json() == {"status": "ok", "model": "fake"}
    labels = client.get("/v1/labels").json()
    assert [lab["code"] for lab in labels["labels"]] == ["LOC", "PER", "GPE", "ORG"]
    r = client.post("/v1/ner", json={"texts": ["张三在北京", "无"]})
    assert r.status_code == 200
    body = r.json()
    assert body["model"] == "fake"
    assert body["results"][0]["entities"] == [
        {"start": 0, "end": 2, "label": "PER", "text": "张三", "score": 0.9},
        {"start": 3, "end": 5, "label": "LOC", "text": "北京", "score": 0.9},
    ]
    assert body["results"][1]["entities"] == []
    only = client.post("/v1/ner", json={"texts": ["张三在北京"], "labels": ["LOC"]}).json()
    assert [e["label"] for e in only["results"][0]["entities"]] == ["LOC"]
    assert client.get("/openapi.json").status_code == 200


def test_health_is_unavailable_until_the_app_runs():
    r = TestClient(create_app(FakePredictor())).get("/health")  # no `with`: the lifespan never started
    assert r.status_code == 503 and r.json()["status"] == "unavailable"


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"texts": []}, 422, "non-empty"),
    ({"texts": ["a", 3]}, 422, "texts[1] must be a string"),
    ({"texts": ["  "]}, 422, "texts[0] is empty"),
    ({"texts": ["a", "b", "c", "d"]}, 413, "too many texts"),
    ({"texts": ["长" * 21]}, 413, "limit is 20"),
    ({"texts": ["a"], "labels": ["NOPE"]}, 422, "unknown label(s) NOPE"),
    ({"texts": ["a"], "labels": []}, 422, "(empty list)"),
    ({"text": "a"}, 422, ""),
    ({"texts": ["ok", SURROGATE]}, 422, "texts[1] is not valid Unicode: a lone surrogate at character 0"),
    ({"texts": "\ud800"}, 422, "list"),  # pydantic echoes the bad input: the response must still be written
    ({"texts": ["a"], "labels": ["\ud800"]}, 422, "unknown label(s) \ud800"),
    ({"texts": ["boom"]}, 400, "boom"),
    ({"texts": ["crash"]}, 500, "prediction failed (RuntimeError)"),
])
def test_errors(client, payload, status, words):
    r = post_json(client, payload)
    assert r.status_code == status
    assert words in str(r.json()["detail"])
    assert client.get("/health").status_code == 200  # the server survives


async def _concurrent(app, n_clients: int) -> list[httpx.Response]:
    async with serving(app) as c:
        return await asyncio.gather(*(c.post("/v1/ner", json={"texts": [f"张三{i}在北京"]})
                                      for i in range(n_clients)))


def test_concurrent_requests_are_micro_batched():
    predictor = FakePredictor(delay=0.05)
    settings = ServeSettings(max_batch=8, max_wait_ms=50)
    app = create_app(predictor, settings)
    responses = asyncio.run(_concurrent(app, 24))
    assert all(r.status_code == 200 for r in responses)
    for i, r in enumerate(responses):  # each client gets its own answer
        ents = r.json()["results"][0]["entities"]
        assert [e["text"] for e in ents] == ["张三", "北京"] and ents[1]["start"] == 3 + len(str(i))
    assert sum(predictor.batches) == 24
    assert max(predictor.batches) > 1 and len(predictor.batches) < 24
    assert all(b <= 8 for b in predictor.batches)


@pytest.mark.parametrize(("poison", "status"), [(SURROGATE, 422), ("boom", 400), ("crash", 500)])
def test_a_poisoned_request_fails_alone(poison, status):
    """15 concurrent requests, one poisoned: it alone fails; the 14 others, batched with it, get their answers."""
    predictor = FakePredictor(delay=0.01)
    app = create_app(predictor, ServeSettings(max_batch=32, max_wait_ms=200))
    texts = [f"张三{i}在北京" for i in range(15)]
    texts[7] = poison

    async def scenario():
        async with serving(app) as c:
            return await asyncio.gather(*(post_json(c, {"texts": [t]}) for t in texts))

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses].count(status) == 1 and responses[7].status_code == status
    assert sum(r.status_code == 200 for r in responses) == 14
    for i, r in enumerate(responses):
        if i != 7:
            assert r.json()["results"][0]["entities"][1]["start"] == 3 + len(str(i))
    if poison == SURROGATE:  # refused before batching: the predictor never sees it
        assert SURROGATE not in predictor.seen and predictor.batches == [14]
    else:  # batched with the others, the call failed, each request was rerun alone
        assert max(predictor.batches) > 1 and poison in predictor.calls[0]
        assert predictor.seen.count(poison) == 2 and app.state.stats.failed_batches == 2


def test_deadline_gives_504_and_expired_requests_are_not_computed():
    predictor = FakePredictor(slow=0.6)
    app = create_app(predictor, ServeSettings(timeout=0.4, max_wait_ms=1))

    async def scenario():
        async with serving(app) as c:
            first = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["慢A"]}))
            await asyncio.sleep(0.05)  # 慢A is being computed (0.6 s); 慢B waits past its deadline in the queue
            second = await c.post("/v1/ner", json={"texts": ["慢B"]})
            late = await first
            after = await c.post("/v1/ner", json={"texts": ["北京"]})  # the server has moved on
            return late, second, after

    late, second, after = asyncio.run(scenario())
    assert late.status_code == 504 and second.status_code == 504
    assert "no answer within 0.4 s" in second.json()["detail"]
    assert after.status_code == 200
    assert predictor.seen == ["慢A", "北京"]  # 慢B expired before its turn: never computed
    assert app.state.stats.skipped_texts == 1


def test_abandoned_requests_are_not_computed():
    """Clients that give up (their call is cancelled) while the worker is busy: their texts are dropped."""
    predictor = FakePredictor(slow=0.4)
    app = create_app(predictor, ServeSettings(max_wait_ms=1))

    async def scenario():
        async with serving(app) as c:
            busy = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["慢A"]}))
            await asyncio.sleep(0.05)
            for name in "BCD":
                with pytest.raises(asyncio.TimeoutError):
                    await asyncio.wait_for(c.post("/v1/ner", json={"texts": [f"慢{name}"] * 8}), 0.05)
            return await busy, await c.post("/v1/ner", json={"texts": ["北京E"]}), await c.get("/metrics")

    busy, after, metrics = asyncio.run(scenario())
    assert busy.status_code == 200 and after.status_code == 200
    assert predictor.seen == ["慢A", "北京E"]
    assert app.state.stats.skipped_texts == 24
    assert _metric(metrics.text, 'nerft_http_requests_total{path="/v1/ner",code="499"}') == 3


def test_predictor_calls_are_bounded_by_texts_and_characters():
    predictor = FakePredictor()
    app = create_app(predictor, ServeSettings(max_batch=3, max_batch_chars=25, max_wait_ms=1))
    with TestClient(app) as c:
        texts = ["北京" + "x" * 8, "北京" + "x" * 8, "北京" + "x" * 8, "北京" + "x" * 40, "北京"]
        r = c.post("/v1/ner", json={"texts": texts})
    assert r.status_code == 200 and all(res["entities"][0]["text"] == "北京" for res in r.json()["results"])
    assert predictor.batches == [2, 1, 1, 1]  # 10 + 10 chars; 10 (+ 42 would pass 25); 42 alone; 2


def test_a_request_abandoned_half_way_stops_at_the_next_call():
    predictor = FakePredictor(slow=0.3)
    app = create_app(predictor, ServeSettings(max_batch=2, max_wait_ms=1))

    async def scenario():
        async with serving(app) as c:
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(c.post("/v1/ner", json={"texts": [f"慢{i}" for i in range(8)]}), 0.1)
            return await c.post("/v1/ner", json={"texts": ["北京"]})

    after = asyncio.run(scenario())
    assert after.status_code == 200
    assert predictor.calls == [["慢0", "慢1"], ["北京"]]  # the call running when the client left, then nothing
    assert app.state.stats.skipped_texts == 6


def test_two_batchers_never_call_the_predictor_at_once():
    """A router may add its own Batcher over the same model (the chat route does): calls still never overlap."""
    predictor = FakePredictor(delay=0.1)
    active, most = 0, 0
    predict = predictor.predict

    def counting_predict(texts, labels=None):
        nonlocal active, most
        active += 1
        most = max(most, active)
        try:
            return predict(texts, labels)
        finally:
            active -= 1

    predictor.predict = counting_predict
    settings = ServeSettings(max_wait_ms=1)

    async def scenario():
        batchers = [Batcher(predictor, settings, ServerStats()) for _ in range(2)]
        for b in batchers:
            await b.start()
        results = await asyncio.gather(*(b.submit([f"北京{i}"], None) for b in batchers for i in range(3)))
        for b in batchers:
            await b.stop()
        return results

    results = asyncio.run(scenario())
    assert [ents[0][0].text for ents in results] == ["北京"] * 6
    assert most == 1 and len(predictor.calls) >= 2


class MeetingPredictor(FakePredictor):
    """A FakePredictor that counts the calls inside it at once; a call on a text with 会 waits there (up to 3 s)
    until a call of another MeetingPredictor holding 会 is inside its own predictor too."""

    prompt = build_prompt(ccfbdci_labels())

    def __init__(self, meeting: threading.Barrier):
        super().__init__(delay=0.05)
        self.meeting, self.inside, self.most, self.met = meeting, 0, 0, 0
        self.count = threading.Lock()

    def predict(self, texts, labels=None):
        with self.count:
            self.inside += 1
            self.most = max(self.most, self.inside)
        try:
            if any("会" in t for t in texts):
                self.meeting.wait()
                self.met += 1
            return super().predict(texts, labels)
        finally:
            with self.count:
                self.inside -= 1


def test_a_lock_per_predictor_apps_over_two_predictors_run_at_once():
    """Two apps over two predictors call them at the same time (no lock shared by every app in the process),
    while in each app /v1/ner and the chat route, two Batchers, never call their one predictor at once."""
    meeting = threading.Barrier(2, timeout=3)
    predictors = [MeetingPredictor(meeting) for _ in range(2)]
    apps = [create_app(p, ServeSettings(max_wait_ms=1), routers=[openai_router()]) for p in predictors]

    async def scenario():
        async with serving(apps[0]) as first, serving(apps[1]) as second:
            calls = []
            for c in (first, second):
                calls.append(c.post("/v1/ner", json={"texts": ["会北京"]}))
                calls += [c.post("/v1/ner", json={"texts": [f"北京{i}"]}) for i in range(3)]
                calls += [c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": f"张三{i}"}]})
                          for i in range(3)]
            return await asyncio.gather(*calls)

    responses = asyncio.run(scenario())
    assert [r.status_code for r in responses] == [200] * 14, [r.text for r in responses if r.status_code != 200]
    assert [p.met for p in predictors] == [1, 1]  # both were inside their predictors at once
    assert [p.most for p in predictors] == [1, 1]  # yet neither predictor was ever entered twice at once
    for p in predictors:  # called by both of its app's Batchers: /v1/ner's texts hold 北京, the chat's 张三
        assert any("北京" in t for t in p.seen) and any("张三" in t for t in p.seen), p.calls


def test_a_client_that_disconnects_is_not_computed():
    """The server's disconnect notice (what uvicorn sends when the socket closes) drops a queued request."""
    predictor = FakePredictor(slow=0.4)
    app = create_app(predictor, ServeSettings(max_wait_ms=1))

    async def scenario():
        async with serving(app) as c:
            busy = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["慢A"]}))
            await asyncio.sleep(0.05)
            gone = asyncio.Event()
            asyncio.get_running_loop().call_later(0.05, gone.set)
            t0 = time.monotonic()
            status, _, _ = await asgi_post(app, json.dumps({"texts": ["北京B"]}).encode(), 1, gone=gone)
            return status, time.monotonic() - t0, await busy

    status, waited, busy = asyncio.run(scenario())
    assert status == 499 and waited < 0.3  # answered as soon as the client left, not after 慢A's batch
    assert busy.status_code == 200 and predictor.seen == ["慢A"]


def test_a_full_queue_answers_503():
    predictor = FakePredictor(slow=0.3)
    app = create_app(predictor, ServeSettings(queue_size=1, max_wait_ms=1))

    async def scenario():
        async with serving(app) as c:
            running = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["慢A"]}))
            await asyncio.sleep(0.05)  # taken by the worker: the queue is empty again
            queued = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["北京B"]}))
            await asyncio.sleep(0.05)
            refused = await c.post("/v1/ner", json={"texts": ["北京C"]})
            return refused, await running, await queued

    refused, running, queued = asyncio.run(scenario())
    assert refused.status_code == 503 and refused.headers["retry-after"] == "1"
    assert running.status_code == 200 and queued.status_code == 200


def test_an_oversized_body_is_refused_before_it_is_read():
    predictor = FakePredictor()
    app = create_app(predictor, ServeSettings(max_body_bytes=1_000_000))
    chunk = b" " * 65536  # 64 KiB; 160 of them make 10 MB

    async def scenario():
        async with serving(app) as c:
            declared = await asgi_post(app, chunk, 160, headers=[(b"content-length", b"10485760")])
            streamed = await asgi_post(app, chunk, 160)  # no Content-Length: counted as it arrives
            just_over = await post_json(c, {"texts": ["北京"], "pad": "x" * 1_000_000})
            just_under = await post_json(c, {"texts": ["北京"], "pad": "x" * 999_000})
            return declared, streamed, just_over, just_under

    declared, streamed, just_over, just_under = asyncio.run(scenario())
    assert declared[0] == 413 and declared[2] == 0  # refused on the header: not one byte read
    assert b"limit is 1000000" in declared[1]
    assert streamed[0] == 413 and streamed[2] == 16  # stopped at the chunk that passed 1 MB, not at 160
    assert just_over.status_code == 413 and just_under.status_code == 200
    assert predictor.seen == ["北京"]


def test_a_body_that_never_finishes_gets_408():
    app = create_app(FakePredictor(), ServeSettings(timeout=0.2))

    async def scenario():
        async with app.router.lifespan_context(app):
            return await asyncio.wait_for(_trickle(app), 5)

    assert asyncio.run(scenario()) == 408


async def _trickle(app) -> int:
    """A client that sends one byte of body every 0.05 s, forever."""
    status = None

    async def receive():
        await asyncio.sleep(0.05)
        return {"type": "http.request", "body": b" ", "more_body": True}

    async def send(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": "POST", "path": "/v1/ner", "raw_path": b"/v1/ner", "root_path": "",
             "query_string": b"", "headers": [], "scheme": "http", "http_version": "1.1", "asgi": {"version": "3.0"},
             "client": ("127.0.0.1", 5000), "server": ("test", 80)}
    await app(scope, receive, send)
    return status


def test_api_key():
    app = create_app(FakePredictor(), ServeSettings(api_key="s3cret"))
    with TestClient(app) as c:
        payload = {"texts": ["北京"]}
        assert c.post("/v1/ner", json=payload).status_code == 401
        wrong = c.post("/v1/ner", json=payload, headers={"authorization": "Bearer s3cre"})
        assert wrong.status_code == 401 and wrong.headers["www-authenticate"] == "Bearer"
        assert c.post("/v1/ner", json=payload, headers={"authorization": "Basic s3cret"}).status_code == 401
        ok = c.post("/v1/ner", json=payload, headers={"authorization": "Bearer s3cret"})
        assert ok.status_code == 200 and ok.json()["results"][0]["entities"][0]["text"] == "北京"
        for path in ("/v1/labels", "/metrics", "/docs", "/openapi.json"):
            assert c.get(path).status_code == 401, path
            assert c.get(path, headers={"authorization": "Bearer s3cret"}).status_code == 200, path
        assert c.get("/health").status_code == 200  # probes need no key


def test_extra_routers_sit_behind_the_same_guards():
    """create_app(routers=...) is how another API (e.g. OpenAI-style chat) joins: same key, limits, metrics."""
    router = APIRouter()

    @router.post("/v1/echo")
    async def echo(request: Request):
        texts = (await request.json())["texts"]
        found = await request.app.state.batcher.submit(texts, None, request)
        return {"found": [[e.text for e in ents] for ents in found]}

    app = create_app(FakePredictor(), ServeSettings(api_key="k", max_body_bytes=1000), routers=[router])
    auth = {"authorization": "Bearer k"}
    with TestClient(app) as c:
        assert c.post("/v1/echo", json={"texts": ["北京"]}).status_code == 401
        assert c.post("/v1/echo", json={"texts": ["北京"]}, headers=auth).json() == {"found": [["北京"]]}
        assert c.post("/v1/echo", json={"texts": ["x" * 2000]}, headers=auth).status_code == 413
        metrics = c.get("/metrics", headers=auth).text
    assert _metric(metrics, 'nerft_http_requests_total{path="/v1/echo",code="200"}') == 1


SAMPLE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? [-+.0-9e]+$')  # name{labels} value


def _metric(text: str, series: str) -> float:
    """The value of ``series`` (``name{a="x",b="y"}``, labels in any order, ``le`` as 1 or 1.0) in an exposition."""
    from prometheus_client.parser import text_string_to_metric_families

    name, _, rest = series.partition("{")
    wanted = dict(pair.split("=", 1) for pair in rest.rstrip("}").split(",") if pair)
    wanted = {k: v.strip('"') for k, v in wanted.items()}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = {k: (str(float(v)) if k == "le" and v != "+Inf" else v) for k, v in sample.labels.items()}
            want = {k: (str(float(v)) if k == "le" and v != "+Inf" else v) for k, v in wanted.items()}
            if sample.name == name and labels == want:
                return sample.value
    raise AssertionError(f"{series} is not in the exposition")


def test_metrics():
    predictor = FakePredictor()
    with TestClient(create_app(predictor, ServeSettings(max_wait_ms=1))) as c:
        assert c.post("/v1/ner", json={"texts": ["张三在北京", "北京"]}).status_code == 200
        assert c.post("/v1/ner", json={"texts": ["北京"]}).status_code == 200
        assert c.post("/v1/ner", json={"texts": []}).status_code == 422
        assert c.get("/nowhere").status_code == 404
        r = c.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    samples = [line for line in text.splitlines() if not line.startswith("#")]
    assert all(SAMPLE.match(line) for line in samples), [s for s in samples if not SAMPLE.match(s)]
    assert _metric(text, 'nerft_http_requests_total{path="/v1/ner",code="200"}') == 2
    assert _metric(text, 'nerft_http_requests_total{path="/v1/ner",code="422"}') == 1
    assert _metric(text, 'nerft_http_requests_total{path="other",code="404"}') == 1  # unknown paths share one label
    assert _metric(text, "nerft_texts_total") == 3
    assert _metric(text, "nerft_batch_texts_count") == len(predictor.calls) == 2
    assert _metric(text, "nerft_batch_texts_sum") == 3
    assert _metric(text, 'nerft_batch_texts_bucket{le="1"}') == 1
    assert _metric(text, 'nerft_batch_texts_bucket{le="2"}') == 2
    assert _metric(text, 'nerft_http_request_duration_seconds_count{path="/v1/ner"}') == 3
    assert _metric(text, "nerft_queue_depth") == 0 and _metric(text, "nerft_requests_in_flight") == 0
    buckets = [_metric(text, f'nerft_batch_texts_bucket{{le="{le}"}}') for le in (1, 2, 4, 128, "+Inf")]
    assert buckets == [1, 2, 2, 2, 2]  # one call of 2 texts, one of 1; cumulative
    latency = [float(line.rsplit(" ", 1)[1]) for line in samples
               if line.startswith("nerft_http_request_duration_seconds_bucket{") and 'path="/v1/ner"' in line]
    assert latency == sorted(latency) and latency[-1] == 3  # cumulative, ending with +Inf = count


def test_two_apps_in_one_process_keep_their_own_metrics():
    first = create_app(FakePredictor(), ServeSettings(max_wait_ms=1))
    second = create_app(FakePredictor(), ServeSettings(max_wait_ms=1))
    with TestClient(first) as a, TestClient(second) as b:
        assert a.post("/v1/ner", json={"texts": ["北京", "张三"]}).status_code == 200
        mine, theirs = a.get("/metrics").text, b.get("/metrics").text
    assert _metric(mine, "nerft_texts_total") == 2 and _metric(theirs, "nerft_texts_total") == 0
    assert first.state.stats.requests("/v1/ner", 200) == 1 and second.state.stats.requests("/v1/ner", 200) == 0

def test_shutdown_finishes_in_flight_requests():
    predictor = FakePredictor(delay=0.2)
    app = create_app(predictor, ServeSettings(max_wait_ms=1))

    async def scenario():
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            async with app.router.lifespan_context(app):
                pending = asyncio.ensure_future(c.post("/v1/ner", json={"texts": ["北京"]}))
                await asyncio.sleep(0.05)  # the request is being predicted when shutdown begins
            return await pending

    r = asyncio.run(scenario())
    assert r.status_code == 200 and r.json()["results"][0]["entities"][0]["text"] == "北京"


@pytest.fixture
def no_model(monkeypatch):
    """nerft serve with the model loader and uvicorn replaced: records what would have been served."""
    import uvicorn

    import nerft.inference.loading

    started: dict = {}
    monkeypatch.delenv("NERFT_API_KEY", raising=False)
    monkeypatch.setattr(nerft.inference.loading, "open_predictor", lambda load, opts: started.setdefault("p", FakePredictor()))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: started.update(app=app, **kw))
    return started


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "ner.example.org"])
def test_serve_refuses_an_open_address_without_a_key(no_model, capsys, host):
    assert main(["serve", "--model", "/no/such/run", "--host", host]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"nerft serve: error: --host {host} would let anyone") and "\n" not in err
    assert "NERFT_API_KEY" in err and "--no-auth" in err
    assert no_model == {}  # refused before any model was opened


def test_serve_starts_with_a_key_with_no_auth_or_on_loopback(no_model, monkeypatch, capsys):
    assert main(["serve", "--model", "m", "--host", "0.0.0.0", "--no-auth", "--timeout", "5",
                 "--max-body-bytes", "2048"]) == 0
    settings = no_model["app"].state.settings
    assert no_model["host"] == "0.0.0.0" and settings.api_key is None
    assert settings.timeout == 5 and settings.max_body_bytes == 2048
    assert main(["serve", "--model", "m"]) == 0 and no_model["host"] == "127.0.0.1"
    monkeypatch.setenv("NERFT_API_KEY", "from-env")
    assert main(["serve", "--model", "m", "--host", "0.0.0.0"]) == 0
    assert no_model["app"].state.settings.api_key == "from-env"
    assert "from-env" not in repr(no_model["app"].state.settings)  # settings may be logged; the key may not
    with TestClient(no_model["app"]) as c:
        assert c.get("/v1/labels").status_code == 401
    capsys.readouterr()
    assert main(["serve", "--model", "m", "--host", "0.0.0.0", "--no-auth"]) == 2
    assert "--no-auth contradicts" in capsys.readouterr().err


def test_real_tiny_predictor(tiny_tokenizer):
    predictor = load_predictor(shared_run_dir(tiny_tokenizer), max_new_tokens=6, constrained=True)
    with TestClient(create_app(predictor)) as c:
        texts = ["张三在北京。", "今天天气不错"]
        r = c.post("/v1/ner", json={"texts": texts})
        assert r.status_code == 200
        for text, res in zip(texts, r.json()["results"], strict=True):
            for e in res["entities"]:
                assert text[e["start"]:e["end"]] == e["text"]
        assert r.json()["model"] == "run"
        assert post_json(c, {"texts": [SURROGATE]}).status_code == 422  # the tokenizer would raise TypeError
    # concurrent clients against the real predictor: their texts share generation batches
    settings = ServeSettings(max_batch=8, max_wait_ms=50)
    app = create_app(predictor, settings)
    responses = asyncio.run(_concurrent(app, 6))
    assert all(r.status_code == 200 for r in responses)
    stats = app.state.stats
    assert stats.max_batch_seen > 1 and stats.texts == 6 and stats.batches < 6


def test_nerft_serve_predicts_once_before_it_listens(monkeypatch):
    """The first client must not pay the first call's set-up: one prediction runs before uvicorn opens the port."""
    import uvicorn

    import nerft.inference.loading

    events: list[str] = []

    class Recorder(FakePredictor):
        def predict(self, texts, labels=None):
            events.append("predict")
            return super().predict(texts, labels)

    monkeypatch.setattr(nerft.inference.loading, "open_predictor", lambda load, options: Recorder())
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: events.append("listen"))
    import socket

    with socket.socket() as probe:  # a free port (serve checks it can listen before loading anything)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    assert main(["serve", "--model", "unused", "--port", str(port)]) == 0
    assert events == ["predict", "listen"]
