"""Training data and loss of the tagging task (``task: tag``): documents -> token ids + one gold tag per character
(``tagger.positions.Alignment`` with its tags), batches of them (``tagger.positions.collate_tags``) and the loss (``TaggingLoss``), the counterparts of
``data.encode_documents``, ``data.collate`` and ``step.SupervisedLoss`` for the generative task."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

import torch

from ..schema import Document, NerftError
from ..tagger.model import TaggerSettings
from ..tagger.positions import IGNORE, Alignment, align, count_positions
from ..tagger.scheme import TagScheme
from ..windows import make_windows


@dataclass
class TagData:
    examples: list[Alignment]
    overlong: int = 0  # documents longer than tagger.max_length, cut into windows
    supervised_tokens: int = 0  # characters with a known tag
    prefix_lens: list[int] = field(default_factory=list)
    prompts: list = field(default_factory=list)


def window_tags(doc: Document, start: int, end: int, scheme: TagScheme) -> list[int]:
    """Gold tags of ``doc.text[start:end]``: mentions inside it tagged, a mention crossing its edge unknown."""
    inside = [(e.start - start, e.end - start, e.label) for e in doc.entities
              if e.start is not None and e.end is not None and start <= e.start and e.end <= end]
    tags = scheme.encode(end - start, inside)
    for e in doc.entities:
        if e.start is not None and e.end is not None and e.start < end and start < e.end and \
                not (start <= e.start and e.end <= end):
            for c in range(max(e.start, start), min(e.end, end)):
                tags[c - start] = IGNORE
    return tags


def encode_tagging(docs: list[Document], tokenizer: Any, scheme: TagScheme,
                   settings: TaggerSettings) -> TagData:
    """Every document as one example, or (longer than ``settings.max_length`` positions) one per window of whole
    sentences; documents without text are skipped."""
    out = TagData([])
    cache: dict[str, list[int]] = {}

    def count(text: str) -> int:
        return count_positions(text, tokenizer, settings.positions, cache)

    known = set(scheme.codes)
    for doc in docs:
        if not doc.text:
            continue
        unknown = {e.label for e in doc.entities} - known
        if unknown:
            raise NerftError(f"training document {doc.id}: label(s) {', '.join(sorted(unknown))} are not in the "
                             f"run's label set ({', '.join(scheme.codes)}); pass --labels with them")
        windows = make_windows(doc.text, settings.max_length, count)
        out.overlong += len(windows) > 1
        for w in windows:
            a = align(doc.text[w.start:w.end], tokenizer, settings.positions, settings.slots, cache)
            if len(a.input_ids) > settings.max_length:  # a window that still does not fit: cut, the rest unknown
                keep = sum(t < settings.max_length for t in a.char_token)
                a.input_ids, a.char_token, a.char_slot = (a.input_ids[:settings.max_length], a.char_token[:keep],
                                                          a.char_slot[:keep])
            tags = window_tags(doc, w.start, w.end, scheme)[:len(a.char_token)]
            out.supervised_tokens += sum(t != IGNORE for t in tags)
            a.tags = tags
            out.examples.append(a)
    return out


class TaggingLoss(torch.nn.Module):
    """The summed tagging loss of a batch and its count of characters with a known tag (``SupervisedLoss``'s
    contract, so ``step.accumulate_gradients`` runs it unchanged); ``autocast``: the dtype the body runs in."""

    def __init__(self, peft_model: Any, autocast: torch.dtype | None = None):
        super().__init__()
        self.peft_model = peft_model
        self.autocast = autocast

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, char_token: torch.Tensor,
                char_slot: torch.Tensor, char_mask: torch.Tensor, tags: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        tagger = self.peft_model.get_base_model()  # LoRA layers are injected in place
        mixed = (torch.autocast(input_ids.device.type, dtype=self.autocast) if self.autocast is not None
                 else contextlib.nullcontext())
        with mixed:
            emissions = tagger(input_ids, attention_mask, char_token, char_slot)
        return tagger.loss(emissions, char_mask, tags), (tags != IGNORE).sum()
