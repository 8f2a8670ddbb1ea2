"""Typed configuration: dataclasses are the only schema, YAML files give values, CLI flags override them.

A config class is a (nested) dataclass whose fields are declared with :func:`opt`, which carries the help text
shown by ``nerft <cmd> --help``. Unknown keys and values of the wrong type are errors that name the key.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import os
import types
from collections.abc import Collection
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml
from pydantic import ConfigDict, TypeAdapter, ValidationError

from .flags import add_deprecated
from .formats import FORMATS
from .schema import NerftError
from .textio import read_text

T = TypeVar("T")


class ConfigError(NerftError):
    pass


def opt(default: Any = dataclasses.MISSING, help: str = "", *, factory: Any = None,  # noqa: A002
        aliases: tuple[str, ...] = (), path: bool = False, flag: str | None = None,
        deprecated: tuple[str, ...] = ()) -> Any:
    """A config field with its help text; ``aliases``: more flags for it (e.g. ``("--output",)`` for ``out``);
    ``path``: an input file or folder, which a YAML file may name relative to itself (see :func:`build_config`);
    ``flag``: its flag when not ``--<key>`` (one meaning per flag across commands, docs/cli.md);
    ``deprecated``: old spellings that still parse, with a warning naming the new one (``nerft.flags``)."""
    metadata = {"help": help, "aliases": tuple(aliases), "path": path, "flag": flag, "deprecated": tuple(deprecated)}
    if factory is not None:
        return dataclasses.field(default_factory=factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _is_optional(tp: Any) -> tuple[bool, Any]:
    if get_origin(tp) in (Union, types.UnionType):
        args = [a for a in get_args(tp) if a is not type(None)]
        if len(args) == 1 and len(get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def _conventions(cls: type, data: dict[str, Any], prefix: str) -> dict[str, Any]:
    """What YAML files and flags need beyond plain typing, before pydantic validates the rest: unknown keys named
    with the keys known at that level, ``a,b`` for a list, YAML 1.1's unquoted ``off``/``on`` (read as booleans)
    for a choice spelled off/on, and no boolean accepted as a number."""
    hints = get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = [k for k in data if k not in names]
    if unknown:
        raise ConfigError(f"unknown config key(s) {', '.join(prefix + k for k in unknown)}; "
                          f"known keys here: {', '.join(prefix + n for n in sorted(names))}")
    out = {}
    for key, value in data.items():
        optional, tp = _is_optional(hints[key])
        where = prefix + key
        if value is None and not optional:
            raise ConfigError(f"config key '{where}' must not be null")
        if isinstance(tp, type) and dataclasses.is_dataclass(tp) and isinstance(value, dict):
            value = _conventions(tp, value, where + ".")
        elif get_origin(tp) is Literal and isinstance(value, bool) and (word := "on" if value else "off") in get_args(tp):
            value = word
        elif get_origin(tp) in (list, tuple) and isinstance(value, str):
            value = [v for v in value.split(",") if v]
        elif tp in (int, float) and isinstance(value, bool):
            raise ConfigError(f"config key '{where}' must be {_KIND[tp]}, got {value!r}")
        out[key] = value
    return out


_KIND = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}
# pydantic error type -> what the value must be (the rest of the message names the key and the value)
_EXPECTED = {"int": "an integer", "float": "a number", "bool": "true or false", "string": "a string",
             "dataclass": "a mapping", "list": "a list", "tuple": "a list"}


@functools.cache
def _validator(cls: type) -> TypeAdapter:
    """pydantic's validator of a config dataclass; numbers are read as strings where a string is expected (a
    YAML ``revision: 2024``). Built once per class."""
    def configure(tp: type) -> None:
        if "__pydantic_config__" not in vars(tp):
            tp.__pydantic_config__ = ConfigDict(coerce_numbers_to_str=True)  # type: ignore[attr-defined]
        for hint in get_type_hints(tp).values():
            inner = _is_optional(hint)[1]
            if dataclasses.is_dataclass(inner):
                configure(inner)  # type: ignore[arg-type]
    configure(cls)
    return TypeAdapter(cls)


def _explain(error: Any, prefix: str) -> str:
    key = prefix + ".".join(str(part) if isinstance(part, str) else f"[{part}]" for part in error["loc"])
    key = key.replace(".[", "[")
    kind = error["type"]
    if kind == "literal_error":
        choices = error.get("ctx", {}).get("expected", "")
        choices = ", ".join(c.strip().strip("'") for c in choices.replace(" or ", ", ").split(","))
        return f"config key '{key}' must be one of {choices}, got {error['input']!r}"
    stem = kind.split("_")[0]
    if stem in _EXPECTED:
        shown = repr(error["input"]) if stem in ("int", "float", "bool") else type(error["input"]).__name__
        return f"config key '{key}' must be {_EXPECTED[stem]}, got {shown}"
    return f"config key '{key}': {error['msg']}"


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build a config dataclass from a mapping (pydantic validates and converts: ``"3"`` to 3, ``"yes"`` to True);
    unknown keys and wrong types raise ConfigError naming the dotted key."""
    data = _conventions(cls, data, prefix)
    try:
        return _validator(cls).validate_python(data)  # type: ignore[arg-type]  # a type[T] is hashable
    except ValidationError as exc:
        raise ConfigError("; ".join(_explain(e, prefix) for e in exc.errors())) from None


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


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                         skip: Collection[str] = frozenset()) -> None:
    """Add one ``--a.b`` flag per leaf field of a config dataclass (help text from the field's metadata)."""
    hints = get_type_hints(cls)
    group = parser if not prefix else parser.add_argument_group(prefix.rstrip("."))
    for f in dataclasses.fields(cls):
        if not f.init or f.name in skip:
            continue
        tp = hints[f.name]
        _, inner = _is_optional(tp)
        dest = prefix + f.name
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
            add_config_arguments(parser, inner, prefix=dest + ".")
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None
        )
        helptext = f.metadata.get("help", "")
        helptext = f"{helptext} (default: {default!r})" if helptext else f"(default: {default!r})"
        helptext = helptext.replace("%", "%%")  # argparse formats help with %: "63%" would crash --help
        flag = f.metadata.get("flag") or "--" + dest.replace("_", "-")
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
        for old in f.metadata.get("deprecated", ()):
            add_deprecated(group, old, flag, **{k: v for k, v in kwargs.items() if k != "help"})


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
        if isinstance(inner, type) and dataclasses.is_dataclass(inner) and isinstance(value, dict):
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
        if isinstance(inner, type) and dataclasses.is_dataclass(inner):
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


def check_output_format(name: str, key: str) -> None:
    """An output format field names a known format (the three built in, or one added with
    ``formats.register_format``)."""
    if name not in FORMATS:
        raise ConfigError(f"config key '{key}' must be one of {', '.join(FORMATS)}, got {name!r}")


__all__ = ["ConfigError", "opt", "from_dict", "to_dict", "load_yaml", "add_config_arguments", "build_config"]
