"""``--backend openai`` against real HTTP servers on loopback: ``nerft serve`` on the tiny model (its
``/v1/chat/completions``) must give the entities the in-process predictor gives; a small scripted server checks
retries, the API key, log-probabilities and the errors. The chat endpoint's schema is checked in-process."""

import json
import re
import socket

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from helpers_models import shared_run_dir
from helpers_serve import serving

from nerft import cli
from nerft.config import build_config
from nerft.evaluate import EvaluateConfig, evaluate
from nerft.inference.base import Prediction
from nerft.inference.loading import load_predictor, open_predictor
from nerft.inference.openai_backend import (
    OpenAIEngine,
    OpenAIPredictor,
    chat_url,
    resolve_api_key,
    stop_strings,
)
from nerft.inference.options import LoadOptions, OpenAIOptions, PredictOptions
from nerft.jsonl import write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import Document, Entity, NerftError
from nerft.serve import ServeSettings, create_app
from nerft.serve.openai_api import openai_router

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。"]
# The client cuts texts into windows of 12 tokens: several requests per long text, offsets merged back by nerft.
WINDOW = {"window": 12, "window_overlap": 0}


def key(entities: list[Entity]):
    return [(e.start, e.end, e.label, e.text) for e in entities]


@pytest.fixture(scope="module")
def run_dir(tiny_tokenizer):
    return shared_run_dir(tiny_tokenizer)


@pytest.fixture(scope="module")
def served(run_dir):
    """``nerft serve`` on the tiny run, decoding constrained: the random model then writes real entities (the
    client cannot constrain a server; the server constrains itself)."""
    predictor = load_predictor(run_dir, device="cpu", constrained=True)
    with serving(create_app(predictor, ServeSettings(max_batch=8), routers=[openai_router()])) as url:
        yield url


@pytest.fixture(scope="module")
def reference(run_dir):
    """The in-process transformers predictor with the client's windows."""
    return load_predictor(run_dir, device="cpu", constrained=True, **WINDOW).predict_detailed(TEXTS)


def test_openai_backend_gives_the_in_process_entities(served, run_dir, reference):
    load = LoadOptions(model=str(run_dir), backend="openai", openai=OpenAIOptions(base_url=served + "/v1"))
    client = open_predictor(load, PredictOptions(**WINDOW))
    assert isinstance(client, OpenAIPredictor)
    assert client.name == "run"  # no --model-name: the server's only model, from GET /v1/models
    assert "<|im_end|>" in client.engine.stop
    got = client.predict_detailed(TEXTS)
    assert [key(p.entities) for p in got] == [key(p.entities) for p in reference]
    assert sum(len(p.entities) for p in got) >= 4 and max(len(p.answers) for p in got) >= 3  # windows were merged
    assert [p.answers for p in got] == [p.answers for p in reference]  # the served raw answers, byte for byte
    assert all(e.score is None for p in got for e in p.entities)  # nerft serve returns no log-probabilities
    assert client.stats.windows == sum(len(p.answers) for p in reference)


def test_the_openai_sdk_reads_nerft_serve_with_usage(served, run_dir):
    """OpenAI's own Python client against nerft serve: the model list, a completion with the in-process answer,
    and ``usage`` counting the prompt the model read and the tokens it wrote."""
    openai = pytest.importorskip("openai", reason="the openai package is not installed (a dev dependency)")
    from nerft.generation import prompt_ids

    local = load_predictor(run_dir, device="cpu", constrained=True)
    text = TEXTS[1]
    [expected] = local.predict_detailed([text])
    client = openai.OpenAI(base_url=served + "/v1", api_key="unused", max_retries=0)
    [model] = client.models.list().data
    assert model.id == "run" and model.owned_by == "nerft"
    completion = client.chat.completions.create(model=model.id, messages=local.prompt.messages(text))
    assert completion.choices[0].message.content == "\n".join(expected.answers) and expected.entities
    assert completion.choices[0].finish_reason == "stop"
    usage = completion.usage
    assert usage.prompt_tokens == len(prompt_ids(local.tokenizer, local.prompt, text))
    answer_tokens = len(local.tokenizer.encode(completion.choices[0].message.content, add_special_tokens=False))
    assert usage.completion_tokens in (answer_tokens, answer_tokens + 1)  # + the end-of-turn token it wrote
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_cli_predict_and_evaluate_score_with_openai(served, run_dir, reference, tmp_path, capsys):
    flags = ["--backend", "openai", "--base-url", served, "--model-name", "run", "--window", "12",
             "--window-overlap", "0"]
    assert cli.main(["predict", "--model", str(run_dir), *flags, "--json", *TEXTS]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [[(e["start"], e["end"], e["label"], e["text"]) for e in r["entities"]] for r in rows] == \
        [key(p.entities) for p in reference]

    # gold: half of the reference's entities, so the scores are neither 0 nor 100
    gold = tmp_path / "gold.jsonl"
    write_jsonl(gold, [Document(str(i), t, p.entities[:1]) for i, (t, p) in enumerate(zip(TEXTS, reference, strict=True))])
    pred = tmp_path / "pred.jsonl"
    write_jsonl(pred, [{"id": str(i), "text": t, "entities": [e.to_dict() for e in p.entities]}
                       for i, (t, p) in enumerate(zip(TEXTS, reference, strict=True))])
    expected = evaluate(EvaluateConfig(gold=str(gold), pred=str(pred), labels="ccfbdci", quiet=True))
    out = tmp_path / "eval"
    assert cli.main(["evaluate", "--gold", str(gold), "--score-with", str(run_dir), *flags, "--out", str(out),
                     "--quiet"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["strict"]["micro"] == expected["strict"]["micro"]
    assert 0 < metrics["strict"]["micro"]["precision"] < 1 and metrics["strict"]["micro"]["recall"] == 1
    assert [json.loads(line)["entities"] for line in (out / "predictions.jsonl").read_text().splitlines()] == \
        [r["entities"] for r in rows]
    assert "--score-with" in (out / "report.md").read_text()


def test_evaluate_score_with_refuses_a_pred_file_too(run_dir, tmp_path, capsys):
    assert cli.main(["evaluate", "--gold", "g.jsonl", "--pred", "p.jsonl", "--score-with", str(run_dir)]) == 2
    assert "not both" in capsys.readouterr().err


# --- a scripted server: failures first, then answers -----------------------------------------------------------

def scripted_app(failures: list[int], answer: str = "人名:张三\n地点:北京", logprobs: bool = False):
    """Answers HTTP ``failures[k]`` to the k-th chat request, then ``answer``; records every request."""
    app = FastAPI()
    app.state.requests = []

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": "m1", "object": "model"}, {"id": "m2", "object": "model"}]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        app.state.requests.append({"headers": dict(request.headers), "body": await request.json()})
        k = len(app.state.requests) - 1
        if k < len(failures):
            return JSONResponse({"error": {"message": f"failure {k}"}}, failures[k], headers={"Retry-After": "0"})
        choice = {"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}
        if logprobs:  # one token per character, each with log-probability -0.1; bytes as OpenAI sends them
            choice["logprobs"] = {"content": [{"token": c, "logprob": -0.1, "bytes": list(c.encode())}
                                              for c in answer]}
        return {"choices": [choice]}

    return app


def scripted_predictor(url, tiny_tokenizer, **engine):
    labels = ccfbdci_labels()
    engine = OpenAIEngine(url, "m1", backoff_s=0.01, stop=stop_strings(tiny_tokenizer), **engine)
    return OpenAIPredictor(engine, tiny_tokenizer, labels, build_prompt(labels, "compact"))


def test_retries_after_429_and_5xx_then_answers_with_the_key_from_the_environment(tiny_tokenizer, monkeypatch):
    monkeypatch.setenv("NERFT_OPENAI_API_KEY", "sk-test-123")
    app = scripted_app([503, 429, 502])
    with serving(app) as url:
        opts = OpenAIOptions(base_url=url, model_name="m1", retries=3)
        predictor = scripted_predictor(url, tiny_tokenizer, api_key=resolve_api_key(opts), retries=3)
        [p] = predictor.predict_detailed(["张三在北京。"])
    assert key(p.entities) == [(0, 2, "PER", "张三"), (3, 5, "LOC", "北京")]
    assert [e.score for e in p.entities] == [None, None]  # no log-probabilities: no score, not a made-up one
    assert len(app.state.requests) == 4
    last = app.state.requests[-1]
    assert last["headers"]["authorization"] == "Bearer sk-test-123"
    body = last["body"]
    assert body["temperature"] == 0 and body["model"] == "m1" and body["n"] == 1
    assert body["messages"] == predictor.prompt.messages("张三在北京。")
    assert body["max_tokens"] == predictor.plan.limit("张三在北京。")
    assert "<|im_end|>" in body["stop"]


def test_log_probabilities_become_entity_scores(tiny_tokenizer):
    with serving(scripted_app([], logprobs=True)) as url:
        [ents] = scripted_predictor(url, tiny_tokenizer).predict(["张三在北京。"])
    assert [e.score for e in ents] == pytest.approx([0.905, 0.905], abs=1e-3)  # exp(-0.1)


@pytest.mark.parametrize("failures, retries, words", [
    ([503] * 5, 1, "failed after 2 tries: HTTP 503: failure 1"),
    ([401], 3, "HTTP 401: failure 0 (check the API key: $NERFT_OPENAI_API_KEY"),  # not retried
    ([404], 3, "check --base-url and --model-name"),
])
def test_the_last_failure_is_one_clear_error(tiny_tokenizer, failures, retries, words):
    app = scripted_app(failures)
    with serving(app) as url:
        predictor = scripted_predictor(url, tiny_tokenizer, retries=retries)
        with pytest.raises(NerftError, match=re.escape(words)):
            predictor.predict(["张三在北京。"])
    assert len(app.state.requests) == (retries + 1 if failures[0] >= 500 else 1)


def test_a_server_that_is_not_there(tiny_tokenizer):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(NerftError, match="failed after 3 tries: ConnectError"):
        scripted_predictor(f"http://127.0.0.1:{port}", tiny_tokenizer, retries=2).predict(["张三"])


def test_several_served_models_need_a_model_name(tiny_tokenizer):
    with serving(scripted_app([])) as url, pytest.raises(NerftError, match="lists 2 models .*--model-name"):
        OpenAIEngine(url, None)


def test_options_flags_and_the_key_stay_out_of_reprs():
    load = build_config(LoadOptions, {"backend": "openai", "openai.base_url": "http://h:8000",
                                      "openai.api_key": "sk-secret"})
    assert load.openai.base_url == "http://h:8000" and load.openai.api_key == "sk-secret"
    assert "sk-secret" not in repr(load)
    import argparse

    from nerft.inference.options import add_load_arguments

    parser = argparse.ArgumentParser()
    add_load_arguments(parser)
    args = parser.parse_args(["--backend", "openai", "--base-url", "u", "--model-name", "n", "--openai.api-key",
                              "k", "--openai.concurrency", "3"])
    parsed = build_config(LoadOptions, args)
    assert (parsed.openai.base_url, parsed.openai.model_name, parsed.openai.api_key, parsed.openai.concurrency) \
        == ("u", "n", "k", 3)
    assert [chat_url(u) for u in ("http://h:8000", "http://h:8000/v1/", "http://h/v1/chat/completions")] == \
        ["http://h:8000/v1/chat/completions"] * 2 + ["http://h/v1/chat/completions"]


def test_openai_backend_refuses_constrained_decoding(tiny_tokenizer):
    labels = ccfbdci_labels()
    with pytest.raises(NerftError, match="transformers backend"):
        OpenAIPredictor(object(), tiny_tokenizer, labels, build_prompt(labels), PredictOptions(constrained=True))


# --- the chat endpoint of nerft serve, in-process -------------------------------------------------------------

class RawPredictor:
    """Answers every text with one line per known word in it; records the texts it was given."""

    labels = ccfbdci_labels()
    prompt = build_prompt(labels, "tutorial", "tutorial")  # user prefix 文本:
    name = "fake"

    def __init__(self):
        self.texts: list[str] = []

    def predict(self, texts, labels=None):
        return [p.entities for p in self.predict_detailed(texts)]

    def predict_detailed(self, texts, labels=None):
        self.texts += texts
        return [Prediction([], ["\n".join(f"PER:{w}" for w in ("张三", "李四") if w in t)], finished="李四" not in t,
                           prompt_tokens=10 + len(t), completion_tokens=len(t)) for t in texts]


def test_chat_completions_schema_and_errors():
    predictor = RawPredictor()
    with TestClient(create_app(predictor, ServeSettings(max_text_chars=20), routers=[openai_router()])) as client:
        models = client.get("/v1/models").json()
        assert models["data"][0]["id"] == "fake" and models["object"] == "list"
        exact = client.post("/v1/chat/completions", json={"model": "fake", "temperature": 0, "max_tokens": 9,
                                                          "messages": predictor.prompt.messages("张三来了")})
        assert exact.status_code == 200
        body = exact.json()
        assert body["object"] == "chat.completion" and body["model"] == "fake" and body["id"].startswith("chatcmpl-")
        assert body["choices"][0]["message"] == {"role": "assistant", "content": "PER:张三"}
        assert body["choices"][0]["finish_reason"] == "stop"
        assert body["usage"] == {"prompt_tokens": 14, "completion_tokens": 4, "total_tokens": 18}
        bare = client.post("/v1/chat/completions", json={"messages": [
            {"role": "user", "content": [{"type": "text", "text": "李四和张三"}]}]}).json()
        assert bare["choices"][0]["message"]["content"] == "PER:张三\nPER:李四"
        assert bare["choices"][0]["finish_reason"] == "length"
        assert predictor.texts == ["张三来了", "李四和张三"]  # the user prefix 文本: taken off
        for payload, status, words in [
            ({"model": "gpt-4", "messages": [{"role": "user", "content": "x"}]}, 404, "does not exist"),
            ({"messages": [{"role": "user", "content": "x"}], "stream": True}, 400, "streaming"),
            ({"messages": [{"role": "system", "content": "x"}]}, 400, "last user message"),
            ({"messages": [{"role": "user", "content": "x" * 21}]}, 413, "limit is 20"),
        ]:
            r = client.post("/v1/chat/completions", json=payload)
            assert r.status_code == status and words in r.json()["error"]["message"]


def test_a_model_trained_with_lexicon_hints_reads_them_in_process_and_through_a_server(tiny_tokenizer, tmp_path):
    import dataclasses
    import shutil

    from nerft.lexicon import LEXICON_FILE, Lexicon
    from nerft.rundir import RunInfo

    run = tmp_path / "run"
    shutil.copytree(shared_run_dir(tiny_tokenizer), run)
    info = RunInfo.load(run)
    dataclasses.replace(info, prompt=dataclasses.replace(info.prompt, hints=3)).save(run)
    annotated = [Document("a", "北京很大，上海也大。", [Entity(0, 2, "GPE", "北京"), Entity(5, 7, "GPE", "上海")]),
                 Document("b", "联合国", [Entity(0, 3, "ORG", "联合国")])]
    Lexicon.from_documents(annotated).save(run / LEXICON_FILE)
    local = load_predictor(run, device="cpu", constrained=True)
    assert local.plan.hint(TEXTS[0]) == "参考：北京=地理实体 100%" and local.plan.hint(TEXTS[2]) == ""
    expected = local.predict_detailed(TEXTS)
    with serving(create_app(local, ServeSettings(max_batch=8), routers=[openai_router()])) as url:
        load = LoadOptions(model=str(run), backend="openai", openai=OpenAIOptions(base_url=url + "/v1"))
        client = open_predictor(load, PredictOptions())
        # the client sends nerft's whole prompt, hint line included; the server reads the text without it
        assert client.engine_requests([TEXTS[0]], [[]])[0][1]["content"] == TEXTS[0] + "\n参考：北京=地理实体 100%"
        got = client.predict_detailed(TEXTS)
    assert [p.answers for p in got] == [p.answers for p in expected]
    assert [key(p.entities) for p in got] == [key(p.entities) for p in expected]


@pytest.mark.parametrize("content", [5, {"text": "张三"}, [1, 2]])
def test_a_malformed_chat_request_is_answered_in_openai_error_shape(run_dir, content):
    """OpenAI clients read {"error": {"message", "type", ...}}: a message whose content is not text gets that
    (400), not FastAPI's {"detail": [...]}, which is kept for nerft's own /v1/ner."""
    predictor = load_predictor(run_dir, device="cpu", max_new_tokens=2)
    with TestClient(create_app(predictor, routers=[openai_router()])) as c:
        r = c.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": content}]})
        assert r.status_code == 400 and set(r.json()) == {"error"}
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error" and error["message"].startswith("messages.0.content")
        assert c.post("/v1/ner", json={"texts": [5]}).json().keys() == {"detail"}
