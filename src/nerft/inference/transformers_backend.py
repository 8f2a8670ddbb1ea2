"""The transformers backend (CPU or GPU): batched greedy decoding with left padding, length-sorted batches, the
shared system prompt's KV cache computed once, a repetition guard, optional constrained decoding and a bias
against an immediate "no entity" answer."""

from __future__ import annotations

import contextlib
import functools
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch

from ..formats import get_format
from ..generation import (
    ContinuousBatchingUnsupported,
    DecodeBatch,
    DecodeRow,
    Generated,
    PrefixCache,
    cache_layers,
    generate_batch,
    returned_cache,
    shared_prefix_ids,
    stop_token_ids,
)
from ..labels import LabelSet
from ..lexicon import Lexicon
from ..prompts import Prompt
from ..schema import Entity
from .base import DecodingPlan, Prediction, PredictStats, RepetitionGuard, WindowPlan, sorted_batches
from .location import ModelLocation
from .options import PredictOptions

if TYPE_CHECKING:
    from ..constrained import ConstrainedAnswer


class FirstTokenBias:
    """A logits processor: at the first decoding step only, lowers the scores of ``token_ids`` by ``bias``."""

    def __init__(self, token_ids: Sequence[int], bias: float):
        self.token_ids, self.bias, self.first = sorted(set(token_ids)), bias, True

    def select(self, keep: Sequence[int]) -> None:  # rows leaving the batch: nothing per row to follow
        pass

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
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
    def weight(self) -> torch.Tensor:  # tied-weight lookups and resizing go through .weight
        weight = self.head.weight
        assert isinstance(weight, torch.Tensor)
        return weight

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        with torch.autocast(hidden.device.type, enabled=False):
            return self.head(hidden.to(self.weight.dtype))


def cast_linear_weights(model: Any, dtype: torch.dtype) -> int:
    """Store the transformer blocks' linear weights in ``dtype`` once (returns how many), for a frozen model run
    under autocast to ``dtype``: autocast casts an fp32 weight at every call (it caches casts only of weights that
    require grad), which a profile of one decode step found to be 40% of its time on 2 CPU cores; a weight already
    in ``dtype`` is used as is, so the outputs are bit for bit those of casting each call. The output head (kept in
    full precision) and weights tied to the embeddings are left alone."""
    head = model.get_output_embeddings()
    keep = {id(p) for m in (head, model.get_input_embeddings()) if m is not None for p in m.parameters()}
    cast = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and id(module.weight) not in keep and \
                module.weight.dtype == torch.float32:
            module.to(dtype)
            cast += 1
    return cast


class ChainedProcessors:
    """Several logits processors applied in order; rows leaving the batch are passed on to each."""

    def __init__(self, processors: Sequence):
        self.processors = list(processors)

    def select(self, keep: Sequence[int]) -> None:
        for p in self.processors:
            p.select(keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for p in self.processors:
            scores = p(input_ids, scores)
        return scores


class TransformersPredictor:
    """A ``Predictor`` over a transformers causal LM (a merged model, or a peft model being trained)."""

    def __init__(self, model: Any, tokenizer: Any, labels: LabelSet, prompt: Prompt, options: PredictOptions | None = None,
                 name: str = "nerft", frozen: bool = True, hint_lexicon: Lexicon | None = None,
                 autocast: torch.dtype | None = None):
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
            if frozen:
                cast_linear_weights(model, autocast)
        self.options = options or PredictOptions()
        self.name, self.frozen = name, frozen
        self.plan = DecodingPlan(tokenizer, labels, prompt, self.options, hint_lexicon)
        self.stats = PredictStats()
        self.format = get_format(prompt.output_format)
        self._none_start = self.format.none_start_ids(tokenizer, stop_token_ids(tokenizer))
        self._prefix: PrefixCache | bool | None = None  # False: no prefix worth caching

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, model: Any, options: PredictOptions | None = None,
                      autocast: torch.dtype | None = None) -> TransformersPredictor:
        """A predictor over ``model`` (loaded from ``where``) with the run's labels, prompt and lexicon hints."""
        labels, prompt = where.labels_and_prompt
        return cls(model, tokenizer, labels, prompt, options, name=where.name,
                   hint_lexicon=where.hint_lexicon(prompt), autocast=autocast)

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        return [p.entities for p in self.predict_detailed(texts, labels)]

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        with self.predicting():
            results = self.plan.run(texts, labels, self._generate)
        self.stats.texts += len(texts)
        return results

    @contextlib.contextmanager
    def predicting(self) -> Iterator[None]:
        """What every forward pass of this predictor runs in: eval mode (the model's mode is given back after) and
        torch.autocast to ``autocast``, if any."""
        was_training = self.model.training
        self.model.eval()
        mixed = (torch.autocast(next(self.model.parameters()).device.type, dtype=self.autocast)
                 if self.autocast is not None else contextlib.nullcontext())
        try:
            with mixed:
                yield
        finally:
            self.model.train(was_training)

    def continuous(self, max_rows: int, max_positions: int) -> ContinuousDecoder:
        """A ContinuousDecoder over this predictor (a server's scheduler); ContinuousBatchingUnsupported for a model
        being trained or a KV cache whose rows cannot be joined."""
        if not self.frozen:
            raise ContinuousBatchingUnsupported("the model is being trained")
        with torch.inference_mode(), self.predicting():
            probe = self.model(input_ids=torch.tensor([[self.tokenizer.eos_token_id or 0]],
                                                      device=next(self.model.parameters()).device),
                               use_cache=True, logits_to_keep=1)
        cache_layers(returned_cache(probe))
        return ContinuousDecoder(self, max_rows, max_positions)

    def _prefix_cache(self) -> PrefixCache | None:
        if not self.frozen:
            self._prefix = None
        if self._prefix is None and self.options.prefix_cache:
            ids = shared_prefix_ids(self.tokenizer, self.prompt)
            self._prefix = PrefixCache(self.model, ids) if len(ids) >= 4 else False
        return self._prefix if isinstance(self._prefix, PrefixCache) else None

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


@dataclass(eq=False)
class Ticket:
    """One caller's texts in a ContinuousDecoder: its plan, and each window's answer as it comes."""

    owner: Any
    plan: WindowPlan
    answers: list[Generated | None] = field(init=False)
    predicted: list[bool] = field(init=False)
    rows: list[DecodeRow] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.answers = [None] * len(self.plan.pieces)
        self.predicted = [False] * len(self.plan.texts)


class ContinuousDecoder:
    """A TransformersPredictor's side of a server's continuous batching. Callers' texts become rows (a row per
    window) of one running ``DecodeBatch``: ``admit`` plans them, each ``step`` lets waiting rows join (their prefill
    a forward pass of its own, then they decode with the others) while the batch holds fewer than ``max_rows`` rows
    and ``max_positions`` KV positions, runs one decode step, and hands back every text whose windows have all
    been answered. ``drop`` takes a caller's rows out, queued or running. Answers are the predictor's
    ``predict_detailed`` answers up to floating-point differences of batch shape (the same prompts, bounds,
    constraints, first-token bias and repetition guard, row by row). Not thread-safe: one thread steps it (the
    server's worker, holding the predictor's lock)."""

    def __init__(self, predictor: TransformersPredictor, max_rows: int, max_positions: int):
        self.predictor, self.max_rows, self.max_positions = predictor, max_rows, max_positions
        self.batch = DecodeBatch(predictor.model, predictor.tokenizer, predictor._prefix_cache())
        self.waiting: deque[DecodeRow] = deque()
        self.tickets: dict[int, Ticket] = {}  # by id(owner)
        self.rows_last_step = 0  # rows the last decode step ran (prefilled rows included)

    def reset(self) -> None:
        """Forget every caller and start a new batch (after a step that raised: its state is not trusted)."""
        self.batch = DecodeBatch(self.predictor.model, self.predictor.tokenizer, self.batch.prefix)
        self.waiting.clear()
        self.tickets.clear()

    @property
    def busy(self) -> bool:
        return bool(self.waiting or len(self.batch))

    def admit(self, owner: Any, texts: list[str], labels: list[str] | None) -> list[tuple[Any, int, Prediction]]:
        """Plan ``owner``'s texts and queue their rows (a bad label subset raises here, for this caller only);
        returns the texts already predicted (those without a window to answer), as ``step`` does."""
        p = self.predictor
        plan = p.plan.prepare(texts, labels)
        ticket = Ticket(owner, plan)
        constraint = None
        if p.options.constrained:
            from ..constrained import ConstrainedAnswer

            constraint = ConstrainedAnswer(p.tokenizer, plan.window_texts, plan.names, p.format)
        guard = RepetitionGuard(p.tokenizer, plan.window_texts, p.labels, p.format)
        for k, ids in enumerate(plan.ids):
            ticket.rows.append(DecodeRow(ids, plan.limits[k], adjust=self._adjust(constraint, k),
                                         stop=functools.partial(guard, k), owner=(ticket, k)))
        self.tickets[id(owner)] = ticket
        self.waiting.extend(ticket.rows)
        p.stats.texts += len(texts)
        p.stats.windows += len(plan.pieces)
        return self._completed(ticket, [i for i in range(len(texts)) if not plan.windows_of(i)])

    def _adjust(self, constraint: ConstrainedAnswer | None, k: int) -> Callable[[list[int], torch.Tensor],
                                                                              torch.Tensor] | None:
        """Row ``k``'s score adjustment: the first-token bias, then the constraint (ChainedProcessors' order)."""
        bias = self.predictor.options.none_bias
        none_start = self.predictor._none_start
        if not bias and constraint is None:
            return None

        def adjust(out: list[int], scores: torch.Tensor) -> torch.Tensor:
            if bias and not out:  # FirstTokenBias, for this row's first token
                scores[none_start] -= bias
            if constraint is not None:  # ConstrainedAnswer, for this row
                mask = torch.full_like(scores, float("-inf"))
                mask[constraint.allowed_after(k, out)] = 0.0
                scores = scores + mask
            return scores

        return adjust

    def drop(self, owner: Any) -> None:
        """Forget ``owner``'s texts: rows still queued never run, running rows leave the batch."""
        ticket = self.tickets.pop(id(owner), None)
        if ticket is None:
            return
        rows = set(ticket.rows)
        self.waiting = deque(r for r in self.waiting if r not in rows)
        self.batch.remove([r for r in self.batch.rows if r in rows])

    def step(self) -> list[tuple[Any, int, Prediction]]:
        """Let waiting rows join, decode one step; ``(owner, text index, prediction)`` for every text completed."""
        p = self.predictor
        with p.predicting():
            done: list[DecodeRow] = []
            joining: list[DecodeRow] = []
            while self.waiting and len(self.batch) + len(joining) < self.max_rows and (
                    not (joining or len(self.batch))  # an empty batch takes the next row whatever its size
                    or self.batch.cost_with(joining + [self.waiting[0]]) <= self.max_positions):
                joining.append(self.waiting.popleft())
            if joining:
                done += self.batch.add(joining)
                p.stats.batches += 1
            self.rows_last_step = len(self.batch)
            done += self.batch.step()
        completed: list[tuple[Any, int, Prediction]] = []
        for row in done:
            ticket: Ticket
            ticket, k = row.owner
            if self.tickets.get(id(ticket.owner)) is not ticket:
                continue  # dropped meanwhile
            ticket.answers[k] = row.answer(p.tokenizer)
            p.stats.unfinished += not row.finished
            completed += self._completed(ticket, [ticket.plan.pieces[k][0]])
        return completed

    def _completed(self, ticket: Ticket, texts: list[int]) -> list[tuple[Any, int, Prediction]]:
        """Predictions of those of ``texts`` (indices) whose windows are all answered; a ticket whose texts are all
        predicted is forgotten."""
        out = []
        for i in texts:
            windows = ticket.plan.windows_of(i)
            answers = [ticket.answers[w] for w in windows]
            if not ticket.predicted[i] and all(a is not None for a in answers):
                ticket.predicted[i] = True
                out.append((ticket.owner, i, self.predictor.plan.prediction(ticket.plan, i, answers)))  # type: ignore[arg-type]
        if all(ticket.predicted):
            self.tickets.pop(id(ticket.owner), None)
        return out
