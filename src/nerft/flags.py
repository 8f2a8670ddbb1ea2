"""Old flag spellings kept for one release: they parse as the new spelling does and log a warning naming it.

The vocabulary every command shares (one meaning per option name) is in docs/cli.md; when a flag is renamed,
its old spelling is declared here with :func:`add_deprecated` (or ``config.opt(deprecated=...)`` for a config
field), hidden from ``--help``.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from typing import Any

logger = logging.getLogger("nerft")


def deprecation_note(old: str, new: str) -> str:
    return f"{old} is deprecated and will be removed in the next release; use {new}"


def add_deprecated(parser: argparse.ArgumentParser | Any, old: str, new: str, **kwargs: Any) -> argparse.Action:
    """Add ``old`` as a hidden flag parsed with ``kwargs`` (those of the new flag: same ``dest``, ``action``,
    ``nargs``, ``choices``); using it logs :func:`deprecation_note`. ``new`` is how the warning spells the
    replacement (``"--ray"``, ``"--output-format nerft"``)."""
    action = kwargs.pop("action", None)
    base = parser._registry_get("action", action, action)  # "store_true" -> argparse's class for it
    if not isinstance(base, type):
        raise TypeError(f"add_deprecated: unknown action {action!r}")

    class Deprecated(base):  # type: ignore[misc, valid-type]
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
            used = option_string or old
            spelled = "--no-" + new[2:] if used.startswith("--no-") and not old.startswith("--no-") else new
            logger.warning(deprecation_note(used, spelled))
            super().__call__(parser, namespace, values, option_string)

    return parser.add_argument(old, action=Deprecated, help=argparse.SUPPRESS, **kwargs)


def add_deprecated_value(parser: argparse.ArgumentParser | Any, old: str, dest: str, mapping: dict[str, tuple[Any, str]],
                         default: Any = argparse.SUPPRESS) -> argparse.Action:
    """A renamed flag whose old spelling took a value: ``mapping`` gives, per old value, the new ``dest`` value
    and how to spell it now (``{"ray": (True, "--ray"), "local": (False, "--no-ray")}``)."""

    class DeprecatedValue(argparse.Action):
        def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace,
                     values: str | Sequence[Any] | None, option_string: str | None = None) -> None:
            assert isinstance(values, str)  # one of the choices (no nargs)
            value, spelling = mapping[values]
            logger.warning(deprecation_note(f"{option_string or old} {values}", spelling))
            setattr(namespace, dest, value)

    return parser.add_argument(old, action=DeprecatedValue, choices=list(mapping), dest=f"_deprecated_{dest}",
                               default=default, help=argparse.SUPPRESS)


__all__ = ["deprecation_note", "add_deprecated", "add_deprecated_value"]
