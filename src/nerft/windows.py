"""Long documents: split a text into overlapping windows at sentence boundaries, and merge window predictions.

Pure functions. Token counts come from a ``count_tokens(str) -> int`` callable, so the tokenizer stays outside.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .schema import Entity

SENTENCE_ENDS = "。！？!?；;\n"


@dataclass(frozen=True)
class Window:
    start: int  # character offsets into the document, end exclusive
    end: int


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """Spans of the sentences of ``text``: each ends just after a run of sentence-ending characters."""
    spans, start, i, n = [], 0, 0, len(text)
    while i < n:
        if text[i] in SENTENCE_ENDS:
            while i + 1 < n and text[i + 1] in SENTENCE_ENDS:
                i += 1
            spans.append((start, i + 1))
            start = i + 1
        i += 1
    if start < n:
        spans.append((start, n))
    return spans


def _hard_split(text: str, start: int, end: int, max_tokens: int, count_tokens: Callable[[str], int],
                overlap_tokens: int = 0) -> list[tuple[int, int]]:
    """Cut a sentence longer than the window into pieces that fit (largest prefix that fits, by bisection); each
    piece after the first starts about ``overlap_tokens`` tokens before the previous one ends (always moving on)."""
    pieces = []
    while start < end:
        lo, hi = start + 1, end
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if count_tokens(text[start:mid]) <= max_tokens:
                lo = mid
            else:
                hi = mid - 1
        pieces.append((start, lo))
        if lo >= end:
            break
        nxt = lo
        if overlap_tokens > 0:  # the earliest start past ``start`` whose text up to lo fits in overlap_tokens
            a, b = start + 1, lo
            while a < b:
                mid = (a + b) // 2
                if count_tokens(text[mid:lo]) <= overlap_tokens:
                    b = mid
                else:
                    a = mid + 1
            nxt = a
        start = nxt
    return pieces


def make_windows(text: str, max_tokens: int, count_tokens: Callable[[str], int], overlap_tokens: int = 0,
                 overlap_cuts: bool = False) -> list[Window]:
    """Windows of whole sentences, each at most ``max_tokens`` tokens, covering ``text``.

    Consecutive windows share trailing sentences worth up to ``overlap_tokens`` tokens, so an entity cut by a window
    edge is seen whole in the neighbour. A sentence longer than a window is cut into pieces: without overlap (the
    generative backends), or with ``overlap_cuts`` sharing about ``overlap_tokens`` tokens (the tagger, whose cost
    per window is its length: a mention cut there is then seen whole in the next piece).
    """
    if max_tokens < 1:
        raise ValueError("max_tokens must be at least 1")
    if not text:
        return [Window(0, 0)]
    if count_tokens(text) <= max_tokens:
        return [Window(0, len(text))]
    units: list[tuple[int, int]] = []
    for s, e in sentence_spans(text):
        units.extend([(s, e)] if count_tokens(text[s:e]) <= max_tokens else
                     _hard_split(text, s, e, max_tokens, count_tokens, overlap_tokens if overlap_cuts else 0))
    sizes = [count_tokens(text[s:e]) for s, e in units]
    windows, first = [], 0
    while first < len(units):
        last, used = first, sizes[first]
        while last + 1 < len(units) and used + sizes[last + 1] <= max_tokens and \
                units[last + 1][0] >= units[last][1] and \
                count_tokens(text[units[first][0]:units[last + 1][1]]) <= max_tokens:
            last += 1
            used += sizes[last]
        windows.append(Window(units[first][0], units[last][1]))
        if last == len(units) - 1:
            break
        # Step back over trailing sentences for the overlap, but always move forward.
        nxt, shared = last + 1, 0
        while nxt - 1 > first and shared + sizes[nxt - 1] <= overlap_tokens:
            nxt -= 1
            shared += sizes[nxt]
        first = nxt
    return windows


def owned_entities(windows: Sequence[Window], per_window: Sequence[Sequence[Entity]]) -> list[list[Entity]]:
    """Each window's entities (window offsets) that start in the part of the text it owns: where two windows
    overlap, the first owns up to the middle of the overlap and the second from there. A tagger reads every window
    whole, and a mention near a window's edge is read with less context there (or cut) than in its neighbour,
    which sees it near its middle; keeping only the owner's reading leaves ``merge_window_entities`` one reading of
    each mention. Ungrounded entities are kept."""
    bounds = [w.start for w in windows] + [windows[-1].end + 1 if windows else 0]
    for k in range(1, len(windows)):
        if windows[k].start < windows[k - 1].end:
            bounds[k] = (windows[k].start + windows[k - 1].end) // 2
    return [[e for e in entities if e.start is None or bounds[k] <= e.start + w.start < bounds[k + 1]]
            for k, (w, entities) in enumerate(zip(windows, per_window, strict=True))]


def merge_window_entities(windows: Sequence[Window], per_window: Sequence[Sequence[Entity]], text_length: int
                          ) -> list[Entity]:
    """Shift window-local entities to document offsets and merge what the overlaps found twice.

    Identical spans are kept once (the higher score). An entity touching a window's inner edge may be cut short;
    it is dropped when an overlapping entity of the same label from another window extends past it.
    Ungrounded entities (no offsets) are kept once per (label, text).
    """
    found: list[tuple[Entity, bool]] = []  # (entity in document offsets, touches an inner window edge)
    ungrounded: dict[tuple[str, str], Entity] = {}
    for win, entities in zip(windows, per_window, strict=True):
        for e in entities:
            if e.start is None or e.end is None:
                ungrounded.setdefault((e.label, e.text), e)
                continue
            s, t = e.start + win.start, e.end + win.start
            at_edge = (s == win.start and win.start > 0) or (t == win.end and win.end < text_length)
            found.append((Entity(s, t, e.label, e.text, e.score), at_edge))
    best: dict[tuple[int | None, int | None, str], tuple[Entity, bool]] = {}  # (grounded: never None)
    for e, edge in found:
        key = (e.start, e.end, e.label)
        old = best.get(key)
        if old is None:
            best[key] = (e, edge)
        else:
            keep = e if (e.score or 0.0) > (old[0].score or 0.0) else old[0]
            best[key] = (keep, edge and old[1])
    kept = []
    for e, edge in best.values():
        if edge and any(o.label == e.label and o is not e and o.start < e.end and e.start < o.end  # type: ignore[operator]
                        and (o.end - o.start) > (e.end - e.start) for o, _ in best.values()):  # type: ignore[operator]
            continue
        kept.append(e)
    kept.extend(ungrounded.values())
    return sorted(kept, key=lambda e: (e.start if e.start is not None else 1 << 30, e.end or 0, e.label))
