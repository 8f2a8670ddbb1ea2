"""Grounding: mentions back to spans; and the whole render -> parse -> ground loop on every gold document."""

from __future__ import annotations

import json
import unicodedata
from pathlib import Path

import pytest
from conftest import shared_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nerft.formats import FORMATS, Mention
from nerft.grounding import find_candidates, ground_mentions
from nerft.labels import LabelSet, ccfbdci_labels, cluener_labels
from nerft.schema import Entity

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def spans(grounding) -> list[tuple[int | None, int | None, str]]:
    return [e.span for e in grounding.entities]


# ----------------------------------------------------------------------------------------------------------------
# Hand-made cases


def test_repeated_mention_gets_each_occurrence_in_turn():
    text = "南国的风，南国的雨"
    g = ground_mentions(text, [Mention("南国", "LOC"), Mention("南国", "LOC")])
    assert spans(g) == [(0, 2, "LOC"), (5, 7, "LOC")]
    assert not g.duplicates and not g.hallucinated


def test_mention_written_more_often_than_it_occurs_is_a_duplicate():
    g = ground_mentions("北京欢迎你", [Mention("北京", "GPE")] * 3)
    assert spans(g) == [(0, 2, "GPE")]
    assert g.duplicates == [Mention("北京", "GPE")] * 2


def test_same_span_may_carry_two_labels():
    g = ground_mentions("北京欢迎你", [Mention("北京", "GPE"), Mention("北京", "LOC")])
    assert spans(g) == [(0, 2, "GPE"), (0, 2, "LOC")]


def test_text_order_picks_the_later_occurrence():
    # ORG 中国人民银行 comes first; the GPE 中国 written after it is the one after it, not the one inside it.
    text = "中国人民银行在中国"
    g = ground_mentions(text, [Mention("中国人民银行", "ORG"), Mention("中国", "GPE")])
    assert spans(g) == [(0, 6, "ORG"), (7, 9, "GPE")]


def test_nested_spans_in_text_order():
    text = "北京大学在北京"
    g = ground_mentions(text, [Mention("北京", "LOC"), Mention("北京大学", "ORG")])
    assert spans(g) == [(0, 2, "LOC"), (0, 4, "ORG")]
    g = ground_mentions("北京大学的大学生", [Mention("北京大学", "ORG"), Mention("大学", "LOC")])
    assert spans(g) == [(0, 4, "ORG"), (2, 4, "LOC")]


def test_out_of_order_answer_falls_back_to_the_first_free_occurrence():
    g = ground_mentions("张三和李四", [Mention("李四", "PER"), Mention("张三", "PER")])
    assert spans(g) == [(0, 2, "PER"), (3, 5, "PER")]


@pytest.mark.parametrize(
    ("text", "mention", "expected"),
    [
        ("菲律宾总统２号", "2号", (5, 7)),  # full-width digits in the text
        ("ＡＢＣ公司", "abc公司", (0, 5)),  # full-width + case
        ("北京 大学", "北京大学", (0, 5)),  # white space inside the text span
        ("北京大学", "北京 大学", (0, 4)),  # white space in the mention
        ("他在《红楼梦》里", "红楼梦", (3, 6)),
        ("他读红楼梦", "《红楼梦》", (2, 5)),  # brackets the text does not have
        ("说“你好”", '"你好"', (2, 4)),  # quotes written differently from the text's are stripped
    ],
)
def test_normalised_variants(text, mention, expected):
    g = ground_mentions(text, [Mention(mention, "LOC")])
    assert [(e.start, e.end) for e in g.entities] == [expected], g
    assert g.entities[0].text == text[expected[0] : expected[1]]


def test_hallucinations_dropped_or_kept():
    mentions = [Mention("上海", "GPE"), Mention("北京", "GPE")]
    g = ground_mentions("北京欢迎你", mentions)
    assert spans(g) == [(0, 2, "GPE")] and g.hallucinated == [Mention("上海", "GPE")]
    g = ground_mentions("北京欢迎你", mentions, keep_hallucinated=True, score_of=[0.5, 0.9])
    assert spans(g) == [(0, 2, "GPE"), (None, None, "GPE")]
    assert [e.score for e in g.entities] == [0.9, 0.5]
    assert g.entities[1].text == "上海"


def test_find_candidates_edge_cases():
    assert find_candidates("aaa", "aa") == [(0, 2), (1, 3)]  # overlapping occurrences
    assert find_candidates("abc", "") == []
    assert find_candidates("abc", "   ") == []
    assert find_candidates("", "a") == []


# ----------------------------------------------------------------------------------------------------------------
# Properties

texts = st.text(alphabet="北京南国张三ａｂAB 12２\n“”《》", min_size=1, max_size=20)


def _norm(s: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", s).lower() if not c.isspace())


@FAST
@given(texts, st.lists(st.text(alphabet="北京南国张三ａｂAB 12２“”《》", min_size=1, max_size=4), max_size=6))
def test_grounded_spans_slice_to_the_mention(text, mention_texts):
    g = ground_mentions(text, [Mention(m, "LOC") for m in mention_texts])
    assert len(g.entities) + len(g.hallucinated) + len(g.duplicates) == len(mention_texts)
    for e in g.entities:
        assert text[e.start : e.end] == e.text
        assert e.text in mention_texts or _norm(e.text) in {_norm(m) for m in mention_texts} | {
            _norm(m.strip("\"'“”‘’「」『』《》<>()（）[]【】 ")) for m in mention_texts
        }
    assert len(set(spans(g))) == len(g.entities)


@st.composite
def annotated_texts(draw):
    """A text over a tiny alphabet (so mentions repeat) and gold spans, nested and overlapping ones included."""
    text = draw(st.text(alphabet="ab北京\"{}:：\\,", min_size=1, max_size=14))
    n = len(text)
    gold = set()
    for _ in range(draw(st.integers(0, 4))):
        start = draw(st.integers(0, n - 1))
        end = draw(st.integers(start + 1, n))
        gold.add(Entity(start, end, draw(st.sampled_from(["LOC", "PER"])), text[start:end]))
    return text, sorted(gold)


@FAST
@given(annotated_texts(), st.sampled_from(list(FORMATS)))
def test_round_trip_is_exact_unless_gold_skips_an_occurrence(case, name):
    text, gold = case
    got = round_trip(text, gold, FORMATS[name], ccfbdci_labels())
    assert (got == {e.span for e in gold}) != skips_occurrence(text, gold)


# ----------------------------------------------------------------------------------------------------------------
# Every gold document of CCFBDCI and CLUENER


def round_trip(text: str, gold: list[Entity], fmt, labels: LabelSet) -> set:
    parsed = fmt.parse(fmt.render(gold, labels), labels)
    assert parsed.ok, parsed.errors
    return set(spans(ground_mentions(text, parsed.mentions)))


def _occurrences(text: str, mention: str) -> list[tuple[int, int]]:
    return [(i, i + len(mention)) for i in range(len(text) - len(mention) + 1) if text.startswith(mention, i)]


def skips_occurrence(text: str, gold: list[Entity]) -> bool:
    """Stated on the gold alone: walking the entities in text order, some mention also occurs at or after the
    previous entity's span and before its own span, and that occurrence is not annotated with its label."""
    ordered = sorted(set(gold), key=lambda e: (e.start, e.end, e.label))
    previous, annotated = (0, 0), set()
    for e in ordered:
        for occ in _occurrences(text, e.text):
            if previous <= occ < (e.start, e.end) and (*occ, e.label) not in annotated:
                return True
        previous = (e.start, e.end)
        annotated.add(e.span)
    return False


def earlier_occurrence_unannotated(text: str, gold: list[Entity]) -> bool:
    """The looser reading: an earlier occurrence of a gold mention carries no gold entity with its label."""
    annotated = {e.span for e in gold}
    return any(
        occ[0] < e.start and (*occ, e.label) not in annotated for e in gold for occ in _occurrences(text, e.text)
    )


def load_ccfbdci(path: Path) -> list[tuple[str, list[Entity]]]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            gold = [Entity(e["start_idx"], e["end_idx"], e["entity_label"], e["entity_text"]) for e in d["entities"]]
            docs.append((d["text"], gold))
    return docs


def load_cluener(path: Path) -> list[tuple[str, list[Entity]]]:
    """Concatenated pretty-printed JSON objects; spans are [start, END_INCLUSIVE]."""
    raw, decoder, pos, docs = path.read_text(encoding="utf-8"), json.JSONDecoder(), 0, []
    while True:
        while pos < len(raw) and raw[pos].isspace():
            pos += 1
        if pos >= len(raw):
            return docs
        obj, pos = decoder.raw_decode(raw, pos)
        gold = [
            Entity(s, e + 1, label, mention)
            for label, by_mention in (obj.get("label") or {}).items()
            for mention, places in by_mention.items()
            for s, e in places
        ]
        docs.append((obj["text"], gold))


def check_corpus(docs, labels: LabelSet) -> dict[str, int]:
    for text, gold in docs:
        assert all(text[e.start : e.end] == e.text for e in gold)
    expected_failures = {i for i, (text, gold) in enumerate(docs) if skips_occurrence(text, gold)}
    looser = {i for i, (text, gold) in enumerate(docs) if earlier_occurrence_unannotated(text, gold)}
    assert expected_failures <= looser
    for fmt in FORMATS.values():
        failures = {i for i, (text, gold) in enumerate(docs) if round_trip(text, gold, fmt, labels) != {
            e.span for e in gold}}
        assert failures == expected_failures, (fmt.name, sorted(failures ^ expected_failures)[:10])
    return {"documents": len(docs), "skips_occurrence": len(expected_failures), "earlier_unannotated": len(looser)}


@pytest.mark.shared
def test_round_trip_every_ccfbdci_document():
    counts = check_corpus(load_ccfbdci(shared_path("data", "ccfbdci", "ccfbdci.jsonl")), ccfbdci_labels())
    print(f"\nCCFBDCI round trip: {counts}")
    # 70 of 15,724 documents leave an occurrence between two entities unannotated (the earlier rule, "first
    # occurrence at or after the previous start", lost 117); 211 leave some earlier occurrence unannotated.
    assert counts["documents"] == 15_724
    assert counts["skips_occurrence"] == 70
    assert counts["earlier_unannotated"] == 211


@pytest.mark.shared
def test_round_trip_every_cluener_document():
    docs = load_cluener(shared_path("data", "cluener", "train.json")) + load_cluener(
        shared_path("data", "cluener", "dev.json"))
    counts = check_corpus(docs, cluener_labels())
    print(f"\nCLUENER round trip: {counts}")
    assert counts["documents"] == 10_748 + 1_343
    assert counts["skips_occurrence"] == 90  # the earlier rule lost 167
