"""``nerft export``'s command line: its flags and the command, over ``merge``."""

from __future__ import annotations

import argparse
from typing import Any

from .. import config as cfglib
from ..schema import NerftError
from .merge import ENGINE_FORMATS, export_for_engine


def register(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    from ..inference.options import add_load_arguments

    p = subparsers.add_parser(name, help=summary, description=summary)
    add_load_arguments(p, skip={"backend", "vllm", "openai", "llamacpp", "ct2"})
    p.add_argument("--output", "--out", dest="output", required=True, help="destination folder")
    p.add_argument("--output-format", dest="export_format", choices=ENGINE_FORMATS, default="hf",
                   help="hf: merged Hugging Face folder (transformers, vLLM); gguf: one GGUF file + Ollama Modelfile "
                        "(--backend llamacpp); ct2: CTranslate2 model (--backend ct2)")
    p.add_argument("--quant", help="weights of --output-format gguf: q8_0 (default), q4_k_m, f16, f32; of --output-format ct2: "
                                   "int8 (default), int8_float32, int8_bfloat16, int16, bfloat16, float16, float32")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--push-to-hub", metavar="REPO_ID", help="then upload the folder to this Hugging Face Hub model "
                                                             "repository (created if needed; token from HF_TOKEN)")
    p.add_argument("--private", action="store_true", help="create the --push-to-hub repository private")
    p.set_defaults(func=run_export)
    return p


def run_export(args: argparse.Namespace) -> int:
    from ..inference.options import LoadOptions

    load = cfglib.build_config(LoadOptions, args)
    if args.private and not args.push_to_hub:
        raise NerftError("--private goes with --push-to-hub REPO_ID")
    out = export_for_engine(load, args.output, args.export_format, args.quant, overwrite=args.overwrite,
                            repo_id=args.push_to_hub)
    print(f"wrote merged model to {out}" if args.export_format == "hf" else
          f"wrote the merged model for {args.export_format} to {out}")
    if args.push_to_hub:
        from .model_card import push_to_hub

        print(f"uploaded to {push_to_hub(out, args.push_to_hub, private=args.private)}")
    return 0
