"""Metrics on hand-computed cases: empty sides, duplicates, overlaps, ungrounded predictions."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nerft.answers import score_raw_answers
from nerft.formats import get_format
from nerft.labels import ccfbdci_labels
from nerft.metrics import (
    EntityError,
    entity_errors,
    format_table,
    partial_matches,
    prf,
    score_documents,
)
from nerft.schema import Document, Entity

LABELS = ccfbdci_labels()


def E(start, end, label, text="x"):  # noqa: N802 - reads like a literal
    return Entity(start, end, label, text)


def doc(*entities, text="0123456789" * 3):
    return Document("d", text, list(entities))


def micro(m, rule="strict"):
    x = m[rule]["micro"]
    return round(x["precision"], 4), round(x["recall"], 4), round(x["f1"], 4)


def test_prf_zero_conventions():
    assert prf(0, 0, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert prf(0, 3, 0) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert prf(1, 1, 3) == {"precision": 0.5, "recall": 0.25, "f1": pytest.approx(1 / 3)}


def test_perfect_prediction():
    gold = [doc(E(0, 2, "PER"), E(3, 5, "GPE")), doc()]
    m = score_documents(gold, [d.entities for d in gold], labels=LABELS)
    assert micro(m) == micro(m, "boundary") == micro(m, "partial") == (1.0, 1.0, 1.0)
    assert m["strict"]["macro"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["documents"] == 2 and m["documents_with_errors"] == 0 and m["exact_match"] == 1.0
    assert list(m["strict"]["per_label"]) == ["LOC", "PER", "GPE", "ORG"]
    assert m["strict"]["per_label"]["PER"]["support"] == 1 and m["strict"]["per_label"]["LOC"]["support"] == 0
    assert m["confusion"] == {"GPE": {"GPE": 1}, "PER": {"PER": 1}}


def test_empty_gold_and_empty_predictions():
    m = score_documents([doc(), doc()], [[], []])
    assert micro(m) == (0.0, 0.0, 0.0)
    assert m["strict"]["macro"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0}
    assert m["strict"]["per_label"] == {} and m["documents_with_errors"] == 0 and m["exact_match"] == 1.0
    assert score_documents([], [])["documents"] == 0


def test_empty_predictions_against_gold():
    m = score_documents([doc(E(0, 2, "PER"))], [[]])
    assert micro(m) == (0.0, 0.0, 0.0)
    assert m["strict"]["micro"]["fn"] == 1 and m["documents_with_errors"] == 1


def test_predictions_against_empty_gold():
    m = score_documents([doc()], [[E(0, 2, "PER")]])
    assert m["strict"]["micro"]["fp"] == 1 and micro(m) == (0.0, 0.0, 0.0)
    assert m["strict"]["per_label"]["PER"] == {
        "precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 1, "tp": 0, "fp": 1, "fn": 0}


def test_duplicate_prediction_counts_once():
    gold = [doc(E(0, 2, "PER"))]
    m = score_documents(gold, [[E(0, 2, "PER"), E(0, 2, "PER"), E(0, 2, "PER")]], duplicates=1)
    assert micro(m) == (1.0, 1.0, 1.0)
    assert m["duplicates"] == 3  # 2 found here + 1 dropped by grounding before scoring


def test_mixed_case_hand_computed():
    # gold: PER[0,2) GPE[3,5) ORG[6,10) LOC[12,14)
    # pred: PER[0,2) exact; ORG[3,5) right span wrong label; ORG[6,9) overlaps ORG gold; PER[20,22) spurious;
    #       an ungrounded GPE mention.
    gold = [doc(E(0, 2, "PER"), E(3, 5, "GPE"), E(6, 10, "ORG"), E(12, 14, "LOC"))]
    pred = [[E(0, 2, "PER"), E(3, 5, "ORG"), E(6, 9, "ORG"), E(20, 22, "PER"), E(None, None, "GPE", "上海")]]
    m = score_documents(gold, pred, labels=LABELS, hallucinations=2)
    # strict: tp 1, fp 4, fn 3 -> P 1/5, R 1/4
    assert m["strict"]["micro"] == {**prf(1, 4, 3), "tp": 1, "fp": 4, "fn": 3}
    # boundary: spans {0-2, 3-5} match -> tp 2; pred spans 4 + 1 ungrounded -> fp 3; gold 4 -> fn 2
    assert m["boundary"]["micro"] == {**prf(2, 3, 2), "tp": 2, "fp": 3, "fn": 2}
    # partial: PER exact + ORG overlap -> tp 2; fp 5-2 = 3; fn 4-2 = 2
    assert m["partial"]["micro"] == {**prf(2, 3, 2), "tp": 2, "fp": 3, "fn": 2}
    per = m["strict"]["per_label"]
    assert (per["PER"]["tp"], per["PER"]["fp"], per["PER"]["fn"]) == (1, 1, 0)
    assert (per["GPE"]["tp"], per["GPE"]["fp"], per["GPE"]["fn"]) == (0, 1, 1)
    assert (per["ORG"]["tp"], per["ORG"]["fp"], per["ORG"]["fn"]) == (0, 2, 1)
    assert (per["LOC"]["tp"], per["LOC"]["fp"], per["LOC"]["fn"]) == (0, 0, 1)
    assert m["strict"]["macro"]["f1"] == pytest.approx(prf(1, 1, 0)["f1"] / 4)
    assert m["confusion"] == {"GPE": {"ORG": 1}, "PER": {"PER": 1}}
    # per label under the other rules: boundary P = predictions on a gold span, R = gold spans predicted (any label)
    boundary, partial = m["boundary"]["per_label"], m["partial"]["per_label"]
    # ORG[3,5) sits on GPE's span, ORG[6,9) on none; the gold ORG[6,10) was not predicted as a span
    assert boundary["ORG"] == {"precision": 0.5, "recall": 0.0, "f1": 0.0, "support": 1, "predicted": 2}
    assert boundary["GPE"]["recall"] == 1.0 and boundary["GPE"]["precision"] == 0.0  # found as ORG; ungrounded
    assert boundary["PER"] == {**prf(1, 1, 0), "support": 1, "predicted": 2}
    assert partial["ORG"] == {**prf(1, 1, 0), "support": 1, "predicted": 2}  # ORG[6,9) overlaps ORG[6,10)
    assert partial["LOC"] == {**prf(0, 0, 1), "support": 1, "predicted": 0}
    assert list(boundary) == list(partial) == list(per)
    assert m["hallucinations"] == 3 and m["documents_with_errors"] == 1


def test_partial_matches_each_side_at_most_once():
    gold = {(0, 4, "ORG"), (5, 8, "ORG")}
    # two predictions overlapping the same gold entity: only one may match it
    assert partial_matches(gold, {(0, 2, "ORG"), (1, 3, "ORG")}) == 1
    # one prediction overlapping two gold entities: matches one of them
    assert partial_matches(gold, {(3, 6, "ORG")}) == 1
    # exact matches are taken before overlaps
    assert partial_matches(gold, {(0, 4, "ORG"), (2, 6, "ORG")}) == 2
    assert partial_matches(gold, {(0, 4, "PER")}) == 0
    assert partial_matches(set(), set()) == 0


def test_nested_gold_and_two_labels_on_one_span():
    gold = [doc(E(0, 4, "ORG"), E(0, 2, "GPE"), E(6, 8, "PER"), E(6, 8, "LOC"))]
    pred = [[E(0, 4, "ORG"), E(6, 8, "PER"), E(6, 8, "GPE")]]
    m = score_documents(gold, pred)
    assert m["strict"]["micro"]["tp"] == 2 and m["strict"]["micro"]["fn"] == 2
    assert m["boundary"]["micro"] == {**prf(2, 0, 1), "tp": 2, "fp": 0, "fn": 1}
    assert m["confusion"] == {"LOC": {"GPE": 1}, "ORG": {"ORG": 1}, "PER": {"PER": 1}}


def test_predictions_may_be_documents():
    gold = [doc(E(0, 2, "PER"))]
    assert micro(score_documents(gold, [doc(E(0, 2, "PER"))])) == (1.0, 1.0, 1.0)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError, match="1 gold documents but 0"):
        score_documents([doc()], [])


def test_format_table_lists_labels_and_averages():
    gold = [doc(E(0, 2, "PER"))]
    table = format_table(score_documents(gold, [gold[0].entities], labels=LABELS))
    assert "| PER | 1.0000 | 1.0000 | 1.0000 | 1 |" in table
    assert "**micro**" in table and "**macro**" in table and "parse failures 0" in table


spans = st.lists(
    st.tuples(st.integers(0, 8), st.integers(1, 4), st.sampled_from(["PER", "LOC"])).map(
        lambda t: E(t[0], t[0] + t[1], t[2])), max_size=5)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(spans, spans), max_size=4))
def test_metric_invariants(pairs):
    gold = [doc(*g) for g, _ in pairs]
    m = score_documents(gold, [p for _, p in pairs])
    s, b, p = (m[k]["micro"] for k in ("strict", "boundary", "partial"))
    assert s["tp"] <= p["tp"]  # an exact match is an overlap
    for x in (s, b, p):  # each figure follows from its own counts (zero when its denominator is)
        precision = x["tp"] / (x["tp"] + x["fp"]) if x["tp"] + x["fp"] else 0.0
        recall = x["tp"] / (x["tp"] + x["fn"]) if x["tp"] + x["fn"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        assert (x["precision"], x["recall"], x["f1"]) == pytest.approx((precision, recall, f1))
    assert s["tp"] + s["fn"] == sum(len(set(g)) for g, _ in pairs)
    assert s["tp"] + s["fp"] == sum(len(set(pr)) for _, pr in pairs)
    assert m["documents_with_errors"] == sum(set(g) != set(pr) for g, pr in pairs)


def test_tutorial_answer_scores_perfectly_end_to_end():
    gold = [Document("a", "南京的张三", [E(0, 2, "GPE", "南京"), E(3, 5, "PER", "张三")]), Document("b", "嗯", [])]
    answers = [get_format("tutorial").render(d.entities, LABELS) for d in gold]
    m = score_raw_answers(gold, answers, LABELS, output_format="tutorial")
    assert micro(m) == (1.0, 1.0, 1.0) and m["parse_failures"] == 0


def test_entity_errors_name_each_kind():
    gold = [(0, 2, "PER"), (3, 5, "GPE"), (6, 10, "ORG"), (12, 14, "LOC")]
    pred = [(0, 2, "PER"), (3, 5, "ORG"), (6, 9, "ORG"), (20, 22, "PER")]
    assert entity_errors(gold, pred) == [
        EntityError("wrong_label", (3, 5, "GPE"), (3, 5, "ORG")),
        EntityError("wrong_boundary", (6, 10, "ORG"), (6, 9, "ORG")),
        EntityError("missed", (12, 14, "LOC"), None),
        EntityError("spurious", None, (20, 22, "PER"))]
    # a prediction overlapping only gold entities found exactly is spurious, not a boundary error
    assert entity_errors([(0, 2, "PER")], [(0, 2, "PER"), (1, 3, "PER")]) == [
        EntityError("spurious", None, (1, 3, "PER"))]
    # two predictions inside one gold entity: both boundary errors of it, on another label too
    assert [e.kind for e in entity_errors([(0, 4, "ORG")], [(0, 2, "LOC"), (2, 4, "ORG")])] == ["wrong_boundary"] * 2
    assert entity_errors([], []) == [] and entity_errors([(0, 1, "A")], [(0, 1, "A")]) == []


spans = st.sets(st.tuples(st.integers(0, 12), st.integers(1, 4), st.sampled_from("AB")).map(
    lambda t: (t[0], t[0] + t[1], t[2])), max_size=6)


@settings(max_examples=300, deadline=None)
@given(spans, spans)
def test_entity_errors_account_for_every_strict_error(gold, pred):
    errors = entity_errors(gold, pred)
    # each false positive is the prediction of exactly one error; each false negative the gold of at least one
    assert sorted(e.pred for e in errors if e.pred) == sorted(pred - gold)
    assert {e.gold for e in errors if e.gold} == gold - pred
    assert all((e.gold is None) == (e.kind == "spurious") and (e.pred is None) == (e.kind == "missed")
               for e in errors)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.sampled_from("AB")), max_size=14),
       st.lists(st.tuples(st.integers(0, 30), st.integers(1, 8), st.sampled_from("AB")), max_size=14))
def test_errors_and_partial_matches_equal_the_scan_of_every_pair(gold, pred):
    """The indexed search (n log n, for documents of thousands of entities) finds what scanning every pair finds."""
    from nerft.metrics import EntityError, _overlap, entity_errors, partial_matches

    gold = [(s, s + n, label) for s, n, label in gold]
    pred = [(s, s + n, label) for s, n, label in pred]

    def scanned_errors(gold, pred):  # the definition, written as a scan of every pair
        gold, pred = set(gold), set(pred)
        unfound, extra = sorted(gold - pred), sorted(pred - gold)
        paired, errors = set(), []
        for p in extra:
            same = [g for g in unfound if g[:2] == p[:2]]
            over = [g for g in unfound if _overlap(g, p) > 0]
            if same:
                errors.append(EntityError("wrong_label", same[0], p))
            elif over:
                errors.append(EntityError("wrong_boundary", max(over, key=lambda g: (
                    g not in paired, _overlap(g, p), -g[0], -g[1])), p))
            else:
                errors.append(EntityError("spurious", None, p))
                continue
            paired.add(errors[-1].gold)
        errors += [EntityError("missed", g, None) for g in unfound if g not in paired]
        return sorted(errors, key=lambda e: (min(s[0] for s in (e.gold, e.pred) if s), e.kind))

    def scanned_partial(gold, pred):
        left, matched = set(gold) - set(pred), len(set(gold) & set(pred))
        for p in sorted(set(pred) - set(gold)):
            best = max((g for g in left if g[2] == p[2] and _overlap(g, p) > 0),
                       key=lambda g: (_overlap(g, p), -g[0], -g[1]), default=None)
            if best is not None:
                left.discard(best)
                matched += 1
        return matched

    assert entity_errors(gold, pred) == scanned_errors(gold, pred)
    assert partial_matches(gold, pred) == scanned_partial(gold, pred)


# ------------------------------------------------------------------------ typed scores against seqeval's strict ones


def _spans_of_length(draw, n: int) -> list[tuple[int, int, str]]:
    """Non-overlapping spans over n characters (what BIO tags can hold), random labels."""
    spans, pos = [], 0
    while pos < n:
        pos += draw(st.integers(0, 3))
        length = draw(st.integers(1, 4))
        if pos + length > n:
            break
        spans.append((pos, pos + length, draw(st.sampled_from(["PER", "LOC", "ORG"]))))
        pos += length
    return spans


@st.composite
def gold_and_predicted(draw):
    lengths = draw(st.lists(st.integers(1, 24), min_size=1, max_size=6))
    pairs = [(n, _spans_of_length(draw, n), _spans_of_length(draw, n)) for n in lengths]
    if not any(gold for _, gold, _ in pairs):  # seqeval leaves scores undefined without any gold entity
        n, _, pred = pairs[0]
        pairs[0] = (n, [(0, 1, "PER")], pred)
    return pairs


def _bio(n: int, spans: list[tuple[int, int, str]]) -> list[str]:
    tags = ["O"] * n
    for start, end, label in spans:
        tags[start:end] = [f"B-{label}"] + [f"I-{label}"] * (end - start - 1)
    return tags


@settings(max_examples=150, deadline=None)
@given(gold_and_predicted())
def test_typed_scores_equal_seqeval_strict_scores(pairs):
    """nerft's strict scores are seqeval's (strict mode, IOB2) on documents whose entities BIO can hold."""
    seqeval = pytest.importorskip("seqeval.metrics", reason="seqeval is not installed (a dev dependency)")
    from seqeval.scheme import IOB2

    from nerft.metrics import typed_scores

    texts = ["x" * n for n, _, _ in pairs]
    gold = [Document(f"d{k}", t, [E(s, e, lab, t[s:e]) for s, e, lab in g]) for k, (t, (_, g, _)) in
            enumerate(zip(texts, pairs, strict=True))]
    pred = [[E(s, e, lab, t[s:e]) for s, e, lab in p] for t, (_, _, p) in zip(texts, pairs, strict=True)]
    ours = typed_scores(gold, pred)
    y_true, y_pred = [_bio(n, g) for n, g, _ in pairs], [_bio(n, p) for n, _, p in pairs]
    report = seqeval.classification_report(y_true, y_pred, mode="strict", scheme=IOB2, output_dict=True,
                                           zero_division=0)
    theirs = report["micro avg"]
    assert (ours.precision, ours.recall, ours.f1) == pytest.approx(
        (theirs["precision"], theirs["recall"], theirs["f1-score"]), abs=1e-9)
    for label, scores in ours.per_label.items():
        if scores.support:
            mine = report[label]
            assert (scores.precision, scores.recall, scores.f1, scores.support) == pytest.approx(
                (mine["precision"], mine["recall"], mine["f1-score"], mine["support"]), abs=1e-9)
