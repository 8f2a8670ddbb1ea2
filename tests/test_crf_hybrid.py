"""experiments/crf_hybrid.py: the rule that combines nerft's and the CRF's mentions, and the benchmark end to end on
a hand-written split (the CRF part only where python-crfsuite is installed, a benchmark extra)."""

from __future__ import annotations

import json
import sys

import pytest
from bench_fixtures import has_crfsuite, write_mini_data
from conftest import REPO

from nerft.schema import Document, Entity

sys.path.insert(0, str(REPO))

from benchmarks import crf_baseline  # noqa: E402
from experiments import crf_hybrid  # noqa: E402

TEXT = "张三在北京和黄山工作。"


def spans(entities):
    return [(e.start, e.end, e.label) for e in entities]


def test_agreed_mentions_are_kept_whatever_their_confidence():
    model = [Entity(0, 2, "PER", "张三", 0.1)]
    crf = [Entity(0, 2, "PER", "张三", 0.2)]
    never = crf_hybrid.NEVER
    assert spans(crf_hybrid.combine(model, crf, never, never)) == [(0, 2, "PER")]
    # the same span under another label is not agreement: each stands alone
    assert crf_hybrid.combine(model, [Entity(0, 2, "ORG", "张三", 0.2)], never, never) == []


def test_lone_mentions_need_their_own_system_threshold():
    model = [Entity(3, 5, "GPE", "北京", 0.9)]
    crf = [Entity(6, 8, "LOC", "黄山", 0.7)]
    assert spans(crf_hybrid.combine(model, crf, 0.7, 0.9)) == [(3, 5, "GPE"), (6, 8, "LOC")]
    assert spans(crf_hybrid.combine(model, crf, 0.71, 0.9)) == [(3, 5, "GPE")]
    assert spans(crf_hybrid.combine(model, crf, 0.7, 0.91)) == [(6, 8, "LOC")]
    # a model mention without a score (a server without log-probabilities) counts as sure
    assert spans(crf_hybrid.combine([Entity(3, 5, "GPE", "北京")], [], 1.0, 1.0)) == [(3, 5, "GPE")]


def test_overlaps_go_to_agreement_first_then_to_confidence():
    agreed = Entity(3, 5, "GPE", "北京", 0.5)
    model = [agreed, Entity(6, 8, "GPE", "黄山", 0.6)]
    crf = [Entity(3, 5, "GPE", "北京", 0.5), Entity(2, 4, "LOC", "在北", 0.99), Entity(6, 8, "LOC", "黄山", 0.8)]
    out = crf_hybrid.combine(model, crf, 0.0, 0.0)
    assert spans(out) == [(3, 5, "GPE"), (6, 8, "LOC")]  # 在北 loses to the agreed 北京; 黄山: the surer label
    assert all(e.text == TEXT[e.start:e.end] for e in out)


def test_union_recall_counts_gold_mentions_either_system_gives():
    gold = [Document("a", TEXT, [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京"),
                                 Entity(6, 8, "LOC", "黄山")])]
    first, second = [[Entity(0, 2, "PER", "张三")]], [[Entity(6, 8, "GPE", "黄山"), Entity(0, 2, "PER", "张三")]]
    assert crf_hybrid.union_recall(gold, first, second) == pytest.approx(100 / 3, abs=0.01)
    assert crf_hybrid.union_recall([Document("b", "嗯", [])], [[]]) == 0.0


DOCS = [
    ("d1", "张三在北京工作。", [(0, 2, "PER"), (3, 5, "GPE")]),
    ("d2", "李四去了黄山。", [(0, 2, "PER"), (4, 6, "LOC")]),
    ("d3", "联合国总部在纽约。", [(0, 3, "ORG"), (6, 8, "GPE")]),
    ("d4", "张三去了纽约。", [(0, 2, "PER"), (4, 6, "GPE")]),
]


@pytest.mark.skipif(not has_crfsuite(), reason="python-crfsuite is a benchmark extra (pip install -e .[bench])")
def test_crf_hybrid_main_chooses_on_dev_and_scores_test(tmp_path):
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    gold = [json.loads(line) for line in (data / "train.jsonl").read_text(encoding="utf-8").splitlines()]
    # the model's answers: right on persons, wrong label on places (GPE for 黄山); one low-scored spurious mention
    def answers(docs):
        rows = []
        for d in docs:
            ents = [dict(e, label="GPE" if e["label"] == "LOC" else e["label"], score=0.9) for e in d["entities"]]
            rows.append({"id": d["id"], "text": d["text"], "entities": ents + [
                {"start": len(d["text"]) - 1, "end": len(d["text"]), "label": "ORG", "text": d["text"][-1],
                 "score": 0.3}]})
        return rows

    tune = tmp_path / "tune"
    tune.mkdir()
    (tune / "dev-answers.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in answers(gold)),
                                            encoding="utf-8")
    (tune / "decoding.yaml").write_text("min_score: 0.5\n", encoding="utf-8")
    test_answers = tmp_path / "pred.jsonl"
    test_answers.write_text((tune / "dev-answers.jsonl").read_text(encoding="utf-8"), encoding="utf-8")
    crf_hybrid.main(["--tune", str(tune), "--dev", str(data / "train.jsonl"), "--test-answers", str(test_answers),
                     "--test", str(data / "train.jsonl"), "--train", str(data / "train.jsonl"), "--iterations", "30",
                     "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work")])
    d = json.loads((tmp_path / "results" / "crf_hybrid.json").read_text(encoding="utf-8"))
    assert d["chosen"]["dev_f1"] == max(g["dev_f1"] for g in d["grid"]) and len(d["grid"]) == len(crf_hybrid.GRID) ** 2
    rows = {r["system"].split(" (")[0].split(",")[0]: r for r in d["rows"]}
    # nerft's tuned answers: the spurious ORGs dropped by min_score 0.5 (else P 7/12), 黄山 wrong: 7 of 8 right
    assert rows["nerft"]["precision"] == 87.5 and rows["nerft"]["recall"] == 87.5
    assert rows["combined"]["f1"] >= max(rows["nerft"]["f1"], rows["character CRF"]["f1"]) - 1e-9  # dev = test here
    assert 87.5 <= d["union_recall"] <= 100
    assert "| nerft, tuned decoding |" in (tmp_path / "results" / "crf_hybrid.md").read_text(encoding="utf-8")
    assert [p.suffix for p in (tmp_path / "work").iterdir()] == [".crfsuite"]  # the model, no .part left


@pytest.mark.skipif(not has_crfsuite(), reason="python-crfsuite is a benchmark extra (pip install -e .[bench])")
def test_crf_spans_carry_the_lowest_marginal_of_their_tags(tmp_path):
    (tmp_path / "data").mkdir()
    data = write_mini_data(tmp_path / "data", DOCS)
    model = tmp_path / "crf.crfsuite"
    crf_baseline.train_crf(data / "train.jsonl", model, iterations=30)
    import pycrfsuite

    tagger = pycrfsuite.Tagger()
    tagger.open(str(model))
    found = crf_baseline.tag_spans(tagger, "张三在北京工作。")
    tags = tagger.tag(crf_baseline.char_features("张三在北京工作。"))
    assert [(e["start"], e["end"], e["label"]) for e in found] == [
        (e["start"], e["end"], e["label"]) for e in crf_baseline.spans_from_bio("张三在北京工作。", tags)]
    for e in found:
        assert e["score"] == round(min(tagger.marginal(tags[i], i) for i in range(e["start"], e["end"])), 4)
        assert 0 < e["score"] <= 1
    assert crf_baseline.tag_spans(tagger, "") == []
