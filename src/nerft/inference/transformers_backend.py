"""The transformers backend (CPU or GPU): batched greedy decoding with left padding, length-sorted batches, the
shared system prompt's KV cache computed once, a repetition guard, optional constrained decoding and a bias
against an immediate "no entity" answer."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence

import torch

from ..formats import get_format
from ..generation import Generated, PrefixCache, generate_batch, shared_prefix_ids, stop_token_ids
from ..labels import LabelSet
from ..lexicon import Lexicon
from ..prompts import Prompt
from ..schema import Entity
from .base import DecodingPlan, Prediction, PredictStats, RepetitionGuard, sorted_batches
from .location import ModelLocation
from .options import PredictOptions


class FirstTokenBias:
    """A logits processor: at the first decoding step only, lowers the scores of ``token_ids`` by ``bias``."""

    def __init__(self, token_ids: Sequence[int], bias: float):
        self.token_ids, self.bias, self.first = sorted(set(token_ids)), bias, True

    def select(self, keep: Sequence[int]) -> None:  # rows leaving the batch: nothing per row to follow
        pass

    def __call__(self, input_ids, scores):
        if not self.first:
            return scores
        self.first = False
        scores = scores.clone()
        scores[:, self.token_ids] -= self.bias
        return scores


class FullPrecisionHead(torch.nn.Module):
    """The output projection run outside autocast, on hidden states cast back to its weights' dtype: the logits
    (and the scores thresholds are chosen on) as without autocast."""

    def __init__(self, head: torch.nn.Module):
        super().__init__()
        self.head = head

    @property
    def weight(self):  # tied-weight lookups and resizing go through .weight
        return self.head.weight

    def forward(self, hidden):
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.head.weight.dtype))


class ChainedProcessors:
    """Several logits processors applied in order; rows leaving the batch are passed on to each."""

    def __init__(self, processors: Sequence):
        self.processors = list(processors)

    def select(self, keep: Sequence[int]) -> None:
        for p in self.processors:
            p.select(keep)

    def __call__(self, input_ids, scores):
        for p in self.processors:
            scores = p(input_ids, scores)
        return scores


class TransformersPredictor:
    """A ``Predictor`` over a transformers causal LM (a merged model, or a peft model being trained)."""

    def __init__(self, model, tokenizer, labels: LabelSet, prompt: Prompt, options: PredictOptions | None = None,
                 name: str = "nerft", frozen: bool = True, hint_lexicon: Lexicon | None = None, autocast=None):
        """``frozen``: the weights never change, so the shared prefix's KV cache is computed once; otherwise (a
        model being trained) it is recomputed at each call. The model is put in eval mode while predicting and
        given back in the mode it was in. ``autocast``: a torch dtype (bf16) the transformer blocks run in under
        torch.autocast while predicting; the lm_head stays in the weights' dtype, so answer scores (and the
        min-score thresholds chosen on them) keep their precision."""
        self.model, self.tokenizer, self.labels, self.prompt = model, tokenizer, labels, prompt
        self.autocast = autocast
        if autocast is not None:
            head = model.get_output_embeddings()
            if head is not None and not isinstance(head, FullPrecisionHead):
                model.set_output_embeddings(FullPrecisionHead(head))
        self.options = options or PredictOptions()
        self.name, self.frozen = name, frozen
        self.plan = DecodingPlan(tokenizer, labels, prompt, self.options, hint_lexicon)
        self.stats = PredictStats()
        self.format = get_format(prompt.output_format)
        self._none_start = self.format.none_start_ids(tokenizer, stop_token_ids(tokenizer))
        self._prefix: PrefixCache | bool | None = None

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer, model, options: PredictOptions | None = None,
                      autocast=None) -> TransformersPredictor:
        """A predictor over ``model`` (loaded from ``where``) with the run's labels, prompt and lexicon hints."""
        labels, prompt = where.labels_and_prompt
        return cls(model, tokenizer, labels, prompt, options, name=where.name,
                   hint_lexicon=where.hint_lexicon(prompt), autocast=autocast)

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        return [p.entities for p in self.predict_detailed(texts, labels)]

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        was_training = self.model.training
        self.model.eval()
        mixed = (torch.autocast(next(self.model.parameters()).device.type, dtype=self.autocast)
                 if self.autocast is not None else contextlib.nullcontext())
        try:
            with mixed:
                results = self.plan.run(texts, labels, self._generate)
        finally:
            self.model.train(was_training)
        self.stats.texts += len(texts)
        return results

    def _prefix_cache(self) -> PrefixCache | None:
        if not self.frozen:
            self._prefix = None
        if self._prefix is None and self.options.prefix_cache:
            ids = shared_prefix_ids(self.tokenizer, self.prompt)
            self._prefix = PrefixCache(self.model, ids) if len(ids) >= 4 else False
        return self._prefix or None

    def _processor(self, texts: list[str], label_names: list[str]):
        processors: list = []
        if self.options.none_bias:
            processors.append(FirstTokenBias(self._none_start, self.options.none_bias))
        if self.options.constrained:
            from ..constrained import ConstrainedAnswer

            processors.append(ConstrainedAnswer(self.tokenizer, texts, label_names, self.format))
        return ChainedProcessors(processors) if processors else None

    def _generate(self, texts: list[str], ids: list[list[int]], limits: list[int],
                  label_names: list[str]) -> list[Generated]:
        prefix = self._prefix_cache()
        results: list[Generated | None] = [None] * len(texts)
        for batch in sorted_batches([len(x) for x in ids], self.options.batch_size):
            batch_texts = [texts[i] for i in batch]
            gens = generate_batch(self.model, self.tokenizer, [ids[i] for i in batch], [limits[i] for i in batch],
                                  self._processor(batch_texts, label_names), prefix=prefix,
                                  stop_row=RepetitionGuard(self.tokenizer, batch_texts, self.labels, self.format))
            self.stats.batches += 1
            for i, g in zip(batch, gens, strict=True):
                self.stats.unfinished += not g.finished
                results[i] = g
        self.stats.windows += len(texts)
        return results  # type: ignore[return-value]
