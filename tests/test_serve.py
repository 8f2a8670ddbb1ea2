import asyncio
import threading
import time

import httpx
import pytest
from fastapi.testclient import TestClient
from helpers_models import shared_run_dir

from nerft.labels import ccfbdci_labels
from nerft.predict import load_predictor
from nerft.schema import Entity, NerftError
from nerft.serve import ServeSettings, create_app


class FakePredictor:
    """Finds every occurrence of 北京 (LOC) and 张三 (PER); records the batches it was given."""

    labels = ccfbdci_labels()
    name = "fake"

    def __init__(self, delay: float = 0.0):
        self.batches: list[int] = []
        self.delay = delay
        self.lock = threading.Lock()

    def predict(self, texts, labels=None):
        with self.lock:
            self.batches.append(len(texts))
        time.sleep(self.delay)
        if any("boom" in t for t in texts):
            raise NerftError("boom")
        out = []
        for t in texts:
            ents = [Entity(i, i + 2, lab, w, 0.9) for w, lab in (("北京", "LOC"), ("张三", "PER"))
                    for i in range(len(t)) if t.startswith(w, i) and (labels is None or lab in labels)]
            out.append(sorted(ents))
        return out


@pytest.fixture
def client():
    with TestClient(create_app(FakePredictor(), ServeSettings(max_texts=3, max_text_chars=20))) as c:
        yield c


def test_endpoints(client):
    assert client.get("/health").json()["status"] == "ok"
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


@pytest.mark.parametrize(("payload", "status", "words"), [
    ({"texts": []}, 422, "non-empty"),
    ({"texts": ["a", 3]}, 422, "texts[1] must be a string"),
    ({"texts": ["  "]}, 422, "texts[0] is empty"),
    ({"texts": ["a", "b", "c", "d"]}, 413, "too many texts"),
    ({"texts": ["长" * 21]}, 413, "limit is 20"),
    ({"texts": ["a"], "labels": ["NOPE"]}, 422, "unknown label(s) NOPE"),
    ({"text": "a"}, 422, ""),
    ({"texts": ["boom"]}, 400, "boom"),
])
def test_errors(client, payload, status, words):
    r = client.post("/v1/ner", json=payload)
    assert r.status_code == status
    assert words in str(r.json()["detail"])
    assert client.get("/health").status_code == 200  # the server survives


async def _concurrent(app, n_clients: int) -> list[httpx.Response]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
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
    # concurrent clients against the real predictor: their texts share generation batches
    settings = ServeSettings(max_batch=8, max_wait_ms=50)
    app = create_app(predictor, settings)
    responses = asyncio.run(_concurrent(app, 6))
    assert all(r.status_code == 200 for r in responses)
    stats = app.state.stats
    assert stats.max_batch_seen > 1 and stats.texts == 6 and stats.batches < 6
