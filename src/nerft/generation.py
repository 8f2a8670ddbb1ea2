"""Batched greedy generation for chat prompts, shared by training-time dev evaluation and the predictors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .prompts import Prompt


@dataclass
class Generated:
    text: str
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)  # log-probability of each generated token
    finished: bool = True  # False when it stopped at max_new_tokens instead of an end-of-turn token


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


def prompt_ids(tokenizer, prompt: Prompt, text: str) -> list[int]:
    """Token ids of the chat prompt for ``text``, ending with the assistant header."""
    ids = tokenizer.apply_chat_template(prompt.messages(text), add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "input_ids"):
        ids = ids["input_ids"]
    return list(ids)


def pad_token_id(tokenizer) -> int:
    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return stop_token_ids(tokenizer)[-1]


@torch.inference_mode()
def generate_batch(model, tokenizer, batch_ids: Sequence[Sequence[int]], max_new_tokens: int | Sequence[int],
                   logits_processor=None) -> list[Generated]:
    """Greedy-decode one batch of prompts (left-padded); stop each row at an end-of-turn token."""
    device = next(model.parameters()).device
    pad = pad_token_id(tokenizer)
    width = max(len(ids) for ids in batch_ids)
    input_ids = torch.full((len(batch_ids), width), pad, dtype=torch.long)
    attention = torch.zeros((len(batch_ids), width), dtype=torch.long)
    for i, ids in enumerate(batch_ids):
        input_ids[i, width - len(ids):] = torch.tensor(list(ids), dtype=torch.long)
        attention[i, width - len(ids):] = 1
    limits = [max_new_tokens] * len(batch_ids) if isinstance(max_new_tokens, int) else list(max_new_tokens)
    stops = stop_token_ids(tokenizer)
    out = model.generate(
        input_ids=input_ids.to(device),
        attention_mask=attention.to(device),
        max_new_tokens=max(1, max(limits)),
        do_sample=False,
        eos_token_id=stops,
        pad_token_id=pad,
        output_scores=True,
        return_dict_in_generate=True,
        logits_processor=logits_processor,
    )
    new_tokens = out.sequences[:, width:].cpu()
    steps = torch.stack(out.scores, dim=1).float().log_softmax(-1).cpu() if out.scores else None
    results = []
    for i in range(len(batch_ids)):
        ids, lps, finished = [], [], False
        for t in range(min(new_tokens.shape[1], limits[i])):
            tid = int(new_tokens[i, t])
            if tid in stops:
                finished = True
                break
            ids.append(tid)
            lps.append(float(steps[i, t, tid]) if steps is not None else 0.0)
        results.append(Generated(tokenizer.decode(ids, skip_special_tokens=True), ids, lps, finished))
    return results
