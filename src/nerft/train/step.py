"""One optimizer step, importable on its own (``nerft train`` and the GPU benchmark run this same code).

``SupervisedLoss`` computes the summed answer-token loss with the lm_head only at supervised positions;
``train_step`` runs a step's micro-batches (gradient accumulation, the loss normalised by the step's supervised
tokens, DDP gradient sync only on the last micro-batch), clips, steps the optimizer and the schedule.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from .data import IGNORE


class SupervisedLoss(torch.nn.Module):
    """Summed next-token cross-entropy over supervised positions, and their count.

    The lm_head (vocabulary 151,936 wide for Qwen2) runs only on the hidden states that predict an answer token,
    not on every prompt position: same loss, a much cheaper step. Wrapping the peft model in this module keeps
    DDP/DeepSpeed in charge of the forward pass (gradient sync hooks run). A batch with ``prefix_ids``
    (``data.shared_prefix``) runs the shared prompt prefix once (``rows_after_prefix``). ``autocast``: a 16-bit
    dtype the forward pass runs its matmuls in (``optim.autocast``); the loss is computed in fp32 either way.
    """

    def __init__(self, peft_model: Any, autocast: torch.dtype | None = None):
        super().__init__()
        self.peft_model = peft_model
        self.autocast = autocast

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None, prefix_ids: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        causal_lm = self.peft_model.get_base_model()  # LoRA layers are injected in place
        mixed = (torch.autocast(input_ids.device.type, dtype=self.autocast) if self.autocast is not None
                 else contextlib.nullcontext())
        with mixed:
            if prefix_ids is None:
                hidden = causal_lm.model(input_ids=input_ids, attention_mask=attention_mask,
                                         position_ids=position_ids, use_cache=False).last_hidden_state
            else:
                hidden = rows_after_prefix(causal_lm.model, prefix_ids, input_ids, attention_mask, position_ids)
            targets = labels[:, 1:]
            supervised = targets != IGNORE
            logits = causal_lm.lm_head(hidden[:, :-1][supervised])
        loss = F.cross_entropy(logits.float(), targets[supervised], reduction="sum")
        return loss, supervised.sum()


def rows_after_prefix(body: torch.nn.Module, prefix_ids: torch.Tensor, input_ids: torch.Tensor,
                      attention_mask: torch.Tensor | None, position_ids: torch.Tensor | None) -> torch.Tensor:
    """Hidden states of the rows of a ``collate_shared_prefix`` batch: the shared prefix (1 x P) runs once, with
    gradients, its KV cache is repeated over the B rows, and the rows (B x W) run after it.

    The repeat is part of the autograd graph, so each row's gradient flows back through the one prefix forward
    and autograd sums the rows' contributions: the gradients of B separate prefixes, computed once.
    """
    from ..generation import cache_keyword, returned_cache

    cache = returned_cache(body(input_ids=prefix_ids, use_cache=True))
    cache.batch_repeat_interleave(input_ids.shape[0])
    return body(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=True,
                **{cache_keyword(body): cache}).last_hidden_state


@dataclass
class StepStats:
    """What one optimizer step processed (per process)."""

    loss_sum: float = 0.0  # summed token cross-entropy over the supervised tokens
    supervised_tokens: int = 0
    real_tokens: int = 0  # tokens that are not padding
    padded_tokens: int = 0  # tokens computed, padding included
    examples: int = 0


def count_batch(batch: dict[str, torch.Tensor]) -> StepStats:
    """Token and example counts of one collated micro-batch (padded, packed or shared-prefix); a shared prefix
    counts once, as it is computed once."""
    ids = batch["input_ids"]
    mask = batch.get("attention_mask")
    if "tags" in batch:  # a tagger's batch (tagger.positions.collate_tags): each character with a known tag
        return StepStats(0.0, int((batch["tags"] != IGNORE).sum()), int(batch["attention_mask"].sum()),
                         ids.numel(), ids.shape[0])
    supervised = int((batch["labels"][:, 1:] != IGNORE).sum())
    if "prefix_ids" in batch:
        n = batch["prefix_ids"].shape[1]
        return StepStats(0.0, supervised, n + int(batch["attention_mask"][:, n:].sum()), n + ids.numel(),
                         ids.shape[0])
    if mask is None:  # packed: one row, position ids restart at each example
        return StepStats(0.0, supervised, ids.numel(), ids.numel(), int((batch["position_ids"] == 0).sum()))
    return StepStats(0.0, supervised, int(mask.sum()), ids.numel(), ids.shape[0])


def accumulate_gradients(loss_module: torch.nn.Module, micro_batches: Sequence[dict[str, torch.Tensor]], *,
                         accelerator: Any = None, device: torch.device | str | None = None) -> StepStats:
    """Forward and backward every micro-batch of one optimizer step; gradients add up in the parameters.

    The loss is the sum over the step's supervised tokens divided by their count, so every answer token weighs the
    same whatever micro-batch it is in. With an ``accelerator`` (accelerate), backward and the DDP/DeepSpeed
    gradient sync go through it; without one, plain torch on ``device``.
    """
    counts = [count_batch(b) for b in micro_batches]
    n_supervised = max(sum(c.supervised_tokens for c in counts), 1)
    device = accelerator.device if accelerator is not None else device
    stats = StepStats()
    for j, batch in enumerate(micro_batches):
        last = j == len(micro_batches) - 1
        with _gradient_sync(accelerator, loss_module, last):
            loss_sum, _ = loss_module(**{k: v.to(device) for k, v in batch.items()})
            scaled = loss_sum / n_supervised
            if accelerator is not None:
                accelerator.backward(scaled)
            else:
                scaled.backward()
        stats.loss_sum += loss_sum.item()
        for name in ("supervised_tokens", "real_tokens", "padded_tokens", "examples"):
            setattr(stats, name, getattr(stats, name) + getattr(counts[j], name))
    return stats


def apply_gradients(optimizer: Any, params: Sequence[torch.nn.Parameter], max_grad_norm: float = 1.0,
                    scheduler: Any = None, accelerator: Any = None) -> None:
    """Clip, step the optimizer and the schedule, clear the gradients."""
    if max_grad_norm > 0:
        if accelerator is not None:
            accelerator.clip_grad_norm_(params, max_grad_norm)
        else:
            torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    optimizer.zero_grad(set_to_none=True)


def train_step(loss_module: torch.nn.Module, micro_batches: Sequence[dict[str, torch.Tensor]], optimizer: Any, *,
               params: Sequence[torch.nn.Parameter], max_grad_norm: float = 1.0, scheduler: Any = None,
               accelerator: Any = None, device: torch.device | str | None = None) -> StepStats:
    """One whole optimizer step: ``accumulate_gradients`` then ``apply_gradients``."""
    stats = accumulate_gradients(loss_module, micro_batches, accelerator=accelerator, device=device)
    apply_gradients(optimizer, params, max_grad_norm, scheduler, accelerator)
    return stats


def _gradient_sync(accelerator: Any, loss_module: torch.nn.Module, last: bool):
    """Under DDP, gradients are all-reduced only on a step's last micro-batch; DeepSpeed is told the same."""
    if accelerator is None:
        return contextlib.nullcontext()
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        accelerator.gradient_state._set_sync_gradients(last)
    return contextlib.nullcontext() if last else accelerator.no_sync(loss_module)


class ThroughputMeter:
    """Loss per supervised token since the last log record, and tokens per second since the session started."""

    def __init__(self, world: int):
        self.world, self.started = world, time.perf_counter()
        self.tokens = 0
        self.loss_sum, self.supervised = 0.0, 0
        self.real, self.padded, self.examples = 0, 0, 0

    def add(self, stats: StepStats) -> None:
        self.tokens += stats.real_tokens
        self.loss_sum += stats.loss_sum
        self.supervised += stats.supervised_tokens
        self.real += stats.real_tokens
        self.padded += stats.padded_tokens
        self.examples += stats.examples

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def tokens_per_s(self) -> float:
        return self.tokens * self.world / max(self.elapsed(), 1e-9)

    def window_loss(self) -> float:
        return self.loss_sum / max(self.supervised, 1)

    def record(self) -> dict[str, Any]:
        """The log record of the window since the last one (which it then starts afresh); token and example
        counts are this process's."""
        record = {"loss": round(self.window_loss(), 5), "tokens_per_s": round(self.tokens_per_s(), 1),
                  "supervised_tokens": self.supervised, "real_tokens": self.real, "padded_tokens": self.padded,
                  "examples": self.examples}
        self.loss_sum, self.supervised, self.real, self.padded, self.examples = 0.0, 0, 0, 0, 0
        return record
