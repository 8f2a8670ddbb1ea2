"""answers.read_answer: the one path from a raw answer to grounded entities (predict, serve, dev eval, evaluate)."""

from __future__ import annotations

import pytest

from nerft.answers import answer_units, complete_prefix, read_answer, score_raw_answers
from nerft.labels import ccfbdci_labels
from nerft.metrics import prf
from nerft.schema import Document, Entity

LABELS = ccfbdci_labels()
TEXT = "张三去北京，张三"


def test_entities_hallucinations_and_duplicates():
    reading = read_answer(TEXT, "人名:张三\n地理实体:北京\n人名:李四\n人名:张三", LABELS, output_format="compact")
    assert [e.span for e in reading.entities] == [(0, 2, "PER"), (3, 5, "GPE"), (6, 8, "PER")]
    assert reading.hallucinated == 1 and reading.duplicates == 0 and reading.parse_ok
    kept = read_answer(TEXT, "人名:李四\n人名:张三\n人名:张三\n人名:张三", LABELS, keep_hallucinated=True)
    assert kept.duplicates == 1 and kept.hallucinated == 1
    assert [e.span for e in kept.entities] == [(0, 2, "PER"), (6, 8, "PER"), (None, None, "PER")]


def test_a_truncated_answer_is_a_parse_failure():
    reading = read_answer(TEXT, '{"entity_text": "张三", "entity_la', LABELS, output_format="tutorial")
    assert reading.entities == [] and reading.hallucinated == 0 and not reading.parse_ok


@pytest.mark.parametrize("fmt, answer", [
    ("compact", '{"entity_text": "张三", "entity_label": "人名"}'),
    ("jsonl", "人名:张三"),
    ("tutorial", "人名:张三"),
])
def test_pieces_in_another_format_are_read_but_counted(fmt, answer):
    strict = read_answer(TEXT, answer, LABELS, output_format=fmt)
    lenient = read_answer(TEXT, answer, LABELS)
    assert [e.span for e in strict.entities] == [e.span for e in lenient.entities] == [(0, 2, "PER")]
    assert not strict.parse_ok and "not in the" in strict.errors[-1]
    assert lenient.parse_ok


def test_the_taught_format_parses_clean():
    for fmt, answer in (("compact", "人名:张三"), ("jsonl", '{"entity_text": "张三", "entity_label": "人名"}'),
                        ("tutorial", '{"entity_text": "张三", "entity_label": "人名"}'), ("tutorial", "没有找到任何实体")):
        assert read_answer(TEXT, answer, LABELS, output_format=fmt).parse_ok, (fmt, answer)


def test_allowed_labels_and_unit_scores():
    answer = "人名:张三\n地理实体:北京"
    only_gpe = read_answer(TEXT, answer, LABELS, allowed={"GPE"})
    assert [e.label for e in only_gpe.entities] == ["GPE"]
    scored = read_answer(TEXT, answer, LABELS, scores=[("人名:张三", 0.9), ("地理实体:北京", 0.4)])
    assert [(e.text, e.score) for e in scored.entities] == [("张三", 0.9), ("北京", 0.4)]


def test_units_and_complete_prefix():
    assert answer_units('{"a": 1}{"b": 2}\nx:y\n') == ['{"a": 1}', '{"b": 2}', "x:y"]
    assert complete_prefix("人名:张三\n地理实体:北", "compact") == "人名:张三"
    assert complete_prefix('{"entity_text": "张三"}{"entity_te', "tutorial") == '{"entity_text": "张三"}'


def test_score_raw_answers_counts_everything():
    gold = [Document("a", "张三去北京", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")]),
            Document("b", "嗯。", [])]
    answers = ["人名:张三\n人名:李四\n人名:张三", "胡言乱语"]
    m = score_raw_answers(gold, answers, LABELS, output_format="compact")
    assert m["parse_failures"] == 1 and m["hallucinations"] == 1 and m["duplicates"] == 1
    assert m["strict"]["micro"] == {**prf(1, 0, 1), "tp": 1, "fp": 0, "fn": 1}
    kept = score_raw_answers(gold, answers, LABELS, output_format="compact", keep_hallucinated=True)
    assert kept["hallucinations"] == 1 and kept["strict"]["micro"]["fp"] == 1
    with pytest.raises(ValueError, match="2 gold documents but 1"):
        score_raw_answers(gold, answers[:1], LABELS)
