"""``nerft export``: merge the LoRA adapter into the base weights and write a standard Hugging Face folder.

The folder (safetensors, config.json, generation_config.json, tokenizer files) loads with plain transformers and
vLLM; its nerft.json (``merged: true``, no base model) lets ``nerft predict/serve --model`` use it directly. It is
written to a temporary folder beside the destination and renamed into place only when complete.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from .rundir import RunInfo
from .schema import NerftError, atomic_dir


def export_merged(model: str | Path | None, output: str | Path, *, base: str | Path | None = None,
                  adapter: str | Path | None = None, dtype: str | None = None, overwrite: bool = False) -> Path:
    """Merge and write; returns the output folder."""
    from .predict import load_model_and_tokenizer, resolve_model

    output = Path(output)
    if output.exists() and not overwrite:
        raise NerftError(f"{output} exists; pass --overwrite to replace it")
    where = resolve_model(model, base, adapter)
    if where["adapter"] is None and where["info"] is not None and where["info"].merged:
        raise NerftError(f"{model} is already a merged folder")
    lm, tokenizer, labels, prompt, _ = load_model_and_tokenizer(model, base, adapter, dtype=dtype, merge=True)
    info = where["info"]
    max_length = info.max_length if info else 512
    extra = dict(info.extra) if info else {}
    extra["merged_from"] = {"base_model": str(where["base"]), "adapter": str(where["adapter"])}
    with atomic_dir(output) as tmp:
        lm.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if lm.generation_config is not None:
            from .generation import stop_token_ids

            lm.generation_config.eos_token_id = stop_token_ids(tokenizer)
            lm.generation_config.save_pretrained(tmp)
        RunInfo(base_model=None, labels=labels, prompt=prompt, merged=True, max_length=max_length,
                extra=extra).save(tmp)
    return output


def register(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=summary)
    p.add_argument("--model", help="run directory from `nerft train` (or a peft adapter folder)")
    p.add_argument("--base", help="base model folder (overrides the run directory's; needed for a bare adapter)")
    p.add_argument("--adapter", help="a peft adapter folder, e.g. the tutorial's checkpoint-N")
    p.add_argument("--output", required=True, help="destination folder")
    p.add_argument("--dtype", default=None, help="float32 (default) or bfloat16")
    p.add_argument("--overwrite", action="store_true")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    out = export_merged(args.model, args.output, base=args.base, adapter=args.adapter, dtype=args.dtype,
                        overwrite=args.overwrite)
    print(f"wrote merged model to {out}")
    return 0
