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


def end_of_turn_id(tokenizer) -> int:
    """The token that closes an assistant turn in the chat template (``<|im_end|>`` for Qwen2)."""
    tid = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid is not None:
        return tid
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has neither <|im_end|> nor an eos token")
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer) -> list[int]:
    ids = {end_of_turn_id(tokenizer)}
    for tok in ("<|endoftext|>",):
        tid = tokenizer.convert_tokens_to_ids(tok)
        if isinstance(tid, int) and tid != tokenizer.unk_token_id:
            ids.add(tid)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def prompt_ids(tokenizer, prompt: Prompt, text: str, hint: str = "") -> list[int]:
    """Token ids of the chat prompt for ``text`` (and its lexicon ``hint``), ending with the assistant header."""
    ids = tokenizer.apply_chat_template(prompt.messages(text, hint), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def shared_prefix_ids(tokenizer, prompt: Prompt) -> list[int]:
    """The longest token prefix that every prompt built from ``prompt`` starts with (system turn + user header)."""
    a, b = prompt_ids(tokenizer, prompt, "甲"), prompt_ids(tokenizer, prompt, "Zq 9")
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def pad_token_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stop_token_ids(tokenizer)[-1]


def cache_keyword(model) -> str:
    """The forward() keyword that takes the KV cache: ``cache`` in transformers 5 releases that renamed it (there
    ``past_key_values`` is a deprecated alias, to be removed in 5.40), ``past_key_values`` before."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a peft model's transformers model
    try:
        params = inspect.signature(base.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    return "cache" if "cache" in params else "past_key_values"


def returned_cache(out):
    """The KV cache a forward pass returned (``out.cache`` in transformers 5, ``out.past_key_values`` before)."""
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values


class PrefixCache:
    """The KV cache of a prompt prefix shared by all rows, computed once per model and copied into each batch.

    The batch is laid out ``[prefix][left padding][row tokens]``: the attention mask hides the padding and the
    position ids come from the mask, so each row sees exactly what it would see alone.
    """

    def __init__(self, model, prefix: Sequence[int]):
        self.ids = list(prefix)
        device = next(model.parameters()).device
        with torch.inference_mode():
            out = model(input_ids=torch.tensor([self.ids], device=device), use_cache=True, logits_to_keep=1)
        self._cache = returned_cache(out)

    def for_batch(self, batch_size: int):
        cache = copy.deepcopy(self._cache)
        cache.batch_repeat_interleave(batch_size)
        return cache


@torch.inference_mode()
def generate_batch(model, tokenizer, batch_ids: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                   logits_processor=None, *, prefix: PrefixCache | None = None,
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
    input_ids, attention = input_ids.to(device), attention.to(device)
    cache = prefix.for_batch(n) if skip else None
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
