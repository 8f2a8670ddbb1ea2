"""The ``nerft`` console script: one subcommand per pipeline stage.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code. Modules are imported only when their command runs, so
``nerft prepare`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys

from . import __version__
from .schema import NerftError, describe_os_error

# command -> (module, one-line summary)
COMMANDS: dict[str, tuple[str, str]] = {
    "prepare": ("nerft.prepare", "convert a dataset to nerft JSONL and write seeded train/dev/test splits"),
    "evaluate": ("nerft.evaluate", "score predictions (entities or raw model text) against gold"),
    "train": ("nerft.train", "LoRA instruction fine-tuning of a chat LLM into an NER model"),
    "predict": ("nerft.predict.cli", "run a trained model on texts; entities with character offsets"),
    "tune": ("nerft.tune", "choose decoding thresholds (min-score, per label, lexicon) on dev; a config for predict"),
    "distill": ("nerft.distill", "the LLM annotates unlabelled text; a character CRF learns from gold + silver "
                                 "(a fast tagger predict/serve/evaluate load like a run)"),
    "export": ("nerft.export", "merge the LoRA adapter into the base model and write a standard HF folder"),
    "serve": ("nerft.serve", "HTTP service (FastAPI) over a trained model"),
    "demo": ("nerft.demo", "offline end-to-end run: prepare -> train -> evaluate -> predict on a tiny model"),
}


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nerft {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if command is None or name != command:
            sub.add_parser(name, help=summary, description=summary)
        else:
            importlib.import_module(module).register(sub, name, summary)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0 if args.command is None else 2
    try:
        return int(args.func(args) or 0)
    except NerftError as exc:
        return _error(args.command, str(exc))
    except OSError as exc:  # a path that cannot be read or written: say which and why, without a traceback
        return _error(args.command, describe_os_error(exc))
    except UnicodeDecodeError as exc:  # a text file read outside nerft.textio (which names file and line)
        return _error(args.command, f"a file is not valid {exc.encoding} (byte {exc.start}: {exc.reason}); "
                                    "convert it to UTF-8")
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"nerft {args.command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)


def _error(command: str, message: str) -> int:
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())  # always one line
    print(f"nerft {command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
