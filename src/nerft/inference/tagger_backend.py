"""A ``Predictor`` over the LLM as a tagger (a run trained with ``task: tag``, or its merged export): each window
of each text is read in one forward pass, the best valid tag sequence decoded (``tagger.crf``) and read back into
entities with character offsets; an entity's score is the lowest marginal probability of its characters' tags.

Windows (``--window`` token positions, ``--window-overlap``) and their merge are those of the generative
backends, with two differences that a reader of every window whole needs: a sentence longer than a window is cut
into overlapping pieces too, and of two overlapping windows each keeps the mentions that start in its half of the
overlap (``windows.owned_entities``); ``min_score``, ``label_min_scores`` and the lexicon apply as everywhere (``finish_entities``), so tune,
evaluate --score-with, serve and predict treat it like any other model. A tagger has no prompt to constrain and
generates no answer: ``constrained``, ``none_bias``, ``max_new_tokens`` and the prefix cache do not apply, and
it never hallucinates. Its ``answers`` (one per text) are its entities written in the run's output format, what
``/v1/chat/completions`` returns for it.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from ..formats import get_format
from ..labels import LabelSet
from ..lexicon import Lexicon
from ..prompts import Prompt
from ..schema import SCORE_DIGITS, Entity, NerftError
from ..tagger.model import TaggerModel, TaggerSettings
from ..tagger.positions import Alignment, align, collate_tags, count_positions
from ..windows import Window, make_windows, merge_window_entities, owned_entities
from .base import Prediction, PredictStats, finish_entities, sorted_batches
from .location import ModelLocation
from .options import PredictOptions

# A call's windows run in batches of like lengths: padded positions at most 1.3x the real ones, unless the batch
# has at most 256 positions in all (a smaller call would cost more than the padding it saves).
PADDING, FREE_POSITIONS = 1.3, 256


class TaggerPredictor:
    backend = "tagger"

    def __init__(self, model: Any, tokenizer: Any, labels: LabelSet, prompt: Prompt,
                 options: PredictOptions | None = None, name: str = "nerft",
                 autocast: torch.dtype | None = None):
        """``model``: a ``TaggerModel``, or the peft model around one while it trains (its mode is given back
        after each call)."""
        self.model, self.tokenizer, self.labels, self.prompt = model, tokenizer, labels, prompt
        self.tagger: TaggerModel = model.get_base_model() if hasattr(model, "get_base_model") else model
        self.settings: TaggerSettings = self.tagger.settings
        self.options = options or PredictOptions()
        self.name, self.autocast = name, autocast
        self.codes = set(labels.codes)
        if list(self.tagger.scheme.codes) != labels.codes:
            raise NerftError(f"the tagger was trained for the labels {', '.join(self.tagger.scheme.codes)}, not "
                             f"{', '.join(labels.codes)}")
        if unknown := set(self.options.label_min_score_map()) - self.codes:
            raise NerftError(f"label_min_scores names {', '.join(sorted(unknown))}, not among the model's label codes "
                             f"({', '.join(labels.codes)})")
        self.lexicon = Lexicon.load(self.options.lexicon) if self.options.lexicon else None
        self.stats = PredictStats()
        self.format = get_format(prompt.output_format)  # the answer a tagger gives: its entities, written out
        self._char_ids: dict[str, list[int]] = {}

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, model: Any,
                      options: PredictOptions | None = None, autocast: torch.dtype | None = None
                      ) -> TaggerPredictor:
        labels, prompt = where.labels_and_prompt
        return cls(model, tokenizer, labels, prompt, options, name=where.name, autocast=autocast)

    def count_positions(self, text: str) -> int:
        return count_positions(text, self.tokenizer, self.settings.positions, self._char_ids)

    def windows(self, text: str) -> list[Window]:
        if not self.options.window:
            return [Window(0, len(text))]
        return make_windows(text, self.options.window, self.count_positions, self.options.window_overlap,
                            overlap_cuts=True)

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        return [p.entities for p in self.predict_detailed(texts, labels)]

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        allowed = set(self.labels.subset(labels).codes) if labels is not None else self.codes
        pieces = [(i, w) for i, t in enumerate(texts) for w in self.windows(t)]
        window_texts = [texts[i][w.start:w.end] for i, w in pieces]
        aligned = [align(t, self.tokenizer, self.settings.positions, self.settings.slots, self._char_ids)
                   for t in window_texts]
        found = self.tag_windows(window_texts, aligned)
        per_text: list[list[tuple[Window, list[Entity]]]] = [[] for _ in texts]
        read = [0] * len(texts)
        for (i, w), entities, a in zip(pieces, found, aligned, strict=True):
            per_text[i].append((w, [e for e in entities if e.label in allowed]))
            read[i] += len(a.input_ids)
        out = []
        for text, parts, n_read in zip(texts, per_text, read, strict=True):
            if len(parts) == 1 and parts[0][0].start == 0:
                entities = parts[0][1]
            else:  # each window's own part (the middle of each overlap), then the generative backends' merge
                windows = [w for w, _ in parts]
                entities = merge_window_entities(windows, owned_entities(windows, [e for _, e in parts]), len(text))
            entities = finish_entities(text, entities, self.options, self.lexicon, allowed)
            out.append(Prediction(entities, [self.format.render(entities, self.labels)], prompt_tokens=n_read))
        self.stats.texts += len(texts)
        self.stats.windows += len(pieces)
        return out

    def tag_windows(self, texts: list[str], aligned: list[Alignment]) -> list[list[Entity]]:
        """The entities of each text (read whole: one window; ``aligned``: its positions), in input order, batched
        by length."""
        results: list[list[Entity]] = [[] for _ in texts]
        was_training = self.model.training
        self.model.eval()
        device = next(self.tagger.parameters()).device
        mixed = (torch.autocast(device.type, dtype=self.autocast) if self.autocast is not None
                 else contextlib.nullcontext())
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        try:
            todo = [i for i, a in enumerate(aligned) if a.char_token]
            lengths = [len(aligned[i].input_ids) for i in todo]
            for batch in sorted_batches(lengths, self.options.batch_size, PADDING, FREE_POSITIONS):
                rows = [todo[k] for k in batch]
                tensors = {k: v.to(device) for k, v in collate_tags([aligned[i] for i in rows], pad).items()}
                with torch.no_grad(), mixed:
                    emissions = self.tagger(tensors["input_ids"], tensors["attention_mask"], tensors["char_token"],
                                            tensors["char_slot"])
                paths, probs = self.tagger.decode(emissions.float(), tensors["char_mask"])
                probs = probs.cpu()
                for r, (i, path) in enumerate(zip(rows, paths, strict=True)):
                    results[i] = self._entities(texts[i], path, probs[r])
                self.stats.batches += 1
        finally:
            self.model.train(was_training)
        return results

    def _entities(self, text: str, path: list[int], probs: torch.Tensor) -> list[Entity]:
        out = []
        for start, end, label in self.tagger.scheme.spans(path):
            score = min(float(probs[c, path[c]]) for c in range(start, end))
            out.append(Entity(start, end, label, text[start:end], round(score, SCORE_DIGITS)))
        return out
