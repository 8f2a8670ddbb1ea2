"""``nerft predict``: texts in, entities with character offsets and confidence scores out.

The package imports only downward: ``options`` (load and decoding options) <- ``base`` (the ``Predictor``
protocol, its ``Prediction`` result, the ``DecodingPlan`` every backend shares) <- ``transformers_backend``,
``vllm_backend`` and ``openai_backend`` (an OpenAI-compatible server) <- ``loading`` (run directories, exported
folders, adapters) <- ``files`` (resumable corpus prediction) <- ``ray_engine`` (the same over a Ray cluster,
sharded) <- ``cli``.
"""

from __future__ import annotations

from .base import (
    DecodingPlan,
    Prediction,
    Predictor,
    PredictStats,
    answer_budget,
    entity_overhead_tokens,
    sorted_batches,
)
from .cli import add_load_arguments, register, run_predict
from .files import predict_file, read_inputs
from .loading import (
    LoadedModel,
    ModelLocation,
    load_model_and_tokenizer,
    load_predictor,
    locate_model,
    open_predictor,
    tutorial_prompt,
)
from .options import LoadOptions, OpenAIOptions, PredictOptions, VllmOptions
from .transformers_backend import RepetitionGuard, TransformersPredictor

__all__ = ["Predictor", "Prediction", "PredictStats", "DecodingPlan", "PredictOptions", "LoadOptions", "VllmOptions",
           "OpenAIOptions",
           "TransformersPredictor", "RepetitionGuard", "load_predictor", "open_predictor", "locate_model",
           "load_model_and_tokenizer", "LoadedModel", "ModelLocation", "tutorial_prompt", "predict_file",
           "read_inputs", "register", "run_predict", "add_load_arguments", "answer_budget", "entity_overhead_tokens",
           "sorted_batches"]
