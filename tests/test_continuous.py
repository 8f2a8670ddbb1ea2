"""Continuous (iteration-level) batching: rows join a running batch between decode steps and leave when done; the
answers are the bulk path's."""

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from helpers_models import shared_run_dir
from helpers_serve import serving

from nerft.generation import (
    DecodeBatch,
    DecodeRow,
    PrefixCache,
    generate_batch,
    prompt_ids,
    shared_prefix_ids,
)
from nerft.inference.loading import load_predictor
from nerft.serve import ServeSettings, create_app
from nerft.serve.batching import ContinuousBatcher
from nerft.serve.openai_api import openai_router

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。",
         "李四", "上海市浦东新区的张江高科技园区里有很多公司，比如华为和阿里巴巴。"]


@pytest.fixture(scope="module")
def run_dir(tiny_tokenizer):
    return shared_run_dir(tiny_tokenizer)


def drain(batch: DecodeBatch, rows: list[DecodeRow], join_every: int = 1) -> list[DecodeRow]:
    """Rows join one at a time, ``join_every`` decode steps apart; then steps until every row is done."""
    done, waiting, steps = [], list(rows), 0
    while waiting or len(batch):
        if waiting and steps % join_every == 0:
            done += batch.add([waiting.pop(0)])
        done += batch.step()
        steps += 1
        assert batch.attention.shape[0] == len(batch) == len(batch.next_ids)
    return done


@pytest.mark.parametrize("use_prefix", [False, True])
def test_rows_joining_mid_decode_answer_as_one_batch_does(run_dir, tiny_tokenizer, use_prefix):
    p = load_predictor(run_dir, batch_size=8)
    ids = [prompt_ids(tiny_tokenizer, p.prompt, t) for t in TEXTS]
    limits = [3, 12, 7, 20, 1, 16]
    prefix = PrefixCache(p.model, shared_prefix_ids(tiny_tokenizer, p.prompt)) if use_prefix else None
    bulk = generate_batch(p.model, tiny_tokenizer, ids, limits, prefix=prefix)
    rows = [DecodeRow(list(i), n) for i, n in zip(ids, limits, strict=True)]
    batch = DecodeBatch(p.model, tiny_tokenizer, prefix)
    done = drain(batch, rows, join_every=2)
    assert sorted(map(id, done)) == sorted(map(id, rows)) and all(r.done for r in rows)
    assert [r.out_ids for r in rows] == [g.token_ids for g in bulk]
    assert [r.finished for r in rows] == [g.finished for g in bulk]
    for r, g in zip(rows, bulk, strict=True):
        assert r.out_lps == pytest.approx(g.logprobs, abs=1e-4)
    assert batch.cache is None and batch.positions == 0  # every row left; nothing held


def test_the_cache_is_cut_to_what_running_rows_attend_to(run_dir, tiny_tokenizer):
    p = load_predictor(run_dir)
    ids = [prompt_ids(tiny_tokenizer, p.prompt, t) for t in TEXTS[:2]]
    batch = DecodeBatch(p.model, tiny_tokenizer)
    long_row, short_row = DecodeRow(ids[0], 40), DecodeRow(ids[1], 40, stop=lambda out: len(out) >= 2)
    batch.add([long_row])
    for _ in range(5):
        batch.step()
    batch.add([short_row])  # joins a batch 5 steps in: left-padded to it
    width = batch.attention.shape[1]
    assert width == max(len(ids[0]) + 6, len(ids[1]) + 1)
    while not long_row.done:
        batch.step()
    if len(batch):  # the long row left first: the columns only it attended to are gone
        assert batch.attention[:, 0].any()
        assert batch.attention.shape[1] <= len(ids[1]) + len(short_row.out_ids) + 1


def test_removed_rows_leave_at_once(run_dir, tiny_tokenizer):
    p = load_predictor(run_dir)
    ids = [prompt_ids(tiny_tokenizer, p.prompt, t) for t in TEXTS[:3]]
    batch = DecodeBatch(p.model, tiny_tokenizer)
    rows = [DecodeRow(i, 30) for i in ids]
    batch.add(rows)
    batch.remove([rows[1]])
    assert batch.rows == [r for r in rows if not r.done] and rows[1] not in batch.rows
    assert batch.attention.shape[0] == len(batch.rows)
    batch.step()
    layer = batch.cache.layers[0]
    assert layer.keys.shape[0] == len(batch.rows) and layer.keys.shape[2] == batch.attention.shape[1] - 1


def test_the_continuous_decoder_answers_what_predict_answers(run_dir):
    p = load_predictor(run_dir, max_new_tokens=10, constrained=True, batch_size=4, window=12, window_overlap=3)
    bulk = p.predict_detailed(TEXTS)
    decoder = p.continuous(max_rows=3, max_positions=10_000)
    got: dict[tuple[str, int], object] = {}
    owners = ["a", "b", "c"]
    for owner, chunk in zip(owners, (TEXTS[:2], TEXTS[2:5], TEXTS[5:]), strict=True):
        for o, i, pred in decoder.admit(owner, list(chunk), None):
            got[o, i] = pred
        for o, i, pred in decoder.step():  # the next caller arrives one step later
            got[o, i] = pred
    while decoder.busy:
        for o, i, pred in decoder.step():
            got[o, i] = pred
    flat = [got["a", 0], got["a", 1], got["b", 0], got["b", 1], got["b", 2], got["c", 0]]
    assert [x.answers for x in flat] == [x.answers for x in bulk]
    for x, y in zip(flat, bulk, strict=True):
        assert [(e.start, e.end, e.label) for e in x.entities] == [(e.start, e.end, e.label) for e in y.entities]
        assert [e.score for e in x.entities] == pytest.approx([e.score for e in y.entities], abs=1e-3)
    assert sum(len(x.entities) for x in flat) > 0  # constrained: the random model writes grounded entities
    assert [(x.prompt_tokens, x.completion_tokens) for x in flat] == [(x.prompt_tokens, x.completion_tokens)
                                                                      for x in bulk]
    assert not decoder.tickets and not decoder.waiting and len(decoder.batch) == 0


# --- the server's continuous scheduler, on a real server (uvicorn in a thread) over the tiny model ---------------

LONG = "联合国秘书长访问了巴黎和伦敦，会见了马克龙和约翰逊，讨论了气候变化、难民问题和北约东扩等议题。" * 2


def ner(client, texts, **kw):
    return client.post("/v1/ner", json={"texts": texts}, **kw)


def wait_for(condition, seconds=30.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


@pytest.fixture(scope="module")
def long_predictor(run_dir):
    """Unconstrained, long bounds: the random model writes the long text's answer to its bound."""
    return load_predictor(run_dir, max_new_tokens=120, batch_size=8)


def test_the_server_schedules_continuously_and_answers_what_bulk_answers(run_dir):
    p = load_predictor(run_dir, max_new_tokens=12, constrained=True, batch_size=8)
    bulk = p.predict_detailed(TEXTS)
    app = create_app(p, ServeSettings(max_batch=4), routers=[openai_router()])
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        assert isinstance(app.state.batcher, ContinuousBatcher)
        with ThreadPoolExecutor(len(TEXTS) + 1) as pool:
            singles = list(pool.map(lambda t: ner(client, [t]), TEXTS))
            whole = pool.submit(ner, client, TEXTS).result()
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": TEXTS[3]}]})
        metrics = client.get("/metrics").text
    assert all(r.status_code == 200 for r in singles) and whole.status_code == 200
    want = [[(e.start, e.end, e.label) for e in b.entities] for b in bulk]
    assert [[(e["start"], e["end"], e["label"]) for e in r.json()["results"][0]["entities"]] for r in singles] == want
    assert [[(e["start"], e["end"], e["label"]) for e in res["entities"]] for res in whole.json()["results"]] == want
    assert sum(map(len, want)) > 0
    assert chat.status_code == 200 and chat.json()["choices"][0]["message"]["content"] == bulk[3].answers[0]
    assert chat.json()["usage"]["completion_tokens"] == bulk[3].completion_tokens
    assert 'nerft_texts_total 13.0' in metrics  # 6 single texts, 6 in one request, 1 chat


def test_a_short_request_is_answered_while_a_long_one_decodes(long_predictor):
    [long_alone] = long_predictor.predict_detailed([LONG])
    assert long_alone.completion_tokens >= 100  # precondition: the long answer takes 100+ decode steps
    app = create_app(long_predictor, ServeSettings(max_batch=8))
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(2) as pool:
        decoder = app.state.batcher.decoder
        long_call = pool.submit(ner, client, [LONG])
        wait_for(lambda: len(decoder.batch) == 1 and len(decoder.batch.rows[0].out_ids) >= 5)
        short = ner(client, ["李四"])
        long_row_then = decoder.batch.rows[0].out_ids if len(decoder.batch) else None
        assert short.status_code == 200
        assert not long_call.done() and long_row_then is not None  # answered while the long text still decodes
        assert len(long_row_then) < long_alone.completion_tokens
        long_response = long_call.result()
    assert long_response.status_code == 200
    got = [(e["start"], e["end"], e["label"]) for e in long_response.json()["results"][0]["entities"]]
    assert got == [(e.start, e.end, e.label) for e in long_alone.entities]


def test_a_client_that_leaves_mid_decode_frees_its_rows(long_predictor):
    app = create_app(long_predictor, ServeSettings(max_batch=8))
    body = json.dumps({"texts": [LONG, LONG]}).encode()
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        decoder = app.state.batcher.decoder
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port))) as leaving:
            leaving.sendall(b"POST /v1/ner HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                            b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
            wait_for(lambda: len(decoder.batch) == 2 and len(decoder.batch.rows[0].out_ids) >= 3)
            rows = list(decoder.batch.rows)
        # the client hung up mid-decode: its rows leave at the next step, long before their bound
        wait_for(lambda: not decoder.busy and not decoder.tickets, seconds=10)
        after = ner(client, ["李四"])
        metrics = client.get("/metrics").text
    assert all(r.done and len(r.out_ids) < 60 for r in rows) and after.status_code == 200
    assert re.search(r'nerft_http_requests_total\{[^}]*code="499"[^}]*\} 1\.0', metrics)


def test_a_failing_step_fails_only_the_request_that_caused_it(run_dir):
    p = load_predictor(run_dir, max_new_tokens=8, batch_size=8)
    plan_prediction = p.plan.prediction

    def poisoned(plan, i, answers):  # a fault injected where a step reads an answer: "boom" cannot be read
        if plan.texts[i] == "boom":
            raise ValueError("unreadable: boom")
        return plan_prediction(plan, i, answers)

    p.plan.prediction = poisoned
    app = create_app(p, ServeSettings(max_batch=8))
    texts = [f"张三{i}在北京" for i in range(6)] + ["boom"]
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as client:
        with ThreadPoolExecutor(len(texts)) as pool:
            responses = list(pool.map(lambda t: ner(client, [t]), texts))
        health = client.get("/health").status_code
    assert [r.status_code for r in responses[:-1]] == [200] * 6 and responses[-1].status_code == 400
    assert "unreadable: boom" in responses[-1].json()["detail"] and health == 200
    assert app.state.stats.failed_batches >= 1  # the step holding "boom" failed; its requests were rerun alone
