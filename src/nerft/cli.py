"""The ``nerft`` console script: one subcommand per pipeline stage.

Each stage module exposes ``register(subparsers)``, which adds its parser and sets ``func`` to a callable taking
the parsed arguments and returning an exit code. Modules are imported only when their command runs, so
``nerft prepare`` never pays for importing torch.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import signal
import sys
import traceback
import warnings
from collections.abc import Iterator

from . import __version__
from .fileio import describe_os_error
from .progress import chosen, write_line
from .schema import NerftError

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


def add_global_flags(parser: argparse.ArgumentParser) -> None:
    """What every command's messages look like; accepted before or after the command's name."""
    group = parser.add_argument_group("messages (any command)")
    group.add_argument("-q", "--quiet", action="store_true", default=argparse.SUPPRESS,
                       help="only warnings and errors on stderr, no progress (evaluate: no table either)")
    group.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                       help="debug messages too")
    group.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="an error shows its traceback after the one-line message")
    group.add_argument("--progress", action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                       help="progress bars (default: on a terminal; in a log, a line every tenth of the way)")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nerft", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"nerft {__version__}")
    add_global_flags(parser)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, summary) in COMMANDS.items():
        if command is None or name != command:
            sub.add_parser(name, help=summary, description=summary)
        else:
            importlib.import_module(module).register(sub, name, summary)
        add_global_flags(sub.choices[name])
    return parser


class _CommandFormatter(logging.Formatter):
    """``nerft train: message``, ``nerft train: warning: message`` (the logger ``nerft.train``)."""

    def format(self, record: logging.LogRecord) -> str:
        where = record.name.replace(".", " ")
        level = "" if record.levelno == logging.INFO else record.levelname.lower() + ": "
        return f"{where}: {level}{record.getMessage()}"


class _StderrHandler(logging.Handler):
    """Writes to ``sys.stderr`` as it is when a message comes (a test's capture may have replaced it), above any
    progress bar drawn."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            write_line(self.format(record), sys.stderr)
        except Exception:  # noqa: BLE001 - logging must never end the command
            self.handleError(record)


# warnings users cannot act on: transformers 5 renamed gradient checkpointing, which peft still calls
_LIBRARY_WARNINGS = r"`(is_gradient_checkpointing|gradient_checkpointing_enable|gradient_checkpointing_disable)` is deprecated"


@contextlib.contextmanager
def command_messages(args: argparse.Namespace) -> Iterator[None]:
    """While a command runs: the ``nerft`` logger on stderr at the level the flags ask, the progress choice, and
    the libraries' warnings and weight-loading bars a user cannot act on left out. Undone afterwards."""
    quiet, verbose = getattr(args, "quiet", False), getattr(args, "verbose", False)
    show = getattr(args, "progress", False if quiet else None)
    log = logging.getLogger("nerft")
    handler = _StderrHandler()
    handler.setFormatter(_CommandFormatter())
    level_before = log.level
    log.addHandler(handler)
    log.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    env_before = os.environ.get("HF_HUB_DISABLE_PROGRESS_BARS")
    if not show and env_before is None:  # no bars wanted: transformers' weight-loading bars neither
        os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    try:
        with warnings.catch_warnings(), chosen(show):
            warnings.filterwarnings("ignore", message=_LIBRARY_WARNINGS, category=FutureWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            yield
    finally:
        log.removeHandler(handler)
        log.setLevel(level_before)
        if env_before is None:
            os.environ.pop("HF_HUB_DISABLE_PROGRESS_BARS", None)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    command = next((a for a in argv if not a.startswith("-")), None)
    parser = build_parser(command if command in COMMANDS else None)
    flags, _ = _global_flags().parse_known_args(argv)  # so that a deprecated flag's warning obeys --quiet
    with command_messages(flags):
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 0 if args.command is None else 2
        return _run(args)


def _global_flags() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(add_help=False)
    add_global_flags(parser)
    return parser


def _run(args: argparse.Namespace) -> int:
    """The command's exit code; an error a user can fix is one line (with --debug, its traceback before it)."""
    try:
        return int(args.func(args) or 0)
    except NerftError as exc:
        return _error(args, str(exc))
    except OSError as exc:  # a path that cannot be read or written: say which and why, without a traceback
        return _error(args, describe_os_error(exc))
    except UnicodeDecodeError as exc:  # a text file read outside nerft.textio (which names file and line)
        return _error(args, f"a file is not valid {exc.encoding} (byte {exc.start}: {exc.reason}); "
                            "convert it to UTF-8")
    except KeyboardInterrupt as exc:
        signum = getattr(exc, "signum", signal.SIGINT)
        print(f"nerft {args.command}: stopped by {signal.Signals(signum).name}", file=sys.stderr)
        return 128 + int(signum)


def _error(args: argparse.Namespace, message: str) -> int:
    if getattr(args, "debug", False):
        traceback.print_exc(file=sys.stderr)
    message = " ".join(line.strip() for line in str(message).splitlines() if line.strip())  # always one line
    print(f"nerft {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
