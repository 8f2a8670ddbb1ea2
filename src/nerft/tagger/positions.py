"""Where each character of a text is tagged: the token ids the tagger reads and, for every character, the
position (token) whose hidden state tags it and its slot in that token.

Two layouts (``tagger.positions``):

- ``token``: the text tokenized as the model was pre-trained to read it. A token that covers several characters
  (``北京``, `` York``) tags each of them from its own hidden state, one output slot per character (slot k for
  its (k+1)-th character; the last slot serves any beyond), so a mention boundary inside a token (1.8% of
  CCFBDCI's gold boundaries fall inside a Qwen2 token; most English ones, as a word's token carries the space
  before it) stays reachable: the boundary repair.
- ``char``: every character tokenized on its own and tagged at its last token (1.53x the positions on CCFBDCI).

A character split over several byte tokens (a rare CJK character, an emoji) is tagged at the last of them, which
has seen all its bytes; a character no token's offsets cover (a tokenizer that trims spaces) at the token before
it. Offsets are Python string indices (code points), so surrogate pairs and combining marks count as the
characters ``str`` has.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch

Positions = Literal["token", "char"]
POSITIONS = ("token", "char")


@dataclass
class Alignment:
    """A text as the tagger reads it: ``input_ids``, and per character ``char_token`` (index into input_ids) and
    ``char_slot`` (which of that token's outputs); a training example also carries each character's gold ``tags``
    (``IGNORE`` where unknown)."""

    input_ids: list[int]
    char_token: list[int]
    char_slot: list[int]
    tags: list[int] | None = None


def align(text: str, tokenizer: Any, positions: str = "token", slots: int = 8,
          char_ids: dict[str, list[int]] | None = None) -> Alignment:
    """The ``Alignment`` of ``text`` under ``positions``; ``slots``: outputs per token (characters past the last
    slot share it). ``char_ids``: a cache of single-character encodings (``char`` layout), filled as it goes."""
    if not text:
        return Alignment([], [], [])
    if positions == "char":
        return _align_chars(text, tokenizer, char_ids if char_ids is not None else {})
    if positions != "token":
        raise ValueError(f"unknown tagger positions {positions!r}; choose {', '.join(POSITIONS)}")
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = list(enc["input_ids"]), [tuple(o) for o in enc["offset_mapping"]]
    if not ids:
        ids, offsets = [tokenizer.pad_token_id or 0], [(0, len(text))]
    owner = [-1] * len(text)
    for t, (s, e) in enumerate(offsets):
        for c in range(max(s, 0), min(e, len(text))):
            owner[c] = t  # the last token that covers a character tags it
    last = 0
    for c in range(len(text)):
        if owner[c] < 0:
            owner[c] = last
        last = owner[c]
    slot: dict[int, int] = {}
    char_slot: list[int] = []
    for t in owner:
        k = slot.get(t, 0)
        char_slot.append(min(k, slots - 1))
        slot[t] = k + 1
    return Alignment(ids, owner, char_slot)


def _align_chars(text: str, tokenizer: Any, cache: dict[str, list[int]]) -> Alignment:
    ids: list[int] = []
    char_token = []
    for ch in text:
        piece = cache.get(ch)
        if piece is None:
            piece = cache[ch] = list(tokenizer.encode(ch, add_special_tokens=False)) or \
                [tokenizer.pad_token_id or 0]
        ids.extend(piece)
        char_token.append(len(ids) - 1)
    return Alignment(ids, char_token, [0] * len(text))


def count_positions(text: str, tokenizer: Any, positions: str = "token",
                    char_ids: dict[str, list[int]] | None = None) -> int:
    """Token positions ``text`` takes under ``positions`` (what a window is measured in)."""
    if positions == "char":
        return len(_align_chars(text, tokenizer, char_ids if char_ids is not None else {}).input_ids)
    return len(tokenizer.encode(text, add_special_tokens=False))


IGNORE = -100  # a character whose tag is unknown (padding; a mention cut by a training window)


def collate_tags(examples: list[Alignment], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-padded ``input_ids``/``attention_mask`` (B x L) and per character ``char_token``, ``char_slot``,
    ``char_mask`` and ``tags`` (B x C; padding characters point at token 0 and carry IGNORE)."""
    width = max(len(ex.input_ids) for ex in examples)
    chars = max(max(len(ex.char_token) for ex in examples), 1)
    n = len(examples)
    input_ids = torch.full((n, width), pad_id, dtype=torch.long)
    attention = torch.zeros((n, width), dtype=torch.long)
    char_token = torch.zeros((n, chars), dtype=torch.long)
    char_slot = torch.zeros((n, chars), dtype=torch.long)
    char_mask = torch.zeros((n, chars), dtype=torch.bool)
    tags = torch.full((n, chars), IGNORE, dtype=torch.long)
    for i, ex in enumerate(examples):
        k, c = len(ex.input_ids), len(ex.char_token)
        input_ids[i, :k] = torch.tensor(ex.input_ids)
        attention[i, :k] = 1
        if c:
            char_token[i, :c] = torch.tensor(ex.char_token)
            char_slot[i, :c] = torch.tensor(ex.char_slot)
            char_mask[i, :c] = True
            if ex.tags is not None:
                tags[i, :c] = torch.tensor(ex.tags)
    return {"input_ids": input_ids, "attention_mask": attention, "char_token": char_token,
            "char_slot": char_slot, "char_mask": char_mask, "tags": tags}
