"""Grounding: place the mention strings a model wrote back into the source text as character spans.

Rules, in order, for each (mention, label) in the order written:
1. Candidates are the exact occurrences of the mention in the text; if there are none, occurrences after
   normalisation (NFKC: full-width/half-width, compatibility forms; case; white space ignored); if still none,
   the same with surrounding quotes/brackets stripped from the mention.
2. Occurrences already given to the same label are skipped: a mention that occurs twice and is written twice gets
   both places; written more often than it occurs, the extras are duplicates (dropped and counted).
3. Answers are written in text order (spans sorted by start, then end), so of the rest the first span at or after
   the previous mention's span (comparing (start, end)) wins, else the first one left. This reads back every
   rendered gold answer exactly, nested and overlapping spans included, unless the gold leaves an occurrence of
   a mention unannotated between the previous entity and the annotated one: a mention string cannot say which
   occurrence it means, and the first is the best guess.
A mention with no candidate is a hallucination: dropped and counted, or kept with ``start = end = None``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from .formats import Mention
from .schema import Entity

_STRIP = "\"'“”‘’「」『』《》<>()（）[]【】 "


@dataclass
class Grounding:
    entities: list[Entity] = field(default_factory=list)
    hallucinated: list[Mention] = field(default_factory=list)  # not found in the text
    duplicates: list[Mention] = field(default_factory=list)  # written more often than they occur


@lru_cache(maxsize=256)
def _normalised(text: str) -> tuple[str, tuple[int, ...]]:
    """The text normalised for matching, and for each of its characters the index of the source character."""
    chars, index = [], []
    for i, ch in enumerate(text):
        for c in unicodedata.normalize("NFKC", ch).lower():
            if c.isspace():
                continue
            chars.append(c)
            index.append(i)
    return "".join(chars), tuple(index)


def _norm_mention(mention: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKC", mention).lower() if not c.isspace())


def _find_all(haystack: str, needle: str) -> list[int]:
    out, i = [], haystack.find(needle)
    while i != -1 and needle:
        out.append(i)
        i = haystack.find(needle, i + 1)
    return out


def find_candidates(text: str, mention: str) -> list[tuple[int, int]]:
    """All spans of ``text`` that the mention can stand for, by the rules above (exact first)."""
    if not mention:
        return []
    exact = [(i, i + len(mention)) for i in _find_all(text, mention)]
    if exact:
        return exact
    for variant in (mention, mention.strip(_STRIP)):
        norm_text, index = _normalised(text)
        needle = _norm_mention(variant)
        hits = _find_all(norm_text, needle) if needle else []
        if hits:
            return [(index[i], index[i + len(needle) - 1] + 1) for i in hits]
    return []


def ground_mentions(text: str, mentions: Sequence[Mention], *, keep_hallucinated: bool = False,
                    score_of: Sequence[float | None] | None = None) -> Grounding:
    """Map each mention to a span of ``text``; see the module docstring for the rules."""
    result = Grounding()
    taken: set[tuple[int, int, str]] = set()
    previous = (0, 0)
    for k, m in enumerate(mentions):
        score = score_of[k] if score_of is not None else None
        candidates = find_candidates(text, m.text)
        if not candidates:
            result.hallucinated.append(m)
            if keep_hallucinated:
                result.entities.append(Entity(None, None, m.label, m.text, score))
            continue
        free = [span for span in candidates if (*span, m.label) not in taken]
        if not free:
            result.duplicates.append(m)
            continue
        start, end = next((span for span in free if span >= previous), free[0])
        taken.add((start, end, m.label))
        previous = (start, end)
        result.entities.append(Entity(start, end, m.label, text[start:end], score))
    result.entities.sort(key=lambda e: (e.start if e.start is not None else 1 << 30, e.end or 0, e.label))
    return result
