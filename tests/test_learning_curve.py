"""Smoke test for benchmarks/learning_curve.py and the CRF baseline: every row end to end on a tiny random Qwen2
with the tiny BPE tokenizer and a hand-written dataset (K = 2 and 4 documents), then resume. Checks the harness
(files, keys, resume, the choice on dev), never numbers."""

from __future__ import annotations

import json
import sys

import pytest
from bench_fixtures import f1_follows, has_crfsuite, mini_doc, save_instant_model, write_mini_data
from conftest import REPO

sys.path.insert(0, str(REPO))

from benchmarks import common, crf_baseline, learning_curve  # noqa: E402

DOCS = [
    ("d1", "张三在北京工作。", [(0, 2, "PER"), (3, 5, "GPE")]),
    ("d2", "李四去了黄山。", [(0, 2, "PER"), (4, 6, "LOC")]),
    ("d3", "联合国总部在纽约。", [(0, 3, "ORG"), (6, 8, "GPE")]),
    ("d4", "嗯。", []),
    ("d5", "王五是华为员工。", [(0, 2, "PER"), (3, 5, "ORG")]),
    ("d6", "今天天气很好。", []),
]




@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """A tiny Qwen2 with the tiny BPE tokenizer whose generation ends every answer at once (fast)."""
    return save_instant_model(tmp_path_factory.mktemp("tiny-qwen2"), tiny_tokenizer)


@pytest.fixture(scope="module")
def mini_data(tmp_path_factory):
    return write_mini_data(tmp_path_factory.mktemp("mini-ccfbdci"), DOCS)


@pytest.fixture
def in_process(monkeypatch):
    monkeypatch.setattr(common, "IN_PROCESS", True)


def test_bio_tags_round_trip_and_lenient_decoding():
    text, ents = DOCS[0][1], mini_doc(*DOCS[0])["entities"]
    tags = crf_baseline.bio_tags(text, ents)
    assert tags == ["B-PER", "I-PER", "O", "B-GPE", "I-GPE", "O", "O", "O"]
    assert crf_baseline.spans_from_bio(text, tags) == ents
    assert [e["label"] for e in crf_baseline.spans_from_bio("abc", ["I-PER", "I-GPE", "B-GPE"])] == ["PER", "GPE",
                                                                                                    "GPE"]
    assert crf_baseline.spans_from_bio("", []) == []
    overlapping = [{"start": 0, "end": 3, "label": "ORG"}, {"start": 1, "end": 2, "label": "PER"}]
    assert crf_baseline.bio_tags("abcd", overlapping) == ["B-ORG", "I-ORG", "I-ORG", "O"]
    feats = crf_baseline.char_features("张3")
    assert "c0=张" in feats[0] and "y1=digit" in feats[0] and "BOS" in feats[0] and "EOS" in feats[1]


@pytest.mark.skipif(not has_crfsuite(), reason="python-crfsuite is a benchmark extra (pip install -e .[bench])")
def test_crf_baseline_main(mini_data, tmp_path):
    crf_baseline.main(["--data-dir", str(mini_data), "--ks", "0", "--iterations", "5", "--results", str(tmp_path),
                       "--work", str(tmp_path / "work")])
    d = json.loads((tmp_path / "crf_baseline.json").read_text())
    assert [r["k"] for r in d["rows"]] == [6] and f1_follows(d["rows"][0])  # K = 0: the whole split
    assert "| crf | 6 |" in (tmp_path / "crf_baseline.md").read_text()


def _argv(model, data, tmp_path, ks: str, rows: str, *extra: str) -> list[str]:
    return ["--model", str(model), "--data-dir", str(data), "--ks", ks, "--rows", rows, "--budget-min", "5",
            "--nerft-epochs", "2", "--tutorial-epochs", "2", "--crf-iterations", "5", "--dev-docs", "2",
            "--threads", "1", "--results", str(tmp_path), "--work", str(tmp_path / "work"), *extra]


def test_learning_curve_every_row_then_resume(tiny_model_dir, mini_data, in_process, tmp_path, monkeypatch):
    rows = "nerft,tutorial" + (",crf" if has_crfsuite() else "")
    variant = ("--variant", "sp:data.shared_prefix=true,data.examples_in_prompt=1")
    argv = _argv(tiny_model_dir, mini_data, tmp_path, "4", rows, *variant)
    learning_curve.main(argv)
    d = json.loads((tmp_path / "learning_curve.json").read_text())
    names = rows.split(",") + ["nerft sp"]
    assert sorted(p["row"] for p in d["points"]) == sorted(names) and {p["k"] for p in d["points"]} == {4}
    for p in d["points"]:
        assert f1_follows(p) and "choice" in p
    nerft = next(p for p in d["points"] if p["row"] == "nerft")
    assert nerft["dev_f1"] is not None and nerft["choice"].startswith("best dev F1 at step")
    tutorial = next(p for p in d["points"] if p["row"] == "tutorial")
    assert tutorial["choice"] in ("checkpoint-2 of 2 adapters by dev F1; answers cut at 512 tokens",
                                  "checkpoint-1 of 2 adapters by dev F1; answers cut at 512 tokens")
    assert tutorial["steps"] == 2  # 4 documents, 2 epochs of one step, an adapter after each
    assert (tmp_path / "learning_curve.png").is_file()
    assert ("minus_crf" in (tmp_path / "learning_curve.md").read_text()) == has_crfsuite()

    # resume: nothing is measured again; a new K adds only its own point
    measured = []
    real = learning_curve.measure
    monkeypatch.setattr(learning_curve, "measure", lambda c, row, k, o: measured.append((row, k)) or real(c, row, k, o))
    learning_curve.main(argv)
    assert measured == []
    learning_curve.main(_argv(tiny_model_dir, mini_data, tmp_path, "2,4", "nerft"))
    assert measured == [("nerft", 2)]
    d = json.loads((tmp_path / "learning_curve.json").read_text())
    assert len(d["points"]) == len(names) + 1
    assert "| row | K=2 | K=4 |" in (tmp_path / "learning_curve.md").read_text()
    # the table names the invocations that measured its earlier points, and each LLM point its dev documents
    assert len(d["earlier_commands"]) == 1 and "Earlier points of this table: `" in (
        tmp_path / "learning_curve.md").read_text()
    assert all(p["dev_docs"] == 2 for p in d["points"] if p["row"] not in ("crf", "lexicon"))

    # --tutorial-pick last: the last epoch's adapter goes to test without dev scoring
    learning_curve.main(_argv(tiny_model_dir, mini_data, tmp_path, "2", "tutorial", "--tutorial-pick", "last"))
    d = json.loads((tmp_path / "learning_curve.json").read_text())
    last = next(p for p in d["points"] if p["row"] == "tutorial" and p["k"] == 2)
    assert last["choice"] == "checkpoint-2 of 2 adapters (the last; no dev scoring); answers cut at 512 tokens"
    assert last["dev_f1"] is None
    assert not list((tmp_path / "work" / "learning_curve" / "tutorial-k2").glob("dev-*.jsonl"))



def test_tutorial_point_reuses_its_finished_training(tiny_model_dir, mini_data, in_process, tmp_path, monkeypatch):
    argv = _argv(tiny_model_dir, mini_data, tmp_path, "2", "tutorial", "--tutorial-pick", "last")
    learning_curve.main(argv)
    record = json.loads((tmp_path / "work" / "learning_curve" / "tutorial-k2" / "train.json").read_text())
    assert record["recipe_args"]["k"] == 2 and record["optimizer_steps"] == 2
    trained = []
    real = learning_curve.train_tutorial_epochs
    monkeypatch.setattr(learning_curve, "train_tutorial_epochs", lambda **kw: trained.append(kw) or real(**kw))
    learning_curve.main([*argv, "--redo"])  # the same recipe: scored again, not trained again
    assert trained == []
    point = next(p for p in json.loads((tmp_path / "learning_curve.json").read_text())["points"])
    assert point["steps"] == 2 and point["examples"] == record["examples_available"]
    learning_curve.main([*argv, "--redo", "--tutorial-epochs", "1"])  # another recipe: trained again
    assert len(trained) == 1 and trained[0]["epochs"] == 1 and trained[0]["seed"] is None
    point = next(p for p in json.loads((tmp_path / "learning_curve.json").read_text())["points"])
    assert point["choice"].startswith("checkpoint-1, the only adapter")

    # another seed is a row of its own, trained in its own folder; the tutorial's row stays
    learning_curve.main([*argv, "--tutorial-epochs", "1", "--tutorial-seed", "7"])
    assert len(trained) == 2 and trained[1]["seed"] == 7
    seeded = json.loads((tmp_path / "work" / "learning_curve" / "tutorial-seed-7-k2" / "train.json").read_text())
    assert seeded["seed"] == 7 and seeded["recipe_args"]["seed"] == 7
    rows = sorted(p["row"] for p in json.loads((tmp_path / "learning_curve.json").read_text())["points"])
    assert rows == ["tutorial", "tutorial seed 7"]
    assert "| tutorial seed 7 |" in (tmp_path / "learning_curve.md").read_text()


def _lora_weights(adapter) -> dict:
    from safetensors.torch import load_file

    return load_file(str(adapter / "adapter_model.safetensors"))


def test_tutorial_seed_draws_the_lora_initialisation(tiny_model_dir, mini_data, tmp_path):
    from benchmarks import tutorial_baseline

    def adapter(seed, name):
        out = tmp_path / name
        tutorial_baseline.train(tiny_model_dir, mini_data / "train.jsonl", out, max_steps=1, seed=seed)
        return _lora_weights(out / "final")

    a, again, other = adapter(1, "a"), adapter(1, "again"), adapter(2, "other")
    lora_a = [k for k in a if "lora_A" in k]
    assert lora_a and set(a) == set(other)
    assert all((a[k] == again[k]).all() for k in a)  # the same seed: the same adapter
    assert any(not (a[k] == other[k]).all() for k in lora_a)  # another seed: another initialisation


def test_scoring_resumes_from_the_rows_a_stopped_run_appended(tiny_model_dir, tmp_path, monkeypatch):
    from benchmarks.scoring import predict_with_nerft
    from nerft.inference.transformers_backend import TransformersPredictor

    test = tmp_path / "test.jsonl"
    rows = [{"id": f"t{i}", "text": DOCS[i % len(DOCS)][1]} for i in range(10)]
    test.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    out = tmp_path / "pred.jsonl"
    part = tmp_path / "pred.jsonl.part"
    real, calls = TransformersPredictor.predict_detailed, []

    def stopped_after_one_chunk(self, texts, labels=None):
        calls.append(len(texts))
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(self, texts, labels)

    def counted(self, texts, labels=None):
        calls.append(len(texts))
        return real(self, texts, labels)

    def score(options, patch):
        calls.clear()
        monkeypatch.setattr(TransformersPredictor, "predict_detailed", patch)
        return predict_with_nerft(str(test), None, str(out), base=str(tiny_model_dir), batch_size=1,
                                  options=options, resume=True)

    with pytest.raises(KeyboardInterrupt):
        score({"max_new_tokens": 8}, stopped_after_one_chunk)
    assert calls == [8, 2] and not out.exists()
    # mark the 8 answered rows (the tiny model answers nothing) and leave a half-written line behind them
    marked = [{**json.loads(line), "entities": [{"start": 0, "end": 1, "label": "PER", "text": "x"}]}
              for line in part.read_text(encoding="utf-8").splitlines()]
    assert len({r["id"] for r in marked}) == 8  # the longest 8 (predict_file goes longest first)
    rest = [r["id"] for r in rows if r["id"] not in {m["id"] for m in marked}]
    part.write_text("".join(json.dumps(r) + "\n" for r in marked) + f'{{"id": "{rest[0]}", "te', encoding="utf-8")

    info = score({"max_new_tokens": 8}, counted)
    assert calls == [2]  # only the rows after the 8 complete ones
    got = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in got] == [r["id"] for r in rows]
    assert [len(r["entities"]) for r in got] == [0 if r["id"] in rest else 1 for r in got]  # 8 kept, 2 answered now
    assert info["score_s"] > 0 and not part.exists() and not (tmp_path / "pred.jsonl.part.json").exists()

    # rows answered with other options are not reused
    with pytest.raises(KeyboardInterrupt):
        score({"max_new_tokens": 8}, stopped_after_one_chunk)
    part.write_text("".join(json.dumps(r) + "\n" for r in marked), encoding="utf-8")
    score({"max_new_tokens": 16}, counted)
    assert calls == [8, 2] and all(r["entities"] == [] for r in map(json.loads, out.read_text(encoding="utf-8").splitlines()))


def test_lexicon_row_looks_up_the_first_k_documents(mini_data, tmp_path):
    """The model-free lexicon row: needs no model; a test mention is found exactly when the first K documents of
    the shuffle annotate its string (every string of this data is annotated wherever it occurs)."""
    learning_curve.main(_argv(tmp_path / "no-model-here", mini_data, tmp_path, "2,6", "lexicon"))
    d = json.loads((tmp_path / "learning_curve.json").read_text())
    train = [json.loads(line) for line in
             (tmp_path / "work" / "learning_curve" / "train.shuffled.jsonl").read_text(encoding="utf-8").splitlines()]
    gold = [e["text"] for line in (mini_data / "test.jsonl").read_text(encoding="utf-8").splitlines()
            for e in json.loads(line)["entities"]]
    assert sorted(p["k"] for p in d["points"]) == [2, 6] and {p["row"] for p in d["points"]} == {"lexicon"}
    for p in d["points"]:
        annotated = {e["text"] for doc in train[:p["k"]] for e in doc["entities"]}
        found = sum(text in annotated for text in gold)
        assert p["examples"] == p["k"] and "budget_min" not in p
        assert p["recall"] == pytest.approx(100 * found / len(gold), abs=0.01)
        assert p["precision"] == (100 if found else 0)
    assert next(p for p in d["points"] if p["k"] == 6)["f1"] == 100
    # an LLM row beside it is compared with it, K by K
    gap = learning_curve.gaps(d["points"] + [{"row": "nerft", "k": 6, "f1": 60.0}])
    assert gap == [{"row": "nerft", "k": 6, "f1": 60.0, "lexicon_f1": 100.0, "minus_lexicon": -40.0}]
