"""Batched greedy generation for chat prompts, shared by training-time dev evaluation and the predictors.

``generate_batch`` runs its own greedy loop instead of ``model.generate``: it keeps only the log-probability of
each chosen token (``generate(output_scores=True)`` holds a batch x steps x 151,936 tensor), computes the lm_head
only at the last position, stops each row at end-of-turn, at its own token limit or when ``stop_row`` says so, and
can reuse the KV cache of a prompt prefix shared by every row (the system prompt).
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .prompts import Prompt


@dataclass
class Generated:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # log-probability of each generated token
    finished: bool = True  # False when it stopped at max_new_tokens instead of an end-of-turn token
    # the bytes each token wrote, from an engine that returns tokens as text, not ids (an OpenAI-compatible
    # server); None when token_ids are given or nothing is known about the tokens
    pieces: list[bytes] | None = None


def end_of_turn_id(tokenizer: Any) -> int:
    """The token that closes an assistant turn in the chat template (``<|im_end|>`` for Qwen2)."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token")
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer: Any) -> list[int]:
    ids = {end_of_turn_id(tokenizer)}
    for tok in ("<|endoftext|>",):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def prompt_ids(tokenizer: Any, prompt: Prompt, text: str, hint: str = "") -> list[int]:
    """Token ids of the chat prompt for ``text`` (and its lexicon ``hint``), ending with the assistant header."""
    ids = tokenizer.apply_chat_template(prompt.messages(text, hint), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def shared_prefix_ids(tokenizer: Any, prompt: Prompt) -> list[int]:
    """The longest token prefix that every prompt built from ``prompt`` starts with (system turn + user header)."""
    a, b = prompt_ids(tokenizer, prompt, "甲"), prompt_ids(tokenizer, prompt, "Zq 9")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def pad_token_id(tokenizer: Any) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stop_token_ids(tokenizer)[-1]


def cache_keyword(model: Any) -> str:
    """The forward() keyword that takes the KV cache: ``cache`` in transformers 5 releases that renamed it (there
    ``past_key_values`` is a deprecated alias, to be removed in 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model's transformers model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(out: Any) -> Any:
    """The KV cache a forward pass returned (``out.cache`` in transformers 5, ``out.past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class PrefixCache:
    """The KV cache of a prompt prefix shared by all rows, computed once per model and copied into each batch.

    The batch is laid out ``[prefix][left padding][row tokens]``: the attention mask hides the padding and the
    position ids come from the mask, so each row sees exactly what it would see alone.
    """

    def __init__(self, model: Any, prefix: Sequence[int]):
        self.ids = list(prefix)
        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([self.ids], device=device), use_cache=True, logits_to_keep=1)
        self._cache = returned_cache(out)

    def for_batch(self, batch_size: int):
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(batch_size)
        return cache


def prompt_layout(batch_ids: Sequence[Sequence[int]], pad: int, prefix: PrefixCache | None,
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor, Any, int]:
    """Prompts laid out for one prefill: ``[prefix][left padding][row tokens]``, with their attention mask, and the
    number of leading columns already computed: when every row starts with ``prefix``'s ids (and goes beyond them),
    a copy of its KV cache for the batch and its length (else None and 0: the whole prompts are computed)."""
    n = len(batch_ids)
    skip = 0
    if prefix is not None and all(list(ids[: len(prefix.ids)]) == prefix.ids and len(ids) > len(prefix.ids)
                                  for ids in batch_ids):
        skip = len(prefix.ids)
    rows = [list(ids[skip:]) for ids in batch_ids]
    width = max(len(r) for r in rows)
    input_ids = torch.full((n, skip + width), pad, dtype=torch.long)
    attention = torch.zeros((n, skip + width), dtype=torch.long)
    for i, ids in enumerate(batch_ids):
        input_ids[i, :skip] = torch.tensor(list(ids[:skip]), dtype=torch.long)
        attention[i, :skip] = 1
        input_ids[i, skip + width - len(rows[i]):] = torch.tensor(rows[i], dtype=torch.long)
        attention[i, skip + width - len(rows[i]):] = 1
    cache = prefix.for_batch(n) if skip and prefix is not None else None
    return input_ids.to(device), attention.to(device), cache, skip


@torch.inference_mode()
def generate_batch(model: Any, tokenizer: Any, batch_ids: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                   logits_processor: Any = None, *, prefix: PrefixCache | None = None,
                   stop_row: Callable[[int, list[int]], bool] | None = None) -> list[Generated]:
    """Greedy-decode one batch of prompts (left-padded); stop each row at an end-of-turn token.

    ``logits_processor`` is called like a transformers LogitsProcessor(List): ``(input_ids, scores) -> scores``
    with the full sequences so far. ``prefix``: a PrefixCache whose ids every row starts with. ``stop_row(i, ids)``
    is asked after each new token of row ``i`` (its generated ids so far) whether to stop it early.
    """
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    stops = stop_token_ids(tokenizer)
    n = len(batch_ids)
    limits = [max_new_tokens] * n if isinstance(max_new_tokens, int) else list(max_new_tokens)
    input_ids, attention, cache, skip = prompt_layout(batch_ids, pad, prefix, device)
    step_input = input_ids[:, skip:]
    out_ids: list[list[int]] = [[] for _ in range(n)]
    out_lps: list[list[float]] = [[] for _ in range(n)]
    finished = [False] * n
    active = [limits[i] > 0 for i in range(n)]
    live = list(range(n))  # the original row of each position still in the batch
    can_drop = logits_processor is None or hasattr(logits_processor, "select")
    sequences = input_ids
    cache_kw = cache_keyword(model)
    for _step in range(max(limits, default=0)):
        if not any(active):
            break
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1]:]
        out = model(input_ids=step_input, attention_mask=attention, position_ids=positions,
                    use_cache=True, logits_to_keep=1, **{cache_kw: cache})
        cache = returned_cache(out)
        logits = out.logits[:, -1, :].float()
        logprobs = logits.log_softmax(-1)
        scores = logits_processor(sequences, logits) if logits_processor is not None else logits
        next_ids = scores.argmax(-1)
        chosen = logprobs.gather(1, next_ids[:, None])[:, 0].tolist()
        next_list = next_ids.tolist()
        for b, i in enumerate(live):
            if not active[i]:
                next_list[b] = pad
                continue
            tid = next_list[b]
            if tid in stops:
                finished[i], active[i] = True, False
                continue
            out_ids[i].append(tid)
            out_lps[i].append(chosen[b])
            if len(out_ids[i]) >= limits[i] or (stop_row is not None and stop_row(i, out_ids[i])):
                active[i] = False
                finished[i] = len(out_ids[i]) < limits[i]  # a cut repetition loop counts as finished
        step_input = torch.tensor(next_list, dtype=torch.long, device=device)[:, None]
        sequences = torch.cat([sequences, step_input], dim=1)
        attention = torch.cat([attention, torch.ones((len(live), 1), dtype=attention.dtype, device=device)], dim=1)
        keep = [b for b, i in enumerate(live) if active[i]]
        if can_drop and 0 < len(keep) < len(live) and hasattr(cache, "batch_select_indices"):
            # Finished rows leave the batch: on a CPU a decode step costs about linearly in its rows, and one long
            # answer would otherwise keep every finished row of its batch computing padding.
            index = torch.tensor(keep, dtype=torch.long, device=device)
            cache.batch_select_indices(index)
            sequences, attention, step_input = sequences[index], attention[index], step_input[index]
            if logits_processor is not None:
                logits_processor.select(keep)
            live = [live[b] for b in keep]
    return [Generated(tokenizer.decode(out_ids[i], skip_special_tokens=True), out_ids[i], out_lps[i], finished[i])
            for i in range(n)]


class ContinuousBatchingUnsupported(RuntimeError):
    """The model's KV cache is not one whose rows can be padded and joined (a sliding-window or quantised cache):
    a server over it batches per call instead."""


def cache_layers(cache: Any) -> list[Any]:
    """The layers of a transformers ``DynamicCache``, each with ``keys`` and ``values`` of shape
    ``[rows, heads, positions, head size]``; ContinuousBatchingUnsupported for any other cache."""
    layers = getattr(cache, "layers", None)
    if not layers or any(getattr(layer, "is_sliding", False) or not isinstance(getattr(layer, "keys", None),
                                                                               torch.Tensor)
                         for layer in layers):
        raise ContinuousBatchingUnsupported(f"rows cannot join a running batch over a {type(cache).__name__} "
                                            "(a DynamicCache of full-attention layers is needed)")
    return list(layers)


def _pad_left(t: torch.Tensor, width: int, dim: int) -> torch.Tensor:
    missing = width - t.shape[dim]
    if missing <= 0:
        return t
    shape = list(t.shape)
    shape[dim] = missing
    return torch.cat([t.new_zeros(shape), t], dim=dim)


@dataclass(eq=False)
class DecodeRow:
    """One prompt answered in a ``DecodeBatch``. ``adjust(generated ids, scores)`` may rewrite the row's next-token
    scores (a 1-D tensor; constraints, biases); ``stop(generated ids)`` is asked after each new token whether to
    stop early; ``owner`` is whatever the caller needs to route the answer back."""

    ids: list[int]
    limit: int
    adjust: Callable[[list[int], torch.Tensor], torch.Tensor] | None = None
    stop: Callable[[list[int]], bool] | None = None
    owner: Any = None
    out_ids: list[int] = field(default_factory=list)
    out_lps: list[float] = field(default_factory=list)
    finished: bool = False  # ended by an end-of-turn token (or a stop), not by its limit
    done: bool = False

    def answer(self, tokenizer: Any) -> Generated:
        return Generated(tokenizer.decode(self.out_ids, skip_special_tokens=True), self.out_ids, self.out_lps,
                         self.finished)


class DecodeBatch:
    """Greedy decoding in which rows join and leave between steps (iteration-level, or continuous, batching).

    ``add`` prefills new rows in one forward pass of their own (laid out as in ``generate_batch``: the shared
    prefix's cache, left padding, the row) and joins their KV cache to the running batch's, each side left-padded
    to the longer one (the attention mask hides the padding; positions come from the mask, so a row sees exactly
    what it would see alone). ``step`` runs one decode step for every row. A row leaves the batch as soon as it is
    done, and columns no row attends to any more are cut off the left, so the cache holds what the rows still
    running need. Answers are ``generate_batch``'s up to floating-point differences of batch shape.
    """

    def __init__(self, model: Any, tokenizer: Any, prefix: PrefixCache | None = None):
        self.model, self.tokenizer, self.prefix = model, tokenizer, prefix
        self.device = next(model.parameters()).device
        self.pad = pad_token_id(tokenizer)
        self.stops = set(stop_token_ids(tokenizer))
        self.cache_kw = cache_keyword(model)
        self.rows: list[DecodeRow] = []
        self.cache: Any = None
        self.attention = torch.zeros((0, 1), dtype=torch.long, device=self.device)  # cache + the pending token
        self.next_ids = torch.zeros((0, 1), dtype=torch.long, device=self.device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def positions(self) -> int:
        """KV positions the batch holds (rows x cache length, padding included): what bounds its memory."""
        return self.attention.numel()

    def cost_with(self, rows: Sequence[DecodeRow]) -> int:
        """``positions`` once ``rows`` joined."""
        if not rows:
            return self.positions
        width = max([self.attention.shape[1]] + [len(r.ids) + 1 for r in rows])
        return width * (len(self.rows) + len(rows))

    @torch.inference_mode()
    def add(self, rows: Sequence[DecodeRow]) -> list[DecodeRow]:
        """Prefill ``rows`` and join them to the batch; returns those already done (their first token ended them,
        or their limit is 0)."""
        done = [r for r in rows if r.limit <= 0]
        for r in done:
            r.done = True
        rows = [r for r in rows if r.limit > 0]
        if not rows:
            return done
        input_ids, attention, cache, skip = prompt_layout([r.ids for r in rows], self.pad, self.prefix, self.device)
        step_input = input_ids[:, skip:]
        positions = (attention.cumsum(-1) - 1).clamp(min=0)[:, -step_input.shape[1]:]
        out = self.model(input_ids=step_input, attention_mask=attention, position_ids=positions, use_cache=True,
                         logits_to_keep=1, **{self.cache_kw: cache})
        next_ids = self._choose(rows, out.logits[:, -1, :])
        self._join(returned_cache(out), torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1),
                   next_ids, rows)
        return done + self._leave()

    @torch.inference_mode()
    def step(self) -> list[DecodeRow]:
        """One decode step for every row; returns the rows it ended (they have left the batch)."""
        if not self.rows:
            return []
        positions = (self.attention.cumsum(-1) - 1).clamp(min=0)[:, -1:]
        out = self.model(input_ids=self.next_ids, attention_mask=self.attention, position_ids=positions,
                         use_cache=True, logits_to_keep=1, **{self.cache_kw: self.cache})
        self.cache = returned_cache(out)
        self.next_ids = self._choose(self.rows, out.logits[:, -1, :])
        self.attention = torch.cat([self.attention, torch.ones_like(self.attention[:, :1])], dim=1)
        return self._leave()

    def remove(self, rows: Sequence[DecodeRow]) -> None:
        """Take ``rows`` out of the batch unanswered (their client has gone)."""
        for r in rows:
            r.done = True
        self._leave()

    def _choose(self, rows: Sequence[DecodeRow], logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        logprobs = logits.log_softmax(-1)
        scores = logits
        if any(r.adjust is not None for r in rows):
            scores = logits.clone()
            for b, r in enumerate(rows):
                if r.adjust is not None:
                    scores[b] = r.adjust(r.out_ids, scores[b])
        next_ids = scores.argmax(-1)
        chosen = logprobs.gather(1, next_ids[:, None])[:, 0].tolist()
        next_list = next_ids.tolist()
        for b, r in enumerate(rows):
            tid = next_list[b]
            if tid in self.stops:
                r.finished = r.done = True
                continue
            r.out_ids.append(tid)
            r.out_lps.append(chosen[b])
            if len(r.out_ids) >= r.limit or (r.stop is not None and r.stop(r.out_ids)):
                r.done = True
                r.finished = len(r.out_ids) < r.limit  # a cut repetition loop counts as finished
        return next_ids[:, None]

    def _join(self, cache: Any, attention: torch.Tensor, next_ids: torch.Tensor, rows: Sequence[DecodeRow]) -> None:
        new_layers = cache_layers(cache)
        if not self.rows:
            self.cache, self.attention, self.next_ids, self.rows = cache, attention, next_ids, list(rows)
            return
        width = max(self.attention.shape[1], attention.shape[1])
        for mine, theirs in zip(cache_layers(self.cache), new_layers, strict=True):
            mine.keys = torch.cat([_pad_left(mine.keys, width - 1, 2), _pad_left(theirs.keys, width - 1, 2)])
            mine.values = torch.cat([_pad_left(mine.values, width - 1, 2), _pad_left(theirs.values, width - 1, 2)])
        self.attention = torch.cat([_pad_left(self.attention, width, 1), _pad_left(attention, width, 1)])
        self.next_ids = torch.cat([self.next_ids, next_ids])
        self.rows.extend(rows)

    def _leave(self) -> list[DecodeRow]:
        gone = [r for r in self.rows if r.done]
        if not gone:
            return []
        keep = [b for b, r in enumerate(self.rows) if not r.done]
        self.rows = [self.rows[b] for b in keep]
        if not keep:
            self.cache = None
            self.attention = self.attention[:0, :1]
            self.next_ids = self.next_ids[:0]
            return gone
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.attention, self.next_ids = self.attention[index], self.next_ids[index]
        layers = cache_layers(self.cache)
        for layer in layers:
            layer.keys, layer.values = layer.keys[index], layer.values[index]
        attended = self.attention.any(0).nonzero()
        cut = int(attended[0]) if len(attended) else 0
        if cut:  # columns no row still running attends to: the prompts and padding of rows that left
            self.attention = self.attention[:, cut:]
            for layer in layers:
                layer.keys, layer.values = layer.keys[:, :, cut:], layer.values[:, :, cut:]
        return gone
