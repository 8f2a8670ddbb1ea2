"""``nerft export``: merge the LoRA adapter into the base weights and write a standard Hugging Face folder.

The folder (safetensors, config.json, generation_config.json, tokenizer files) loads with plain transformers and
vLLM; its nerft.json (``merged: true``, no base model) lets ``nerft predict/serve --model`` use it directly, and its
README.md is a model card (``model_card``: base model, labels, prompt, training data and scores, how to load it).
It is written to a temporary folder beside the destination and renamed into place only when complete;
``--push-to-hub REPO_ID`` then uploads it to the Hugging Face Hub. The run's decoding.yaml (the decoding
``nerft train`` chose on dev) comes along with the lexicon it reads, so ``nerft predict --model OUT`` decodes as
``--model RUN`` does (``--no-run-decoding``: the folder gets none).
"""

from .cli import register, run_export
from .merge import ENGINE_FORMATS, copy_decoding, export_for_engine, export_merged, export_model

__all__ = ["ENGINE_FORMATS", "copy_decoding", "export_for_engine", "export_merged", "export_model", "register",
           "run_export"]
