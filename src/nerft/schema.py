"""The canonical document format and the user-facing errors.

One document a line: ``{"id": str, "text": str, "entities": [{"start", "end", "label", "text"}]}`` with Python
character offsets, ``end`` exclusive and ``text[start:end] == entity.text``. Every reader produces it, every
writer emits it (the JSONL input/output itself is :mod:`nerft.jsonl`; the atomic writes every command uses are
:mod:`nerft.fileio`). Also here: the user-facing errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any


class NerftError(Exception):
    """An error meant for the user: the message says what is wrong and how to fix it."""


class InputError(NerftError):
    """Bad input data; names the file and the line (1-based) where it is."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, problem: str):
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {problem}")


SCORE_DIGITS = 4  # a mention's score as written and as compared with a min-score: the two always agree


@dataclass(frozen=True, order=True)
class Entity:
    """A labelled span. ``start``/``end`` are None only for an ungrounded (hallucinated) mention kept on request."""

    start: int | None
    end: int | None
    label: str
    text: str
    score: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "label": self.label, "text": self.text}
        if self.score is not None:
            d["score"] = round(self.score, SCORE_DIGITS)
        return d

    @property
    def span(self) -> tuple[int | None, int | None, str]:
        return (self.start, self.end, self.label)


@dataclass
class Document:
    id: str
    text: str
    entities: list[Entity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "entities": [e.to_dict() for e in self.entities]}


def entity_from_dict(d: dict[str, Any], *, path: str | None = None, line: int | None = None) -> Entity:
    if not isinstance(d, dict):
        raise InputError(path, line, f"an entity must be an object, got {type(d).__name__}")
    missing = [k for k in ("label", "text") if k not in d]
    if missing:
        raise InputError(path, line, f"entity {d!r} lacks {', '.join(missing)}")
    start, end = d.get("start"), d.get("end")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(path, line, f"entity {name} must be an integer or null, got {value!r}")
    score = d.get("score")
    return Entity(start, end, str(d["label"]), str(d["text"]), float(score) if score is not None else None)


def document_from_dict(d: Any, *, path: str | None = None, line: int | None = None, default_id: str = "") -> Document:
    if not isinstance(d, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(d).__name__}")
    if not isinstance(d.get("text"), str):
        raise InputError(path, line, "missing or non-string field 'text'")
    ents = d.get("entities", [])
    if not isinstance(ents, list):
        raise InputError(path, line, "'entities' must be a list")
    doc_id = d.get("id", default_id)
    return Document(str(doc_id), d["text"], [entity_from_dict(e, path=path, line=line) for e in ents])


def validate_document(doc: Document, *, allow_overlaps: bool = True) -> list[str]:
    """Problems with a document's spans, as sentences. Empty when the document is valid.

    Overlapping or nested spans are reported only when ``allow_overlaps`` is False.
    """
    problems = []
    n = len(doc.text)
    for e in doc.entities:
        if e.start is None or e.end is None:
            problems.append(f"entity {e.text!r} has no offsets")
            continue
        if e.start < 0 or e.end > n:
            problems.append(f"entity {e.text!r} [{e.start}, {e.end}) is outside the text (length {n})")
        elif e.end <= e.start:
            problems.append(f"entity {e.text!r} has an empty or negative span [{e.start}, {e.end})")
        elif doc.text[e.start : e.end] != e.text:
            problems.append(
                f"entity text {e.text!r} does not match text[{e.start}:{e.end}] = {doc.text[e.start : e.end]!r}"
            )
    if not allow_overlaps:
        for a, b in find_overlaps(doc.entities):
            problems.append(f"entities {a.text!r} [{a.start}, {a.end}) and {b.text!r} [{b.start}, {b.end}) overlap")
    return problems


def find_overlaps(entities: Iterable[Entity]) -> list[tuple[Entity, Entity]]:
    """Pairs of distinct grounded spans that share at least one character (nested spans included)."""
    spans = sorted({e for e in entities if e.start is not None and e.end is not None})
    pairs = []
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if b.start >= a.end:  # type: ignore[operator]
                break
            if (a.start, a.end) != (b.start, b.end) or a.label != b.label:
                pairs.append((a, b))
    return pairs
