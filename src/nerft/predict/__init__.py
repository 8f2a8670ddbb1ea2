"""``nerft predict``: texts in, entities with character offsets and confidence scores out.

The package imports only downward: ``options`` (load and decoding options) <- ``base`` (the ``Predictor``
protocol, its ``Prediction`` result, the ``DecodingPlan`` every backend shares) <- ``transformers_backend``,
``vllm_backend`` and ``openai_backend`` (an OpenAI-compatible server) <- ``loading`` (run directories, exported
folders, adapters) <- ``files`` (resumable corpus prediction) <- ``ray_engine`` (the same over a Ray cluster,
sharded) <- ``cli``.
"""

from __future__ import annotations

import importlib

# name -> submodule. Loaded on first use, so that commands which only declare the load flags (evaluate, export,
# serve's argument parsing) do not import torch and transformers to print --help.
_EXPORTS = {
    "DecodingPlan": "base", "Prediction": "base", "Predictor": "base", "PredictStats": "base",
    "answer_budget": "base", "entity_overhead_tokens": "base", "sorted_batches": "base",
    "add_load_arguments": "cli", "register": "cli", "run_predict": "cli",
    "predict_file": "files", "read_inputs": "files",
    "LoadedModel": "loading", "ModelLocation": "loading", "load_model_and_tokenizer": "loading",
    "load_predictor": "loading", "locate_model": "loading", "open_predictor": "loading", "tutorial_prompt": "loading",
    "LoadOptions": "options", "OpenAIOptions": "options", "PredictOptions": "options", "VllmOptions": "options",
    "RepetitionGuard": "transformers_backend", "TransformersPredictor": "transformers_backend",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
