"""Typed configuration: dataclasses are the only schema, YAML files give values, CLI flags override them.

A config class is a (nested) dataclass whose fields are declared with :func:`opt`, which carries the help text
shown by ``nerft <cmd> --help``. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from .schema import NerftError
from .textio import read_text

T = TypeVar("T")


class ConfigError(NerftError):
    pass


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,  # noqa: A002
        aliases: tuple[str, ...] = (), path: bool = False) -> Any:
    """A config field with its help text; ``aliases``: more flags for it (e.g. ``("--output",)`` for ``out``);
    ``path``: an input file or folder, which a YAML file may name relative to itself (see :func:`build_config`)."""
    metadata = {"help": help, "aliases": tuple(aliases), "path": path}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Check (and gently convert) ``value`` against the annotation ``tp``; raise ConfigError naming ``key``."""
    optional, inner = _is_optional(tp)
    if value is None:
        if optional:
            return None
        raise ConfigError(f"config key '{key}' must not be null")
    tp = inner
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"config key '{key}' must be a mapping, got {type(value).__name__}")
        return from_dict(tp, value, prefix=f"{key}.")
    origin = get_origin(tp)
    if origin is Literal:
        choices = get_args(tp)
        if isinstance(value, bool) and (word := "on" if value else "off") in choices:
            value = word  # YAML 1.1 reads an unquoted off/on (also no/yes) as a boolean
        if value not in choices:
            raise ConfigError(f"config key '{key}' must be one of {', '.join(map(str, choices))}, got {value!r}")
        return value
    if origin in (list, tuple):
        (item_tp, *_) = get_args(tp) or (Any,)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"config key '{key}' must be a list, got {type(value).__name__}")
        return [_coerce(v, item_tp, f"{key}[{i}]") for i, v in enumerate(value)]
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"config key '{key}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, str):
            try:
                return int(value)
            except ValueError:
                pass
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise ConfigError(f"config key '{key}' must be an integer, got {value!r}")
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
        if isinstance(value, (int, float)):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"config key '{key}' must be a number, got {value!r}")
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"config key '{key}' must be a string, got {type(value).__name__}")
    raise ConfigError(f"config key '{key}': unsupported type {tp!r}")


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a config dataclass from a mapping; unknown keys and wrong types raise ConfigError."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(
            f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
            f"known keys here: {', '.join(prefix + n for n in sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], prefix + k) for k, v in data.items()}
    try:
        obj = cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None
    return obj


def to_dict(obj: Any) -> Any:
    if dataclasses.is_dataclass(obj):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj) if f.init}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Path):
        return str(obj)
    return obj


def load_yaml(path: str | os.PathLike) -> dict[str, Any]:
    try:
        text = read_text(path, advice="save it as UTF-8")  # a bad byte: an InputError with line and offset
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data


def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    for p in parts[:-1]:
        node = data.get(p)
        if not isinstance(node, dict):
            node = data[p] = {}
        data = node
    data[parts[-1]] = value


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "", skip: set[str] = frozenset()) -> None:
    """Add one ``--a.b`` flag per leaf field of a config dataclass (help text from the field's metadata)."""
    hints = get_type_hints(cls)
    group = parser if not prefix else parser.add_argument_group(prefix.rstrip("."))
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp = hints[f.name]
        _, inner = _is_optional(tp)
        dest = prefix + f.name
        if dataclasses.is_dataclass(inner):
            add_config_arguments(parser, inner, prefix=dest + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None  # type: ignore[misc]
        )
        helptext = f.metadata.get("help", "")
        helptext = f"{helptext} (default: {default!r})" if helptext else f"(default: {default!r})"
        helptext = helptext.replace("%", "%%")  # argparse formats help with %: "63%" would crash --help
        flag = "--" + dest.replace("_", "-")
        kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS, "help": helptext}
        if inner is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif get_origin(inner) in (list, tuple):
            kwargs["nargs"] = "+"
            kwargs["metavar"] = "V"
        elif get_origin(inner) is Literal:
            kwargs["choices"] = list(get_args(inner))
        else:
            kwargs["metavar"] = {int: "N", float: "X"}.get(inner, "S")
        group.add_argument(flag, *f.metadata.get("aliases", ()), **kwargs)


def build_config(cls: type[T], args: argparse.Namespace | dict[str, Any] | None = None, config_path: str | None = None,
                 base: dict[str, Any] | None = None) -> T:
    """Merge, in rising priority: ``base`` values, a YAML file, and the dotted CLI flags that were given."""
    data: dict[str, Any] = dict(base or {})
    if config_path:
        data = _deep_merge(data, _beside(cls, load_yaml(config_path), Path(config_path).expanduser().parent))
    given = vars(args) if isinstance(args, argparse.Namespace) else dict(args or {})
    valid = _leaf_names(cls)
    for dotted, value in given.items():
        if dotted in valid:
            _set_dotted(data, dotted, value)
    return from_dict(cls, data)


def _beside(cls: type, data: dict[str, Any], folder: Path) -> dict[str, Any]:
    """A YAML file's input paths (fields declared with ``opt(path=True)``) that name something relative to the
    file's own folder, made absolute, so a config works from any working directory. A relative value that exists
    only from the working directory, a built-in name (``ccfbdci``) or a hub id stays as written."""
    hints = get_type_hints(cls)
    out = dict(data)
    for f in dataclasses.fields(cls):
        value = out.get(f.name)
        _, inner = _is_optional(hints[f.name])
        if dataclasses.is_dataclass(inner) and isinstance(value, dict):
            out[f.name] = _beside(inner, value, folder)
        elif f.metadata.get("path") and isinstance(value, str) and value and not os.path.isabs(value) \
                and not value.startswith("~") and (folder / value).exists():
            out[f.name] = str((folder / value).resolve())
    return out


def _leaf_names(cls: type, prefix: str = "") -> set[str]:
    out = set()
    hints = get_type_hints(cls)
    for f in dataclasses.fields(cls):
        _, inner = _is_optional(hints[f.name])
        if dataclasses.is_dataclass(inner):
            out |= _leaf_names(inner, prefix + f.name + ".")
        else:
            out.add(prefix + f.name)
    return out


def _deep_merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for k, v in b.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


__all__ = ["ConfigError", "opt", "from_dict", "to_dict", "load_yaml", "add_config_arguments", "build_config"]
