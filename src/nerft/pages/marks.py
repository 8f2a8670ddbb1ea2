"""Text with its entities marked: spans -> pieces -> escaped HTML. Pure functions; the pages' script
(``assets/marks.js``) cuts a text the same way in the browser, and a browser test holds the two to each other.

A text is cut at every span boundary into pieces; each piece lists the spans that cover it (outermost first), so
overlapping and nested spans need no nesting of elements, and the pieces joined give the text back exactly.
Offsets are Python characters (code points), as everywhere in nerft. A boundary never separates a character from
the marks that combine with it (accents, a variation selector, a zero-width joiner and what it joins, skin-tone
modifiers): a span ending before such a mark is shown to its end, one starting on it from its base character. Only
the display widens; the entity keeps its offsets. Spans without offsets, empty or outside the text are left out
(``placeable`` tells which).
"""

from __future__ import annotations

import html
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass

COLOUR_CLASSES = 12  # base.css's .c0 ... .c11: label k of a set is drawn in colour k % 12
_JOINERS = frozenset("\u200d\u034f")  # zero-width joiner (binds the next character too), grapheme joiner
_SURROGATE = re.compile("[\ud800-\udfff]")


@dataclass(frozen=True)
class Span:
    start: int | None
    end: int | None
    label: str
    score: float | None = None


@dataclass(frozen=True)
class Piece:
    start: int
    end: int
    text: str
    covering: tuple[int, ...]  # indices into the spans given, outermost (longest, then earliest) first
    closing: tuple[int, ...]  # spans whose last piece this is, innermost first (their tags follow the piece)


def _binds(ch: str) -> bool:
    """Whether ``ch`` belongs to the character before it (a combining mark, a variation selector, a modifier)."""
    return (unicodedata.category(ch).startswith("M") or ch in _JOINERS or "\ufe00" <= ch <= "\ufe0f"
            or "\U0001f3fb" <= ch <= "\U0001f3ff" or "\U000e0100" <= ch <= "\U000e01ef")


def cluster_end(text: str, i: int) -> int:
    """The first index at or after ``i`` where a new character (with its combining marks) starts."""
    while 0 < i < len(text) and (_binds(text[i]) or text[i - 1] == "\u200d"):
        i += 1
    return i


def cluster_start(text: str, i: int) -> int:
    """The start of the character whose marks ``text[i]`` may be (``i`` itself when it is a base character)."""
    while 0 < i < len(text) and (_binds(text[i]) or text[i - 1] == "\u200d"):
        i -= 1
    return i


def placeable(span: Span, length: int) -> bool:
    return span.start is not None and span.end is not None and 0 <= span.start < span.end <= length


def pieces(text: str, spans: Sequence[Span]) -> list[Piece]:
    """``text`` cut at the (widened) boundaries of ``spans``; see the module docstring."""
    shown = {k: (cluster_start(text, s.start), cluster_end(text, s.end))  # type: ignore[arg-type]
             for k, s in enumerate(spans) if placeable(s, len(text))}
    cuts = sorted({0, len(text), *(b for pair in shown.values() for b in pair)})
    rank = {k: r for r, k in enumerate(sorted(shown, key=lambda k: (-(shown[k][1] - shown[k][0]), shown[k][0], k)))}
    starting: dict[int, list[int]] = {}
    for k, (a, _) in shown.items():
        starting.setdefault(a, []).append(k)
    active: set[int] = set()  # the spans over the current piece: one sweep over the cuts, not a scan per piece
    out = []
    for a, b in zip(cuts, cuts[1:], strict=False):
        active = {k for k in active if shown[k][1] > a} | set(starting.get(a, ()))
        covering = tuple(sorted(active, key=rank.__getitem__))
        closing = tuple(k for k in reversed(covering) if shown[k][1] == b)
        out.append(Piece(a, b, text[a:b], covering, closing))
    return out


def escape(text: str) -> str:
    """``text`` safe inside HTML text and quoted attributes; a lone surrogate (valid JSON, not valid Unicode)
    becomes U+FFFD, so the page can still be written as UTF-8."""
    return html.escape(_SURROGATE.sub("\ufffd", text), quote=True)


def colour_classes(labels: Sequence[str]) -> Callable[[str], str]:
    """label -> its colour class (``c0`` ...): by its place in ``labels``; a label outside them gets the next."""
    index = {label: k for k, label in enumerate(labels)}

    def colour(label: str) -> str:
        if label not in index:
            index[label] = len(index)
        return f"c{index[label] % COLOUR_CLASSES}"

    return colour


def marked_html(text: str, spans: Sequence[Span], colour: Callable[[str], str],
                name_of: Callable[[str], str] = str) -> str:
    """``text`` as HTML with each span a ``<mark>`` in its label's colour class (``colour_classes``; the innermost
    span's where spans overlap) and a tag with the label's display name after its last piece; all escaped, no
    inline style (the pages' Content-Security-Policy allows none)."""
    parts = []
    for piece in pieces(text, spans):
        if not piece.covering:
            parts.append(escape(piece.text))
            continue
        inner = spans[piece.covering[-1]]
        about = "; ".join(_describe(spans[k], name_of) for k in piece.covering)
        outer = spans[piece.covering[0]]
        overlap = f" overlap o{colour(outer.label)[1:]}" if len(piece.covering) > 1 else ""
        parts.append(f'<mark class="ent {colour(inner.label)}{overlap}" data-label="{escape(inner.label)}" '
                     f'title="{escape(about)}">{escape(piece.text)}</mark>')
        parts += [f'<span class="tag {colour(spans[k].label)}">{escape(name_of(spans[k].label))}</span>'
                  for k in piece.closing]
    return "".join(parts)


def _describe(span: Span, name_of: Callable[[str], str]) -> str:
    score = f", score {span.score:.3f}" if span.score is not None else ""
    return f"{name_of(span.label)} ({span.label}) [{span.start}, {span.end}){score}"
