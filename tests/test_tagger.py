"""The LLM as a tagger (task: tag): the tag schemes, character alignment (surrogate pairs, combining marks,
characters split over byte tokens, boundaries inside a token), the chain decoders (Viterbi against brute force,
marginals, the likelihood with unknown tags), and a tiny run trained, predicted, scored, tuned, served, exported
and reopened."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from helpers_tagger import build_tagger_run, synthetic_docs

from nerft.schema import Document, Entity
from nerft.tagger.crf import constraint_scores, log_partition, marginals, sequence_nll, viterbi
from nerft.tagger.positions import IGNORE, align, collate_tags, count_positions
from nerft.tagger.scheme import TagScheme

CODES = ("PER", "GPE")


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_spans_round_trip_through_tags(scheme):
    s = TagScheme(CODES, scheme)
    spans = [(0, 2, "PER"), (2, 3, "GPE"), (5, 9, "PER"), (9, 10, "PER")]
    tags = s.encode(11, spans)
    assert s.spans(tags) == spans
    assert all(s.allowed_start(tags[0]) for _ in [0]) and s.allowed_end(tags[-1])
    assert all(s.allowed(a, b) for a, b in itertools.pairwise(tags))


def test_bioes_tags_and_what_may_follow_what():
    s = TagScheme(CODES, "bioes")
    assert s.tags == ("O", "B-PER", "I-PER", "E-PER", "S-PER", "B-GPE", "I-GPE", "E-GPE", "S-GPE")
    i = s.index
    assert s.allowed(i("B-PER"), i("I-PER")) and s.allowed(i("I-PER"), i("E-PER"))
    assert not s.allowed(i("B-PER"), i("O")) and not s.allowed(i("B-PER"), i("E-GPE"))  # an open mention must close
    assert not s.allowed(i("O"), i("I-PER")) and not s.allowed(i("E-PER"), i("I-PER"))
    assert not s.allowed_start(i("E-PER")) and not s.allowed_end(i("B-PER")) and s.allowed_end(i("S-GPE"))
    b = TagScheme(CODES, "bio")
    assert b.allowed(b.index("B-PER"), b.index("O")) and not b.allowed(b.index("B-GPE"), b.index("I-PER"))


def test_overlapping_gold_keeps_the_first_and_longest():
    s = TagScheme(CODES, "bio")
    assert s.spans(s.encode(6, [(2, 4, "GPE"), (0, 5, "PER")])) == [(0, 5, "PER")]


def _valid_sequences(scheme: TagScheme, n: int):
    for seq in itertools.product(range(len(scheme)), repeat=n):
        if scheme.allowed_start(seq[0]) and scheme.allowed_end(seq[-1]) and \
                all(scheme.allowed(a, b) for a, b in itertools.pairwise(seq)):
            yield seq


@pytest.mark.parametrize("scheme", ["bio", "bioes"])
def test_viterbi_finds_the_best_valid_sequence_and_marginals_are_its_probabilities(scheme):
    s = TagScheme(("X",), scheme)
    torch.manual_seed(0)
    trans, start, end = constraint_scores(s)
    trans = trans + torch.randn_like(trans)
    em = torch.randn(2, 4, len(s))
    mask = torch.tensor([[True] * 4, [True, True, True, False]])
    paths = viterbi(em, mask, trans, start, end)
    probs = marginals(em, mask, trans, start, end)
    for row, n in ((0, 4), (1, 3)):
        def score(seq, row=row):
            return float(start[seq[0]] + end[seq[-1]] + sum(em[row, t, y] for t, y in enumerate(seq))
                         + sum(trans[a, b] for a, b in itertools.pairwise(seq)))
        seqs = list(_valid_sequences(s, n))
        assert tuple(paths[row]) == max(seqs, key=score)  # exact, over every valid sequence
        z = math.log(sum(math.exp(score(q)) for q in seqs))
        assert math.isclose(float(log_partition(em, mask, trans, start, end)[row]), z, rel_tol=1e-5)
        for t in range(n):  # P(tag at t) summed over the valid sequences that have it
            for y in range(len(s)):
                want = sum(math.exp(score(q) - z) for q in seqs if q[t] == y)
                assert math.isclose(float(probs[row, t, y]), want, abs_tol=1e-5)


def test_the_likelihood_sums_over_unknown_tags():
    s = TagScheme(("X",), "bio")
    trans, start, end = constraint_scores(s)
    em = torch.randn(1, 3, len(s))
    mask = torch.ones(1, 3, dtype=torch.bool)
    full = sequence_nll(em, mask, torch.tensor([[1, 2, 0]]), trans, start, end)
    partial = sequence_nll(em, mask, torch.tensor([[1, IGNORE, 0]]), trans, start, end)
    z = log_partition(em, mask, trans, start, end)
    # with the middle tag unknown: -log(P(B ? O)) = -log(P(B I O) + P(B O O)) (B B O too: B may follow B)
    probs = [torch.exp(em[0, 0, 1] + em[0, 1, k] + em[0, 2, 0] - z) for k in (0, 1, 2)]
    assert torch.isclose(partial, -torch.log(sum(probs)).squeeze(), atol=1e-5)
    assert torch.isclose(full, -torch.log(probs[2]).squeeze(), atol=1e-5) and partial < full


# --------------------------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("text", ["张三在北京工作。", "New York 𝒳 é a\u0301b 😀 end", "", " lead", "𠀋𠀋"])
@pytest.mark.parametrize("positions", ["token", "char"])
def test_every_character_has_a_position_that_has_read_it(tiny_tokenizer, text, positions):
    a = align(text, tiny_tokenizer, positions, slots=4)
    assert len(a.char_token) == len(a.char_slot) == len(text)
    assert all(0 <= t < len(a.input_ids) for t in a.char_token)
    assert a.char_token == sorted(a.char_token)  # in text order
    assert count_positions(text, tiny_tokenizer, positions) == len(a.input_ids)
    if positions == "token" and text:
        enc = tiny_tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        for c, t in enumerate(a.char_token):  # the token that tags a character covers it (or precedes it, when
            s, e = enc["offset_mapping"][t]  # no token covers it)
            assert s <= c < e or not any(s2 <= c < e2 for s2, e2 in enc["offset_mapping"])
    if positions == "char":
        # each character's own encoding ends at its position: split bytes are read before their character is tagged
        for c, ch in enumerate(text):
            piece = tiny_tokenizer.encode(ch, add_special_tokens=False)
            assert a.input_ids[a.char_token[c] - len(piece) + 1:a.char_token[c] + 1] == piece


def test_a_token_of_several_characters_tags_each_from_its_own_slot(tiny_tokenizer):
    text = "北京北京北京"
    a = align(text, tiny_tokenizer, "token", slots=2)
    for t in set(a.char_token):
        slots = [a.char_slot[c] for c in range(len(text)) if a.char_token[c] == t]
        assert slots == [min(k, 1) for k in range(len(slots))]


def test_collate_pads_characters_with_ignore(tiny_tokenizer):
    a, b = align("张三", tiny_tokenizer), align("北京很大", tiny_tokenizer)
    a.tags, b.tags = [1, 2], [5, 6, 0, 0]
    batch = collate_tags([a, b], pad_id=0)
    assert batch["tags"].tolist() == [[1, 2, IGNORE, IGNORE], [5, 6, 0, 0]]
    assert batch["char_mask"].sum(1).tolist() == [2, 4]
    assert batch["attention_mask"].sum(1).tolist() == [len(a.input_ids), len(b.input_ids)]


def test_window_tags_leave_a_cut_mention_unknown():
    from nerft.train.tagging import window_tags

    s = TagScheme(CODES, "bio")
    doc = Document("d", "张三在北京。李四", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")])
    assert window_tags(doc, 0, 4, s) == [s.index("B-PER"), s.index("I-PER"), 0, IGNORE]
    assert window_tags(doc, 4, 8, s)[0] == IGNORE


# ------------------------------------------------------------------------------------ a tiny run, end to end

@pytest.fixture(scope="module")
def tagger_run(tmp_path_factory, tiny_tokenizer):
    return build_tagger_run(tmp_path_factory.mktemp("tagger"), tiny_tokenizer)


def _spans(entities):
    return [(e.start, e.end, e.label, e.text) for e in entities]


def test_a_tagging_run_records_its_task_learns_and_chooses_its_decoding(tagger_run):
    import json

    from nerft.rundir import RunInfo

    run, _ = tagger_run
    info = RunInfo.load(run)
    assert info.kind == "tagger" and info.tagger["scheme"] == "bioes" and info.tagger["max_length"] == 24
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["dev"]["best_f1"] >= 90  # the tiny model learns the synthetic task
    assert metrics["decoding"]["file"] == "decoding.yaml" and (run / "decoding.yaml").is_file()
    from safetensors import safe_open

    with safe_open(str(run / "adapter" / "adapter_model.safetensors"), "pt") as f:
        names = list(f.keys())
    assert any("head" in n for n in names) and any("lora_A" in n for n in names)  # the head travels in the adapter


def test_the_tagger_predicts_exact_offsets_around_surrogates_and_combining_marks(tagger_run):
    from nerft.inference.loading import load_predictor

    run, _ = tagger_run
    predictor = load_predictor(run, device="cpu")
    docs = synthetic_docs(20, 7)
    predicted = predictor.predict_detailed([d.text for d in docs])
    for doc, p in zip(docs, predicted, strict=True):
        assert all(doc.text[e.start:e.end] == e.text for e in p.entities)
        assert all(0 <= e.score <= 1 for e in p.entities)
        assert p.hallucinated == 0 and p.parse_failures == 0
    hits = sum(_spans(d.entities) == _spans(p.entities) for d, p in zip(docs, predicted, strict=True))
    assert hits >= 18  # the model learned it; the offsets are right where a character is two UTF-16 units


def test_a_window_edge_inside_an_entity_keeps_the_entity_whole(tagger_run):
    """A sentence longer than the window is cut into overlapping pieces; a mention cut at a piece's edge is read
    whole in the next piece and the merge keeps that one (the same merge as the generative backends')."""
    from nerft.inference.loading import load_predictor

    run, _ = tagger_run
    whole = load_predictor(run, device="cpu", window=0)
    text = "今天我们去了北京工作张三在北京天气不错张三去了北京我们在北京工作的张三"  # one sentence
    expected = _spans(whole.predict([text])[0])
    assert [e[3] for e in expected] == ["北京", "张三", "北京", "张三", "北京", "北京", "张三"]
    cuts = 0
    for window in range(9, 15):
        windowed = load_predictor(run, device="cpu", window=window, window_overlap=4)
        pieces = windowed.windows(text)
        assert len(pieces) > 2 and all(b.start < a.end for a, b in itertools.pairwise(pieces))  # overlapping
        cuts += sum(s < w.end < e for s, e, _, _ in expected for w in pieces[:-1])
        assert _spans(windowed.predict([text])[0]) == expected, window
    assert cuts >= 3  # window edges did fall inside mentions


@pytest.mark.integration
def test_predict_evaluate_tune_serve_export_and_reopen_a_tagger(tagger_run, tmp_path, monkeypatch, capsys):
    import json

    from fastapi.testclient import TestClient

    from nerft.cli import main
    from nerft.inference.loading import load_predictor, open_predictor
    from nerft.inference.options import LoadOptions, PredictOptions
    from nerft.rundir import RunInfo
    from nerft.serve import create_app
    from nerft.serve.openai_api import openai_router
    from nerft.serve.page import describe_model, page_router

    run, data = tagger_run
    texts = [d.text for d in synthetic_docs(6, 9)]
    direct = [_spans(e) for e in load_predictor(run, device="cpu").predict(texts)]
    # predict (the CLI, JSON lines)
    assert main(["predict", "--model", str(run), "--output-format", "nerft", *texts[:2]]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    assert [[(e["start"], e["end"], e["label"], e["text"]) for e in line["entities"]] for line in lines] == direct[:2]
    # evaluate --score-with
    assert main(["evaluate", "--gold", str(data / "dev.jsonl"), "--score-with", str(run), "--out",
                 str(tmp_path / "eval")]) == 0
    scores = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert scores["strict"]["micro"]["f1"] >= 0.9 and scores["hallucinations"] == 0
    # tune (min-score per label on dev)
    assert main(["tune", "--model", str(run), "--dev", str(data / "dev.jsonl"), "--out", str(tmp_path / "tune")]) == 0
    assert (tmp_path / "tune" / "decoding.yaml").is_file()
    # serve: /v1/ner and the page answer from the same predictor
    load = LoadOptions(model=str(run), device="cpu")
    predictor = open_predictor(load, PredictOptions())
    routers = [openai_router(), page_router(describe_model(load))]  # as nerft serve builds its app
    with TestClient(create_app(predictor, routers=routers)) as client:
        r = client.post("/v1/ner", json={"texts": texts})
        assert r.status_code == 200
        served = [[(e["start"], e["end"], e["label"], e["text"]) for e in res["entities"]] for res in r.json()["results"]]
        assert served == direct
        assert client.get("/").status_code == 200
        assert client.get("/v1/info").json()["task"].startswith("tagger")
        chat = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": texts[0]}]})
        assert chat.status_code == 200 and all(e[3] in chat.json()["choices"][0]["message"]["content"]
                                               for e in direct[0])
        read = len(predictor.tokenizer(texts[0], add_special_tokens=False)["input_ids"])  # token positions
        assert chat.json()["usage"] == {"prompt_tokens": read, "completion_tokens": 0, "total_tokens": read}
    # export: a merged folder (body + head), reopened from another folder, predicts the same entities
    out = tmp_path / "exported"
    assert main(["export", "--model", str(run), "--out", str(out)]) == 0
    assert {"config.json", "model.safetensors", "tagger_head.safetensors", "nerft.json", "README.md"} <= \
        {p.name for p in out.iterdir()}
    info = RunInfo.load(out)
    assert info.merged and info.kind == "tagger" and "token-classification" in (out / "README.md").read_text()
    monkeypatch.chdir(tmp_path)
    assert [_spans(e) for e in load_predictor(out, device="cpu").predict(texts)] == direct
    # engines that generate text cannot run a tagger: one line, not a traceback
    assert main(["export", "--model", str(run), "--output-format", "ct2", "--out", str(tmp_path / "ct2")]) == 2
    assert "is a tagger" in capsys.readouterr().err


def test_a_stopped_tagging_run_resumes_to_the_uninterrupted_run(tagger_run, tmp_path):
    """stop_after_steps checkpoints (the head included: it is part of the adapter) and --resume continues exactly."""
    import yaml
    from safetensors.torch import load_file

    from nerft import config as cfglib
    from nerft.train import TrainConfig, train

    run, _ = tagger_run
    recipe = yaml.safe_load((run / "config.yaml").read_text())
    recipe.update(optim={**recipe["optim"], "max_steps": 6}, eval={**recipe["eval"], "every": 0},
                  tune={**recipe["tune"], "enabled": False}, tracking={"backend": "none", "log_every": 1})
    recipe["data"]["dev"] = None

    def run_to(out, **extra):
        return train(cfglib.from_dict(TrainConfig, {**recipe, "output": {**recipe["output"], "dir": str(out)},
                                                   **extra}))

    run_to(tmp_path / "stopped", stop_after_steps=4)
    assert (tmp_path / "stopped" / "checkpoints" / "step-4").is_dir()
    resumed = run_to(tmp_path / "stopped", resume="latest")
    straight = run_to(tmp_path / "straight")
    a = load_file(str(resumed / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and any("head" in k for k in a)
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_a_run_without_a_task_is_a_generative_run(tmp_path, tiny_tokenizer):
    """nerft.json written before the tagger existed has no kind and no tagger: it loads as the LLM that answers."""
    import json

    from helpers_models import build_run_dir

    from nerft.inference.loading import load_predictor
    from nerft.inference.transformers_backend import TransformersPredictor
    from nerft.rundir import RunInfo

    run = build_run_dir(tmp_path, tiny_tokenizer)
    info = json.loads((run / "nerft.json").read_text())
    assert "kind" not in info and "tagger" not in info
    assert RunInfo.load(run).kind == "llm"
    assert isinstance(load_predictor(run, device="cpu", max_new_tokens=2), TransformersPredictor)


def test_prompt_options_and_unknown_labels_are_refused_for_a_tagger(tmp_path, tiny_tokenizer):
    from nerft_helpers import save_base_model, tiny_recipe

    from nerft import config as cfglib
    from nerft.jsonl import write_jsonl
    from nerft.schema import NerftError
    from nerft.train import TrainConfig, train

    base = save_base_model(tmp_path / "base", tiny_tokenizer)
    write_jsonl(tmp_path / "train.jsonl", [Document("x1", "张三在火星", [Entity(3, 5, "PLANET", "火星")])])
    splits = {"train": str(tmp_path / "train.jsonl"), "labels": "ccfbdci"}
    recipe = tiny_recipe(base, splits, tmp_path / "run", data__shared_prefix=True) | {"task": "tag"}
    with pytest.raises(NerftError, match="data.shared_prefix apply to task generate only"):
        train(cfglib.from_dict(TrainConfig, recipe))
    recipe = tiny_recipe(base, splits, tmp_path / "run") | {"task": "tag"}
    with pytest.raises(NerftError, match="training document x1: label.s. PLANET are not in the run's label set"):
        train(cfglib.from_dict(TrainConfig, recipe))


def test_batches_of_like_lengths_bound_the_padding():
    from nerft.inference.base import sorted_batches

    lengths = [224, 30, 28, 100, 35, 40, 31, 95, 29, 33, 60, 27, 26, 90, 32, 30]
    plain = sorted_batches(lengths, 16)
    assert len(plain) == 1 and max(lengths) * 16 / sum(lengths) > 3  # one batch padded to the longest
    bounded = sorted_batches(lengths, 16, max_padding=1.3, free_positions=64)
    assert sorted(i for b in bounded for i in b) == list(range(16)) and all(len(b) <= 16 for b in bounded)
    for b in bounded:
        padded, real = lengths[b[0]] * len(b), sum(lengths[i] for i in b)
        assert lengths[b[0]] == max(lengths[i] for i in b) and (padded <= 1.3 * real or padded <= 64)
    assert len(bounded) < 6  # like lengths still share a call
    assert sorted_batches([5] * 40, 16, max_padding=1.3) == [list(range(16)), list(range(16, 32)), list(range(32, 40))]


def test_a_tagger_answers_the_same_whatever_else_is_in_its_call(tagger_run):
    """A text's entities do not depend on the texts batched with it (a server's batch mixes lengths)."""
    from nerft.inference.loading import load_predictor

    run, _ = tagger_run
    predictor = load_predictor(run, device="cpu")
    docs = synthetic_docs(12, 3)
    texts = [d.text * (1 + k % 4) for k, d in enumerate(docs)]  # lengths 1x-4x, mixed in one call
    together = predictor.predict(texts)
    alone = [predictor.predict([t])[0] for t in texts]
    assert [_spans(e) for e in together] == [_spans(e) for e in alone]
    assert [e.score for es in together for e in es] == pytest.approx([e.score for es in alone for e in es], abs=2e-4)
