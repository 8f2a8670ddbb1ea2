"""``nerft predict``: texts on the command line (a table or JSON lines) or a corpus file (resumable JSONL)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from .. import config as cfglib
from ..flags import add_deprecated, add_deprecated_value
from ..inference.options import LoadOptions, PredictOptions, add_load_arguments
from ..prompts import Prompt
from ..schema import Entity, NerftError
from ..textio import ENCODING_HELP, require_file, require_output_file
from .ray_engine import RayOptions
from .writers import OUTPUT_FORMATS

logger = logging.getLogger("nerft.predict")


def register(subparsers: Any, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=summary)
    p.add_argument("texts", nargs="*", help="texts to analyse (or use --input)")
    p.add_argument("--input", help="a .txt (one text a line) or .jsonl (text, id) file")
    p.add_argument("--output", "--out", dest="output",
                   help="JSONL output; an existing one is resumed (finished ids are skipped)")
    p.add_argument("--only-labels", dest="labels", nargs="+", metavar="LABEL",
                   help="extract only these label codes")
    p.add_argument("--answer-format", dest="output_format", help="must match the model's answer format (checked)")
    p.add_argument("--preset", help="must match the model's prompt style (checked)")
    p.add_argument("--raw", action="store_true", help="also write the raw answer as `output` (for nerft evaluate)")
    p.add_argument("--output-format", dest="output_file_format", choices=("table", *OUTPUT_FORMATS),
                   help="texts on the command line: a table (default) or nerft (JSON lines); --output as nerft "
                        "JSONL (default, resumable), a Label Studio task array with pre-annotations "
                        "(+ <stem>.label_config.xml), doccano JSONL or an HTML page of a sample with the entities "
                        "marked; the other formats are written at the end from a resumable <stem>.nerft.jsonl "
                        "beside --output")
    p.add_argument("--ray", action=argparse.BooleanOptionalAction, default=False,
                   help="predict on a Ray cluster (pip install 'nerft[ray]', --ray.* flags); --input is then "
                        "files, globs or folders (one shard per file) and --output a folder of one JSONL per "
                        "shard, resumed by shard")
    p.add_argument("--encoding", default="utf-8", help=ENCODING_HELP.replace("files", "file") + " (for --input)")
    # the spellings of nerft 0.x, kept for one release (docs/cli.md)
    add_deprecated(p, "--labels", "--only-labels", dest="labels", nargs="+")
    add_deprecated(p, "--format", "--answer-format", dest="output_format")
    add_deprecated(p, "--json", "--output-format nerft", dest="output_file_format", action="store_const",
                   const="nerft")
    add_deprecated_value(p, "--engine", "ray", {"ray": (True, "--ray"), "local": (False, "--no-ray")})
    p.add_argument("--config", metavar="FILE.yaml", help="decoding options (the flags below) from a YAML file, over "
                                                        "the run's decoding.yaml")
    add_load_arguments(p)
    cfglib.add_config_arguments(p, PredictOptions)
    cfglib.add_config_arguments(p, RayOptions, prefix="ray.")
    p.set_defaults(func=run_predict)
    return p


def check_preset(prompt: Prompt, output_format: str | None, preset: str | None) -> None:
    if output_format and output_format != prompt.output_format:
        raise NerftError(f"--answer-format {output_format} does not match the model, trained with "
                         f"answer format {prompt.output_format}; leave --answer-format out")
    if preset and preset != prompt.style:
        raise NerftError(f"--preset {preset} does not match the model, trained with prompt style "
                         f"{prompt.style}; leave --preset out")


def print_table(texts: list[str], results: list[list[Entity]]) -> None:
    for text, ents in zip(texts, results, strict=True):
        print(text)
        if not ents:
            print("  (no entities)")
        for e in ents:
            score = f"{e.score:.3f}" if e.score is not None else "-"
            print(f"  [{e.start}, {e.end})\t{e.label}\t{e.text}\t{score}")


def answer_stamp(load: LoadOptions, options: PredictOptions) -> dict:
    """Everything that changes an answer: the model (paths resolved), the backend and precision, every decoding
    option but the batch size and the prefix cache (they change speed only). Resuming an --output needs the
    same (``files.check_stamp``)."""
    def where(path: str | None) -> str | None:
        return str(Path(path).resolve()) if path and Path(path).exists() else path

    model = {"model": where(load.model), "base": where(load.base), "revision": load.revision,
             "adapter": where(load.adapter), "backend": load.backend, "dtype": load.dtype}
    if load.backend == "openai":
        model.update(base_url=load.openai.base_url, model_name=load.openai.model_name)
    decoding = {k: v for k, v in dataclasses.asdict(options).items() if k not in ("batch_size", "prefix_cache")}
    return {"model": model, "decoding": decoding}


def run_predict(args: argparse.Namespace) -> int:
    from ..inference.loading import open_predictor
    from ..inference.location import decoding_options, locate_model
    from .files import predict_file
    from .writers import working_file, write_tool_file

    if args.ray:
        return run_predict_on_ray(args)
    if not args.texts and not args.input:
        raise NerftError("give texts to analyse or --input FILE")
    if args.output and not args.input:
        raise NerftError("--output goes with --input")
    if args.input:
        require_file(args.input, "input file")
    if args.input and not args.output:
        raise NerftError("--input needs --output FILE.jsonl")
    if args.output:
        require_output_file(args.output)  # a FIFO or a device: refused before the model loads
    file_format = args.output_file_format or ("nerft" if args.output else "table")
    if file_format not in ("nerft", "table") and not args.output:
        raise NerftError("--output-format goes with --input and --output")
    if file_format == "table" and args.output:
        raise NerftError("--output-format table is for texts on the command line; --output is written as nerft, "
                         "label-studio, doccano or html")
    load = cfglib.build_config(LoadOptions, args)
    labels, prompt = locate_model(load).labels_and_prompt  # reads nerft.json only: errors before the model loads
    check_preset(prompt, args.output_format, args.preset)
    if args.labels:
        labels.subset(args.labels)
    options = decoding_options(load, args, config_path=args.config)  # the run's, under --config and the flags
    predictor = open_predictor(load, options)
    if args.input:
        work = working_file(args.output, file_format)
        n = predict_file(predictor, args.input, work, chunk_size=options.batch_size * 4, labels=args.labels,
                         raw=args.raw, encoding=args.encoding,
                         stamp=answer_stamp(load, options))
        logger.info("predicted %d documents into %s", n, work)
        if file_format != "nerft":
            written = write_tool_file(work, args.output, file_format,
                                      labels.subset(args.labels) if args.labels else labels,
                                      f"nerft-{Path(load.model or load.adapter or 'model').name}")
            logger.info("wrote %s", ", ".join(map(str, written)))
    if args.texts:
        results = predictor.predict(list(args.texts), args.labels)
        if file_format == "nerft":
            for text, ents in zip(args.texts, results, strict=True):
                print(json.dumps({"text": text, "entities": [e.to_dict() for e in ents]}, ensure_ascii=False))
        else:
            print_table(list(args.texts), results)
    return 0


def run_predict_on_ray(args: argparse.Namespace) -> int:
    """``--ray``: every shard of --input into the --output folder (``ray_engine.predict_shards``)."""
    from ..inference.location import decoding_options, locate_model
    from .ray_engine import predict_shards

    if args.texts or not args.input or not args.output:
        raise NerftError("--ray reads --input (files, globs or folders) into an --output folder; texts on the "
                         "command line run without --ray")
    if args.output_file_format not in (None, "nerft"):
        raise NerftError("--ray writes nerft JSONL shards; convert them with --output-format afterwards")
    load = cfglib.build_config(LoadOptions, args)
    labels, prompt = locate_model(load).labels_and_prompt  # reads nerft.json only: errors before Ray starts
    check_preset(prompt, args.output_format, args.preset)
    if args.labels:
        labels.subset(args.labels)
    options = decoding_options(load, args, config_path=args.config)
    ray_opts = cfglib.build_config(RayOptions, {k.removeprefix("ray."): v for k, v in vars(args).items()
                                                if k.startswith("ray.")})
    shards, texts = predict_shards(load, options, [args.input], args.output, ray_opts=ray_opts, labels=args.labels,
                                   raw=args.raw, encoding=args.encoding)
    logger.info("predicted %d documents into %d shard(s) in %s", texts, shards, args.output)
    return 0
