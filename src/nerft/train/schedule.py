"""The learning-rate schedule (over steps, or over a wall-clock budget) and the clock that measures training time
without evaluation and checkpoint pauses."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable

import torch

from .config import OptimConfig


class TrainingClock:
    """Seconds spent training: wall time since ``start()`` less the ``paused()`` blocks (evaluation, checkpoints),
    plus ``before``, what earlier sessions of a resumed run spent."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.start()

    def start(self) -> None:
        self._since, self._paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self._since - self._paused

    @contextlib.contextmanager
    def paused(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - started


def build_schedule(optimizer: torch.optim.Optimizer, cfg: OptimConfig, total_steps: int,
                   spent: Callable[[], float] | None = None) -> torch.optim.lr_scheduler.LRScheduler:
    """The learning-rate schedule. With ``cfg.max_minutes`` the schedule's clock is the share of the budget that
    ``spent()`` (training seconds so far) says is used, or the share of ``total_steps`` done if that is larger."""
    from transformers import get_scheduler

    if cfg.max_minutes is None:
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
        name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    if spent is None:
        raise ValueError("a time-budget schedule needs the training clock")
    budget_s = cfg.max_minutes * 60

    def factor(step: int) -> float:
        if cfg.warmup_steps is not None and step < cfg.warmup_steps:
            return step / max(cfg.warmup_steps, 1)
        done = min(1.0, max(spent() / budget_s, step / max(total_steps, 1)))
        warm = 0.0 if cfg.warmup_steps is not None else cfg.warmup_ratio
        if done < warm:
            return done / warm
        rest = (done - warm) / max(1.0 - warm, 1e-9)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * rest))
        return 1.0 - rest if cfg.schedule == "linear" else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
