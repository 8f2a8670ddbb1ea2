"""``nerft train``: flags (shortcuts plus one ``--section.key`` per config field) -> ``train(cfg)``."""

from __future__ import annotations

import argparse
import os
from typing import Any

from .. import config as cfglib
from ..flags import add_deprecated
from .config import TrainConfig

SHORTCUTS = {  # flag -> dotted config key
    "--train": "data.train", "--dev": "data.dev", "--test": "data.test", "--labels": "data.labels",
    "--base": "model.name_or_path", "--out": "output.dir", "--max-steps": "optim.max_steps",
    "--epochs": "optim.epochs", "--lr": "optim.lr",
}


def register(subparsers: Any, name: str = "train", summary: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument("--config", metavar="FILE.yaml", help="a recipe, e.g. configs/qwen2.5-0.5b-cpu.yaml")
    for flag, dest in SHORTCUTS.items():
        extra = ("--output",) if flag == "--out" else ()
        parser.add_argument(flag, *extra, dest=dest, default=argparse.SUPPRESS, metavar=flag.strip("-").upper(),
                            help=f"same as --{dest.replace('_', '-')}")
    add_deprecated(parser, "--model", "--base", dest="model.name_or_path", default=argparse.SUPPRESS)  # until 0.x+1
    parser.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS,
                        help="continue from the latest checkpoint of --out, or from the given checkpoint folder")
    parser.add_argument("--tune", dest="tune.enabled", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                        help="same as --tune.enabled: choose the decoding on dev at the end (RUN/decoding.yaml); "
                             "--no-tune skips it")
    cfglib.add_config_arguments(parser, TrainConfig, skip={"resume"})
    parser.set_defaults(func=run_train)
    return parser


def run_train(args: argparse.Namespace) -> int:
    from .loop import train

    cfg = cfglib.build_config(TrainConfig, args, config_path=args.config)
    run_dir = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under a launcher
        print(f"nerft train: run directory {run_dir}")  # the command's output: what it made
    return 0
