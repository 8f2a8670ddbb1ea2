"""A model's raw answer -> entities placed in the text: the one path that ``predict`` (both backends), ``serve``,
dev evaluation during ``train`` and ``evaluate`` (raw ``output`` rows) all take.

``read_answer`` parses the answer (``formats``: total, never raises; pieces written outside the expected output
format count as parse errors but their entities are kept), keeps only the labels asked for, attaches to each
mention the confidence of the answer unit that wrote it, and grounds the mentions in the text (``grounding``:
mentions that are not in the text are dropped and counted, or kept without offsets on request).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .formats import OutputFormat, get_format, parse_answer
from .grounding import ground_mentions
from .labels import LabelSet
from .schema import Document, Entity


@dataclass
class AnswerReading:
    """What one raw answer yielded once parsed and grounded in its text."""

    entities: list[Entity]
    hallucinated: int  # mentions not found in the text (dropped unless kept)
    duplicates: int  # mentions written more often than they occur
    errors: list[str]  # pieces that could not be read, or were written in another format

    @property
    def parse_ok(self) -> bool:
        return not self.errors


def read_answer(text: str, answer: str, labels: LabelSet, *, output_format: str | None = None,
                scores: Sequence[tuple[str, float]] | None = None, keep_hallucinated: bool = False,
                allowed: set[str] | None = None) -> AnswerReading:
    """Parse ``answer`` and ground its mentions in ``text``. Never raises on the answer.

    ``output_format``: the format the model was taught; pieces in another syntax are errors (entities kept).
    None reads any format without complaint. ``scores``: (unit, confidence) pairs from ``unit_scores``; each
    mention takes the score of the first unused unit that contains it. ``allowed``: label codes to keep.
    """
    parsed = get_format(output_format).parse(answer, labels) if output_format else parse_answer(answer, labels)
    mentions = [m for m in parsed.mentions if allowed is None or m.label in allowed]
    grounding = ground_mentions(text, mentions, keep_hallucinated=keep_hallucinated,
                                score_of=_mention_scores([m.text for m in mentions], scores))
    return AnswerReading(grounding.entities, len(grounding.hallucinated), len(grounding.duplicates), parsed.errors)


def _mention_scores(mentions: list[str], scores: Sequence[tuple[str, float]] | None) -> list[float | None]:
    out: list[float | None] = []
    used: set[int] = set()
    for mention in mentions:
        score = None
        for k, (unit, s) in enumerate(scores or ()):
            if k not in used and mention in unit:
                used.add(k)
                score = s
                break
        out.append(score)
    return out


def answer_units(answer: str, output_format: str | None = None) -> list[str]:
    """The entity units of an answer, as ``output_format`` splits it (None: lines, and the ``{...}`` objects of
    a line, as every shipped format does)."""
    return _format_or_any(output_format).units(answer)


_ANY_FORMAT = OutputFormat()  # the base class's units: what every shipped format writes


def _format_or_any(output_format: str | None) -> OutputFormat:
    return get_format(output_format) if output_format else _ANY_FORMAT


def unit_scores(tokenizer: Any, answer: str, token_ids: Sequence[int], logprobs: Sequence[float],
                output_format: str | None = None) -> list[tuple[str, float]]:
    """Each unit of the answer with exp(mean log-probability of the tokens that wrote it)."""
    spans, pos = [], 0  # character span of each token in the decoded answer
    for k in range(len(token_ids)):
        end = len(tokenizer.decode(token_ids[: k + 1], skip_special_tokens=True))
        spans.append((pos, end))
        pos = max(pos, end)
    return _spans_unit_scores(answer, spans, logprobs, output_format)


def piece_unit_scores(answer: str, pieces: Sequence[bytes], logprobs: Sequence[float],
                      output_format: str | None = None) -> list[tuple[str, float]]:
    """``unit_scores`` for an engine that returns each token as the bytes it wrote (an OpenAI-compatible server)
    instead of its id: a token that ends inside a multi-byte character spans up to where the character ends."""
    spans, pos, written = [], 0, b""
    for piece in pieces:
        written += piece
        end = len(written.decode("utf-8", errors="ignore"))
        spans.append((pos, end))
        pos = max(pos, end)
    return _spans_unit_scores(answer, spans, logprobs, output_format)


def _spans_unit_scores(answer: str, spans: Sequence[tuple[int, int]], logprobs: Sequence[float],
                       output_format: str | None) -> list[tuple[str, float]]:
    out, cursor = [], 0
    for unit in answer_units(answer, output_format):
        start = answer.find(unit, cursor)
        if start < 0:
            continue
        end = start + len(unit)
        cursor = end
        lps = [lp for (s, e), lp in zip(spans, logprobs, strict=False) if s < end and e > start]
        out.append((unit, math.exp(sum(lps) / len(lps)) if lps else 0.0))
    return out


def complete_prefix(answer: str, output_format: str) -> str:
    """The answer up to its last complete unit: what a truncated constrained answer keeps."""
    return get_format(output_format).complete_prefix(answer)


def score_raw_answers(gold: Sequence[Document], answers: Sequence[str], labels: LabelSet, *,
                      output_format: str | None = None, keep_hallucinated: bool = False) -> dict[str, Any]:
    """Read one raw answer per gold document and score them (the keys of :mod:`nerft.metrics`).

    With ``keep_hallucinated`` a mention that is not in the text stays a (false positive) prediction; otherwise it
    is dropped, as ``predict`` drops it, and only counted.
    """
    from .metrics import score_documents

    if len(gold) != len(answers):
        raise ValueError(f"{len(gold)} gold documents but {len(answers)} answers")
    readings = [read_answer(d.text, a, labels, output_format=output_format, keep_hallucinated=keep_hallucinated)
                for d, a in zip(gold, answers, strict=True)]
    return score_documents(
        gold, [r.entities for r in readings], labels=labels,
        parse_failures=sum(not r.parse_ok for r in readings),
        hallucinations=0 if keep_hallucinated else sum(r.hallucinated for r in readings),
        duplicates=sum(r.duplicates for r in readings),
    )
