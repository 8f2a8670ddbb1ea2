"""Scoring predicted entities against gold: pure functions, used by ``evaluate`` and by ``train`` (dev F1).

Three matching rules, each giving precision, recall and F1:
- ``strict``: same span and same label;
- ``boundary``: same span, any label (a span carrying two labels counts once);
- ``partial``: overlapping spans with the same label, each gold and each predicted entity used at most once
  (exact matches first, then the largest overlap).

Conventions (those of scikit-learn's ``zero_division=0``): precision is 0 when nothing was predicted, recall is 0
when there is no gold entity, F1 is 0 when precision + recall is 0. So a corpus with no gold and no predicted
entity scores 0 everywhere rather than dividing by zero; look at ``documents_with_errors`` (0 there) to tell a
perfect empty answer from a poor one.

Within a document a prediction written twice (same span and label) counts once and is reported in
``duplicates``. A prediction without offsets (an ungrounded, hallucinated mention kept on request) matches
nothing: it is a false positive under every rule and is counted in ``hallucinations``.

The result is a plain dict (JSON-ready); other tools read these keys:
``strict.micro.{precision,recall,f1,tp,fp,fn}``, ``strict.macro.{precision,recall,f1}``,
``strict.per_label.<LABEL>.{precision,recall,f1,support,predicted,tp,fp,fn}``, the same under ``boundary.micro``
and ``partial.micro``, and ``parse_failures``, ``hallucinations``, ``duplicates``, ``documents``,
``documents_with_errors``, ``exact_match`` (share of documents predicted exactly) and ``confusion``
(``{gold label: {predicted label: count}}`` over spans whose boundaries match).
``boundary.per_label.<LABEL>`` and ``partial.per_label.<LABEL>`` hold ``{precision,recall,f1,support,predicted}``:
under ``boundary`` precision is the share of the label's predictions whose span is a gold span (of any label) and
recall the share of its gold entities whose span was predicted (with any label); under ``partial`` both count the
label's partial matches.

``entity_errors`` names each strict error of a document by its kind (missed, spurious, wrong label, wrong
boundary), for the error report that ``evaluate`` writes.
"""

from __future__ import annotations

import bisect
import itertools
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .labels import LabelSet
from .schema import Document, Entity

Span = tuple[int, int, str]


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    """Precision, recall and F1 from counts, with the zero conventions of the module docstring."""
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": precision, "recall": recall, "f1": f1}


@dataclass
class _Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, tp: int, fp: int, fn: int) -> None:
        self.tp += tp
        self.fp += fp
        self.fn += fn

    def summary(self) -> dict[str, Any]:
        return {**prf(self.tp, self.fp, self.fn), "tp": self.tp, "fp": self.fp, "fn": self.fn}


def _overlap(a: Span, b: Span) -> int:
    return min(a[1], b[1]) - max(a[0], b[0])


class _SpanIndex:
    """Spans sorted by start, with the furthest end reached so far: the spans overlapping a given one are found by
    bisection and a walk back that stops where nothing earlier can reach it (a document of thousands of entities
    costs n log n, not n^2)."""

    def __init__(self, spans: Iterable[Span]):
        self.spans = sorted(spans)
        self.starts = [g[0] for g in self.spans]
        self.reach = list(itertools.accumulate((g[1] for g in self.spans), max))

    def overlapping(self, p: Span) -> list[Span]:
        """The spans that overlap ``p``, in sorted order."""
        found = []
        i = bisect.bisect_left(self.starts, p[1]) - 1  # the last span starting before p ends
        while i >= 0 and self.reach[i] > p[0]:
            if self.spans[i][1] > p[0]:
                found.append(self.spans[i])
            i -= 1
        return found[::-1]


def partial_matches(gold: Iterable[Span], pred: Iterable[Span]) -> int:
    """How many (gold, pred) pairs with the same label and overlapping spans can be matched, each used once.

    Exact matches are taken first, then, for each prediction in text order, the unused gold entity it overlaps
    most (ties: the earliest).
    """
    gold_left = set(gold) - set(pred)
    matched = len(set(gold) & set(pred))
    index = _SpanIndex(gold_left)
    for p in sorted(set(pred) - set(gold)):
        best = max(
            (g for g in index.overlapping(p) if g in gold_left and g[2] == p[2]),
            key=lambda g: (_overlap(g, p), -g[0], -g[1]),
            default=None,
        )
        if best is not None:
            gold_left.discard(best)
            matched += 1
    return matched


def _confusion_pairs(gold: set[Span], pred: set[Span]) -> list[tuple[str, str]]:
    """(gold label, predicted label) for each span that both sides have; equal labels pair up first."""
    by_span_gold: dict[tuple[int, int], list[str]] = defaultdict(list)
    by_span_pred: dict[tuple[int, int], list[str]] = defaultdict(list)
    for s, e, label in gold:
        by_span_gold[(s, e)].append(label)
    for s, e, label in pred:
        by_span_pred[(s, e)].append(label)
    pairs = []
    for span in sorted(by_span_gold.keys() & by_span_pred.keys()):
        g, p = sorted(by_span_gold[span]), sorted(by_span_pred[span])
        same = sorted(set(g) & set(p))
        pairs += [(label, label) for label in same]
        pairs += list(zip([x for x in g if x not in same], [x for x in p if x not in same], strict=False))
    return pairs


def score_documents(
    gold: Sequence[Document],
    pred: Sequence[Sequence[Entity] | Document],
    *,
    labels: LabelSet | Sequence[str] | None = None,
    parse_failures: int = 0,
    hallucinations: int = 0,
    duplicates: int = 0,
) -> dict[str, Any]:
    """Score ``pred[i]`` against ``gold[i].entities`` for every document; see the module docstring for the keys.

    ``parse_failures``, ``hallucinations`` and ``duplicates`` are what happened before scoring (answers that did
    not parse cleanly, mentions that grounding dropped because they are not in the text or were written more
    often than they occur); they are added to what the scorer itself finds in ``pred``. ``labels`` fixes the
    order of ``per_label`` and adds labels that neither side used; ``macro`` averages over the labels that occur
    in the gold or in the predictions (a label nobody used would only add a meaningless 0).
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold documents but {len(pred)} predictions")
    strict: dict[str, _Counts] = defaultdict(_Counts)
    strict_all, boundary, partial = _Counts(), _Counts(), _Counts()
    by_label: dict[str, Counter[str]] = defaultdict(Counter)  # boundary and partial per label
    confusion: dict[str, Counter[str]] = defaultdict(Counter)
    support: Counter[str] = Counter()
    documents_with_errors = 0
    for doc, predicted in zip(gold, pred, strict=True):
        if isinstance(predicted, Document):  # predictions as documents (as ``train`` keeps them) are fine too
            predicted = predicted.entities
        gold_spans = {(e.start, e.end, e.label) for e in doc.entities if e.start is not None and e.end is not None}
        grounded = [(e.start, e.end, e.label) for e in predicted if e.start is not None and e.end is not None]
        ungrounded = [e for e in predicted if e.start is None or e.end is None]
        pred_spans = set(grounded)
        duplicates += len(grounded) - len(pred_spans)
        hallucinations += len(ungrounded)

        for label in {s[2] for s in gold_spans | pred_spans} | {e.label for e in ungrounded}:
            g = {s for s in gold_spans if s[2] == label}
            p = {s for s in pred_spans if s[2] == label}
            extra = sum(e.label == label for e in ungrounded)
            strict[label].add(len(g & p), len(p - g) + extra, len(g - p))
            support[label] += len(g)
        tp = len(gold_spans & pred_spans)
        strict_all.add(tp, len(pred_spans) - tp + len(ungrounded), len(gold_spans) - tp)
        if tp != len(gold_spans) or tp != len(pred_spans) or ungrounded:
            documents_with_errors += 1

        gold_bounds, pred_bounds = {s[:2] for s in gold_spans}, {s[:2] for s in pred_spans}
        btp = len(gold_bounds & pred_bounds)
        boundary.add(btp, len(pred_bounds) - btp + len(ungrounded), len(gold_bounds) - btp)

        ptp = partial_matches(gold_spans, pred_spans)
        partial.add(ptp, len(pred_spans) - ptp + len(ungrounded), len(gold_spans) - ptp)
        _count_per_label(by_label, gold_spans, pred_spans, gold_bounds, pred_bounds, ungrounded)

        for g_label, p_label in _confusion_pairs(gold_spans, pred_spans):
            confusion[g_label][p_label] += 1

    order = list(labels.codes if isinstance(labels, LabelSet) else labels or [])
    order += sorted(set(strict) - set(order))
    per_label = {
        label: {**prf(c.tp, c.fp, c.fn), "support": support[label], "predicted": c.tp + c.fp,
                "tp": c.tp, "fp": c.fp, "fn": c.fn}
        for label in order
        for c in [strict.get(label, _Counts())]
    }
    used = [label for label in order if label in strict]
    macro = {k: sum(per_label[label][k] for label in used) / len(used) if used else 0.0
             for k in ("precision", "recall", "f1")}
    n = len(gold)
    return {
        "strict": {"micro": strict_all.summary(), "macro": macro, "per_label": per_label},
        "boundary": {"micro": boundary.summary(), "per_label": _rule_per_label(by_label, order, "boundary")},
        "partial": {"micro": partial.summary(), "per_label": _rule_per_label(by_label, order, "partial")},
        "documents": n,
        "documents_with_errors": documents_with_errors,
        "exact_match": (n - documents_with_errors) / n if n else 0.0,
        "parse_failures": parse_failures,
        "hallucinations": hallucinations,
        "duplicates": duplicates,
        "confusion": {g: dict(sorted(row.items())) for g, row in sorted(confusion.items())},
    }


def _count_per_label(counts: dict[str, Counter[str]], gold: set[Span], pred: set[Span],
                     gold_bounds: set[tuple[int, int]], pred_bounds: set[tuple[int, int]],
                     ungrounded: list[Entity]) -> None:
    """One document's boundary and partial counts per label into ``counts[label]``."""
    for label in {s[2] for s in gold | pred} | {e.label for e in ungrounded}:
        g = {s for s in gold if s[2] == label}
        p = {s for s in pred if s[2] == label}
        c = counts[label]
        c["support"] += len(g)
        c["predicted"] += len(p) + sum(e.label == label for e in ungrounded)
        c["boundary_found"] += sum(s[:2] in pred_bounds for s in g)
        c["boundary_right"] += sum(s[:2] in gold_bounds for s in p)
        c["partial"] += partial_matches(g, p)


def _rule_per_label(counts: dict[str, Counter[str]], order: Sequence[str], rule: str) -> dict[str, dict[str, Any]]:
    out = {}
    for label in order:
        c = counts.get(label, Counter())
        right, found = (c["boundary_right"], c["boundary_found"]) if rule == "boundary" else (c["partial"],) * 2
        precision = right / c["predicted"] if c["predicted"] else 0.0
        recall = found / c["support"] if c["support"] else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[label] = {"precision": precision, "recall": recall, "f1": f1, "support": c["support"],
                      "predicted": c["predicted"]}
    return out


ERROR_KINDS = ("missed", "spurious", "wrong_label", "wrong_boundary")


@dataclass(frozen=True)
class EntityError:
    """One strict error: ``gold`` is None for a spurious entity, ``pred`` None for a missed one."""

    kind: str
    gold: Span | None
    pred: Span | None


def entity_errors(gold: Iterable[Span], pred: Iterable[Span]) -> list[EntityError]:
    """The strict errors of one document, each of one kind, in text order:

    - ``wrong_label``: a prediction on exactly the span of a gold entity it did not find, with another label;
    - ``wrong_boundary``: a prediction that overlaps a gold entity not found exactly, on another span (any label;
      paired with the gold entity it overlaps most, one not paired yet first);
    - ``spurious``: a prediction that overlaps no gold entity left unfound;
    - ``missed``: a gold entity that no prediction found exactly and none of the above is paired with.

    So every strict false positive is one wrong label, wrong boundary or spurious error, and every false negative
    one missed error or the gold side of a wrong label or wrong boundary (a gold entity may be that of several).
    """
    gold, pred = set(gold), set(pred)
    unfound, extra = sorted(gold - pred), sorted(pred - gold)
    paired: set[Span] = set()
    errors = []
    by_span: dict[tuple[int, int], list[Span]] = {}
    for g in unfound:
        by_span.setdefault((g[0], g[1]), []).append(g)
    index = _SpanIndex(unfound)
    for p in extra:
        same_span = by_span.get((p[0], p[1]), [])
        overlapping = index.overlapping(p)
        if same_span:
            errors.append(EntityError("wrong_label", same_span[0], p))
        elif overlapping:
            best = max(overlapping, key=lambda g: (g not in paired, _overlap(g, p), -g[0], -g[1]))
            errors.append(EntityError("wrong_boundary", best, p))
        else:
            errors.append(EntityError("spurious", None, p))
            continue
        paired.add(errors[-1].gold)  # type: ignore[arg-type]
    errors += [EntityError("missed", g, None) for g in unfound if g not in paired]
    return sorted(errors, key=lambda e: (min(s[0] for s in (e.gold, e.pred) if s), e.kind))


def format_table(metrics: dict[str, Any]) -> str:
    """A markdown table: one row per label (P/R/F1/support), then micro and macro, then the error counts."""
    rows = ["| label | precision | recall | f1 | support |", "|---|---:|---:|---:|---:|"]
    strict = metrics["strict"]
    for label, m in strict["per_label"].items():
        rows.append(f"| {label} | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {m['support']} |")
    total = sum(m["support"] for m in strict["per_label"].values())
    for name, m in (("micro", strict["micro"]), ("macro", strict["macro"])):
        rows.append(f"| **{name}** | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {total} |")
    for rule in ("boundary", "partial"):
        m = metrics[rule]["micro"]
        rows.append(f"| {rule} (micro) | {m['precision']:.4f} | {m['recall']:.4f} | {m['f1']:.4f} | {total} |")
    counts = ", ".join(f"{k.replace('_', ' ')} {metrics[k]}" for k in
                       ("documents", "documents_with_errors", "parse_failures", "hallucinations", "duplicates"))
    return "\n".join(rows) + f"\n\n{counts}"


@dataclass(frozen=True)
class LabelScores:
    """Strict scores of one label (precision, recall, F1 in [0, 1]; ``support``: gold entities)."""

    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class Scores:
    """Strict micro scores (same span and label) in [0, 1], per label, and the looser rules' micro F1:
    ``boundary`` (same span, any label) and ``partial`` (overlapping span, same label)."""

    precision: float
    recall: float
    f1: float
    per_label: dict[str, LabelScores] = field(default_factory=dict)
    macro_f1: float = 0.0
    boundary_f1: float = 0.0
    partial_f1: float = 0.0
    documents: int = 0


def typed_scores(gold: Sequence[Document], predictions: Sequence[Document | Sequence[Entity]],
                 labels: Sequence[str] | None = None) -> Scores:
    """Score ``predictions[i]`` (a document or its entities) against ``gold[i]``, as ``nerft evaluate`` does."""
    result = score_documents(gold, predictions, labels=list(labels) if labels is not None else None)
    strict = result["strict"]
    return Scores(strict["micro"]["precision"], strict["micro"]["recall"], strict["micro"]["f1"],
                  {label: LabelScores(d["precision"], d["recall"], d["f1"], d["support"])
                   for label, d in strict["per_label"].items()},
                  strict["macro"]["f1"], result["boundary"]["micro"]["f1"], result["partial"]["micro"]["f1"],
                  result["documents"])
