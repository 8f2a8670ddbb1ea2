"""Tag schemes over a label set: the tag list, which tag may follow which, and tags <-> spans. Pure Python.

``bio``: ``O``, ``B-X``, ``I-X``; ``bioes`` adds ``E-X`` (the last character of a mention of two or more) and
``S-X`` (a mention of one character). Tag ids are positions in ``TagScheme.tags``: ``O`` is 0, then each label's
tags in label-set order. A *valid* sequence is one the scheme can read back without repair: ``I-X`` only after
``B-X``/``I-X``, and for BIOES ``E-X`` closing every ``B-X``; the decoders (``nerft.tagger.crf``) only ever
produce valid sequences, so ``spans`` never has to guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Literal

SCHEMES = ("bio", "bioes")
Scheme = Literal["bio", "bioes"]
Span = tuple[int, int, str]  # start, end (exclusive), label code


@dataclass(frozen=True)
class TagScheme:
    """The tags of ``codes`` under ``scheme``; ``tags[i]`` is tag id i."""

    codes: tuple[str, ...]
    scheme: Scheme = "bio"
    tags: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        if self.scheme not in SCHEMES:
            raise ValueError(f"unknown tag scheme {self.scheme!r}; choose {', '.join(SCHEMES)}")
        kinds = "BI" if self.scheme == "bio" else "BIES"
        object.__setattr__(self, "tags", ("O", *(f"{k}-{c}" for c in self.codes for k in kinds)))

    def __len__(self) -> int:
        return len(self.tags)

    def index(self, tag: str) -> int:
        return self.tags.index(tag)

    def _parts(self, i: int) -> tuple[str, str | None]:
        tag = self.tags[i]
        return (tag, None) if tag == "O" else (tag[0], tag[2:])

    def allowed(self, prev: int, cur: int) -> bool:
        """Whether tag ``cur`` may follow tag ``prev`` in a valid sequence."""
        (pk, pl), (ck, cl) = self._parts(prev), self._parts(cur)
        inside = ck in ("I", "E")  # continues a mention
        if self.scheme == "bio":
            return not inside or (pk in ("B", "I") and pl == cl)
        open_before = pk in ("B", "I")  # BIOES: a mention left open must be continued or closed
        if open_before:
            return inside and pl == cl
        return not inside

    def allowed_start(self, cur: int) -> bool:
        return self._parts(cur)[0] not in ("I", "E")

    def allowed_end(self, last: int) -> bool:
        return self.scheme == "bio" or self._parts(last)[0] not in ("B", "I")

    def encode(self, length: int, spans: Iterable[Span]) -> list[int]:
        """Tag ids of ``length`` positions; of overlapping spans the first (by start, longest first) wins, the
        others are left out (a tagger marks one label per character)."""
        tags = [0] * length
        for start, end, label in sorted(spans, key=lambda s: (s[0], -s[1])):
            if start >= end or any(tags[start:end]):
                continue
            if self.scheme == "bioes" and end - start == 1:
                tags[start] = self.index(f"S-{label}")
                continue
            tags[start] = self.index(f"B-{label}")
            for i in range(start + 1, end):
                tags[i] = self.index(f"I-{label}")
            if self.scheme == "bioes":
                tags[end - 1] = self.index(f"E-{label}")
        return tags

    def spans(self, tag_ids: Sequence[int]) -> list[Span]:
        """The mentions of a tag sequence. On a valid sequence this is exact; an invalid one (never produced by
        the decoders) is read leniently: an ``I``/``E`` that does not continue its label opens a mention."""
        out: list[Span] = []
        start, label = 0, None
        for i, t in enumerate([*tag_ids, 0]):
            kind, lab = self._parts(t)
            if kind in ("I", "E") and label is not None and label == lab:  # an I or E tag always has a label
                if kind == "E":
                    out.append((start, i + 1, label))
                    label = None
                continue
            if label is not None:
                out.append((start, i, label))
                label = None
            if kind == "S":
                out.append((i, i + 1, lab))  # type: ignore[arg-type]
            elif kind in ("B", "I", "E"):
                start, label = i, lab
                if kind == "E":
                    out.append((i, i + 1, lab))  # type: ignore[arg-type]
                    label = None
        return out

    def transition_mask(self) -> list[list[bool]]:
        """``mask[prev][cur]``: the allowed transitions, as a matrix."""
        n = len(self.tags)
        return [[self.allowed(p, c) for c in range(n)] for p in range(n)]
