"""What the local engine backends (llama.cpp, CTranslate2) share beyond ``EnginePredictor``: the transformers
backend's repetition guard, asked after each token of each row, so that a row stuck in a loop stops where the
transformers backend stops it and the engines' answers match its answers."""

from __future__ import annotations

from ..formats import get_format
from ..generation import Generated


def guarded_generate(predictor, texts: list[str], ids: list[list[int]], limits: list[int]) -> list[Generated]:
    """``predictor.engine.generate`` with a ``RepetitionGuard`` over ``texts``; the predictor's stats counted."""
    from .transformers_backend import RepetitionGuard

    guard = RepetitionGuard(predictor.tokenizer, texts, predictor.labels, get_format(predictor.prompt.output_format))
    out = predictor.engine.generate(ids, limits, stop_row=guard)
    predictor.stats.batches += 1
    predictor.stats.windows += len(texts)
    predictor.stats.unfinished += sum(not g.finished for g in out)
    return out
