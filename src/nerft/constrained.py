"""Constrained decoding: the model may write only labels from the label set and mentions copied from the input.

A ``ConstrainedAnswer`` LogitsProcessor keeps, per row, the answer written so far (as bytes: byte-level BPE tokens
may split a character) and allows only tokens that keep it a prefix of a valid answer, as the output format's
grammar (``formats.OutputFormat``) defines it: units ``head + mention + tail`` for labels from the set and
non-empty substrings of the input, joined by the format's separator, or the format's "no entity" answer. For the
shipped formats:

- ``compact``: lines ``标签:实体``, then a newline or the end of the turn. An empty answer (no entity) is allowed.
- ``jsonl``: lines ``{"entity_text": "<substring>", "entity_label": "<label>"}``.
- ``tutorial``: the same objects concatenated, or 没有找到任何实体.

So every answer parses without error and every mention grounds exactly. Mentions must not contain ``"`` or ``\\``
in the JSON formats (they would need escaping). Cost per step: the candidate tokens of each text (tokens whose
bytes occur in the text or the answer skeleton, found once per text from a byte table of the vocabulary built once
per tokenizer object) are checked against the row's state; results are cached per state.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import torch

from .formats import OutputFormat, get_format
from .generation import stop_token_ids


@lru_cache(maxsize=1)
def _byte_decoder() -> dict[str, int]:
    """Inverse of GPT-2's bytes_to_unicode: the printable character standing for each byte in byte-level BPE (a copy:
    transformers moved its function between 4.x and 5.x; tests/test_constrained.py holds the two equal)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs, strict=True)}


class VocabBytes:
    """The bytes each token id stands for (None for special tokens), and a reverse index bytes -> ids."""

    def __init__(self, tokenizer: Any):
        special = set(tokenizer.all_special_ids) | set(getattr(tokenizer, "added_tokens_decoder", {}) or {})
        size = len(tokenizer)
        dec = _byte_decoder()
        pieces = tokenizer.convert_ids_to_tokens(list(range(size)))
        self.bytes: list[bytes | None] = []
        byte_level = all(p is None or all(c in dec for c in p) for p in pieces[:1000])
        for tid, piece in enumerate(pieces):
            if tid in special or piece is None:
                self.bytes.append(None)
            elif byte_level and all(c in dec for c in piece):
                self.bytes.append(bytes(dec[c] for c in piece))
            else:
                self.bytes.append(tokenizer.decode([tid]).encode("utf-8"))
        self.index: dict[bytes, list[int]] = {}
        for tid, b in enumerate(self.bytes):
            if b:
                self.index.setdefault(b, []).append(tid)
        # Every prefix of every token: substring scans stop as soon as no token can continue the match.
        self.prefixes: set[bytes] = {b[:k] for b in self.index for k in range(1, len(b) + 1)}

    def ids_in(self, haystack: bytes, head: bytes = b"", tail: bytes = b"") -> set[int]:
        """Ids of the tokens ``head + s + tail`` for the substrings ``s`` of ``haystack`` (by default: the tokens
        whose bytes occur in it; with a head or tail: tokens that join, e.g., a label's ``:`` and a mention)."""
        out: set[int] = set()
        if head and head not in self.prefixes:
            return out
        for i in range(len(haystack)):
            for j in range(i + 1, len(haystack) + 1):
                piece = head + haystack[i:j]
                if piece not in self.prefixes:
                    break
                out.update(self.index.get(piece + tail, ()) if tail else self.index.get(piece, ()))
        return out


# Byte tables live as long as their tokenizer: keyed by the object itself (weakly), never by id(), which a later
# tokenizer may reuse once this one is gone.
_VOCAB_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
_VOCAB_TABLES_LOCK = threading.Lock()


def vocab_bytes(tokenizer: Any) -> VocabBytes:
    """The byte table of a tokenizer, built once per tokenizer object (about two seconds for 151k tokens)."""
    try:
        with _VOCAB_TABLES_LOCK:
            table = _VOCAB_TABLES.get(tokenizer)
    except TypeError:  # an object that cannot be weakly referenced: a table of its own each time
        return VocabBytes(tokenizer)
    if table is None:
        table = VocabBytes(tokenizer)
        with _VOCAB_TABLES_LOCK:
            table = _VOCAB_TABLES.setdefault(tokenizer, table)
    return table


def _is_char_start(b: bytes) -> bool:
    return not b or (b[0] & 0xC0) != 0x80


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class AnswerGrammar:
    """Which byte strings are prefixes of a valid answer for one input text, one output format and label names."""

    def __init__(self, text: str, label_names: Sequence[str], output_format: str | OutputFormat):
        fmt = get_format(output_format) if isinstance(output_format, str) else output_format
        self.format, self.text = fmt, text.encode("utf-8")
        self.tails_of: dict[bytes, list[bytes]] = {}  # head -> the tails that may close a unit opened by it
        for head, tail in fmt.unit_affixes(label_names):
            if tail and not (tail[0].isascii() and tail[0] in fmt.forbidden):
                raise ValueError(f"the {fmt.name} format's tail {tail!r} must begin with an ASCII character "
                                 f"that mentions may not hold")
            if not fmt.separator and not (fmt.unit_end and tail.endswith(fmt.unit_end) and fmt.unit_end in
                                          fmt.forbidden and fmt.unit_end not in head):
                raise ValueError(f"the {fmt.name} format has no separator: each tail must end with its unit_end, "
                                 f"which mentions and heads may not hold")
            self.tails_of.setdefault(head.encode(), []).append(tail.encode())
        self.heads = list(self.tails_of)
        self.tails = list(dict.fromkeys(t for tails in self.tails_of.values() for t in tails))
        self.sep, self.none = fmt.separator.encode(), fmt.none_text.encode()
        self.forbidden = [c.encode() for c in fmt.forbidden]

    def _mention_ok(self, m: bytes, complete: bool) -> bool:
        if not _is_char_start(m) or m not in self.text:
            return False
        if any(c in m for c in self.forbidden):
            return False
        if complete:
            return bool(m.strip()) and _decodes(m)
        return True

    def _unit(self, u: bytes, complete: bool) -> bool:
        """Is ``u`` one entity unit (complete) or a prefix of one?"""
        for head, tails in self.tails_of.items():
            if not u.startswith(head):
                if not complete and head.startswith(u):
                    return True
                continue
            rest = u[len(head):]
            if complete:
                if any(rest.endswith(t) and self._mention_ok(rest[: len(rest) - len(t)], True) for t in tails):
                    return True
                continue
            for lead in dict.fromkeys(t[:1] for t in tails):  # inside the mention, or in a tail
                q = rest.find(lead) if lead else -1  # the mention ends at the first byte of its tail
                if q < 0 and self._mention_ok(rest, False):
                    return True
                if q >= 0 and self._mention_ok(rest[:q], True) and any(t.startswith(rest[q:]) for t in tails):
                    return True
        return False

    def is_prefix(self, answer: bytes, at_start: bool = True) -> bool:
        """Can ``answer`` be continued into a valid answer? ``at_start``: it is the whole answer, not a tail."""
        if at_start and self.none and self.none.startswith(answer):
            return True
        units, cur = self.format.split(answer)
        return all(self._unit(u, True) for u in units) and (not cur or self._unit(cur, False))

    def can_end(self, answer: bytes, at_start: bool = True) -> bool:
        if at_start and self.none:
            return answer == self.none or (bool(answer) and self.can_end(answer, False))
        units, cur = self.format.split(answer)
        return all(self._unit(u, True) for u in units) and (not cur or self._unit(cur, True))

    def candidate_ids(self, vocab: VocabBytes) -> set[int]:
        """A superset of the tokens this grammar can ever allow: checked exactly, state by state, later."""
        tails = [t for t in self.tails if t] or [self.sep]
        skeleton = b"\x00".join(self.heads + tails + [t + self.sep + h for t in tails for h in self.heads]
                                 + [self.none])
        ids = vocab.ids_in(self.text) | vocab.ids_in(skeleton)
        # A token may join the end of a head and the start of a mention (``:北``), or a mention's end and the
        # start of what follows it (``》\n``, ``京"``).
        for head in self.heads:
            for k in range(1, min(len(head), 4) + 1):
                ids |= vocab.ids_in(self.text, head=head[-k:])
        for tail in tails:
            for k in range(1, min(len(tail), 4) + 1):
                ids |= vocab.ids_in(self.text, tail=tail[:k])
        return ids


class ConstrainedAnswer:
    """A LogitsProcessor: masks every token that would leave a row's answer outside its AnswerGrammar.

    Works with ``generation.generate_batch`` and ``model.generate`` alike; the prompt width is taken from the
    first call (all rows are padded to it).
    """

    def __init__(self, tokenizer: Any, texts: Sequence[str], label_names: Sequence[str],
                 output_format: str | OutputFormat):
        self.vocab = vocab_bytes(tokenizer)
        self.stops = stop_token_ids(tokenizer)
        fmt = get_format(output_format) if isinstance(output_format, str) else output_format
        self.grammars = [AnswerGrammar(t, label_names, fmt) for t in texts]
        self.candidates = [sorted(g.candidate_ids(self.vocab)) for g in self.grammars]
        self.prompt_width: int | None = None
        self._allowed: list[dict[tuple[bool, bytes], list[int]]] = [{} for _ in texts]
        self.rows = list(range(len(texts)))  # the text of each batch position

    def allowed_ids(self, row: int, answer: bytes) -> list[int]:
        """Tokens that may follow ``answer``. Units before the current one were checked when they were written,
        so only the current unit (and whether the answer has begun) decides."""
        g = self.grammars[row]
        units, cur = g.format.split(answer)
        at_start = not units
        key = (at_start, cur)
        cache = self._allowed[row]
        if key not in cache:
            vb = self.vocab.bytes
            ok = [t for t in self.candidates[row] if g.is_prefix(cur + vb[t], at_start)]  # type: ignore[operator]
            if g.can_end(cur, at_start):
                ok.extend(self.stops)
            cache[key] = ok or list(self.stops)  # a dead end (cannot happen for valid states) just stops
        return cache[key]

    def select(self, keep: Sequence[int]) -> None:
        """Keep only these rows, in this order (``generate_batch`` drops finished rows from the batch)."""
        self.rows = [self.rows[b] for b in keep]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prompt_width is None:
            self.prompt_width = input_ids.shape[1]
        mask = torch.full_like(scores, float("-inf"))
        for b in range(scores.shape[0]):
            mask[b, self.allowed_after(self.rows[b], input_ids[b, self.prompt_width:].tolist())] = 0.0
        return scores + mask  # type: ignore[return-value]  # torch types FloatTensor + Tensor as Tensor

    def allowed_after(self, row: int, generated: Sequence[int]) -> list[int]:
        """Tokens that may follow the answer ``generated`` (its token ids so far) of ``row``'s text."""
        return self.allowed_ids(row, b"".join(self.vocab.bytes[t] or b"" for t in generated if t not in self.stops))
