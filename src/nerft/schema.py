"""The canonical document format, user-facing errors and atomic writes.

One document a line: ``{"id": str, "text": str, "entities": [{"start", "end", "label", "text"}]}`` with Python
character offsets, ``end`` exclusive and ``text[start:end] == entity.text``. Every reader produces it, every
writer emits it (the JSONL input/output itself is :mod:`nerft.jsonl`). Also here: the user-facing errors and
the atomic writes (a temp file or folder renamed into place) that every command uses.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class NerftError(Exception):
    """An error meant for the user: the message says what is wrong and how to fix it."""


class InputError(NerftError):
    """Bad input data; names the file and the line (1-based) where it is."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, problem: str):
        self.path = str(path) if path is not None else None
        self.line = line
        self.problem = problem
        where = self.path or "<input>"
        if line is not None:
            where += f", line {line}"
        super().__init__(f"{where}: {problem}")


SCORE_DIGITS = 4  # a mention's score as written and as compared with a min-score: the two always agree


@dataclass(frozen=True, order=True)
class Entity:
    """A labelled span. ``start``/``end`` are None only for an ungrounded (hallucinated) mention kept on request."""

    start: int | None
    end: int | None
    label: str
    text: str
    score: float | None = field(default=None, compare=False)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"start": self.start, "end": self.end, "label": self.label, "text": self.text}
        if self.score is not None:
            d["score"] = round(self.score, SCORE_DIGITS)
        return d

    @property
    def span(self) -> tuple[int | None, int | None, str]:
        return (self.start, self.end, self.label)


@dataclass
class Document:
    id: str
    text: str
    entities: list[Entity] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "entities": [e.to_dict() for e in self.entities]}


def entity_from_dict(d: dict[str, Any], *, path: str | None = None, line: int | None = None) -> Entity:
    if not isinstance(d, dict):
        raise InputError(path, line, f"an entity must be an object, got {type(d).__name__}")
    missing = [k for k in ("label", "text") if k not in d]
    if missing:
        raise InputError(path, line, f"entity {d!r} lacks {', '.join(missing)}")
    start, end = d.get("start"), d.get("end")
    for name, value in (("start", start), ("end", end)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
            raise InputError(path, line, f"entity {name} must be an integer or null, got {value!r}")
    score = d.get("score")
    return Entity(start, end, str(d["label"]), str(d["text"]), float(score) if score is not None else None)


def document_from_dict(d: Any, *, path: str | None = None, line: int | None = None, default_id: str = "") -> Document:
    if not isinstance(d, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(d).__name__}")
    if not isinstance(d.get("text"), str):
        raise InputError(path, line, "missing or non-string field 'text'")
    ents = d.get("entities", [])
    if not isinstance(ents, list):
        raise InputError(path, line, "'entities' must be a list")
    doc_id = d.get("id", default_id)
    return Document(str(doc_id), d["text"], [entity_from_dict(e, path=path, line=line) for e in ents])


def validate_document(doc: Document, *, allow_overlaps: bool = True) -> list[str]:
    """Problems with a document's spans, as sentences. Empty when the document is valid.

    Overlapping or nested spans are reported only when ``allow_overlaps`` is False.
    """
    problems = []
    n = len(doc.text)
    for e in doc.entities:
        if e.start is None or e.end is None:
            problems.append(f"entity {e.text!r} has no offsets")
            continue
        if e.start < 0 or e.end > n:
            problems.append(f"entity {e.text!r} [{e.start}, {e.end}) is outside the text (length {n})")
        elif e.end <= e.start:
            problems.append(f"entity {e.text!r} has an empty or negative span [{e.start}, {e.end})")
        elif doc.text[e.start : e.end] != e.text:
            problems.append(
                f"entity text {e.text!r} does not match text[{e.start}:{e.end}] = {doc.text[e.start : e.end]!r}"
            )
    if not allow_overlaps:
        for a, b in find_overlaps(doc.entities):
            problems.append(f"entities {a.text!r} [{a.start}, {a.end}) and {b.text!r} [{b.start}, {b.end}) overlap")
    return problems


def find_overlaps(entities: Iterable[Entity]) -> list[tuple[Entity, Entity]]:
    """Pairs of distinct grounded spans that share at least one character (nested spans included)."""
    spans = sorted({e for e in entities if e.start is not None and e.end is not None})
    pairs = []
    for i, a in enumerate(spans):
        for b in spans[i + 1 :]:
            if b.start >= a.end:  # type: ignore[operator]
                break
            if (a.start, a.end) != (b.start, b.end) or a.label != b.label:
                pairs.append((a, b))
    return pairs


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", encoding: str | None = "utf-8"):
    """Open a temporary file beside ``path``; rename it onto ``path`` only if the block finishes.

    An OSError that names no file (a full disk while writing) is raised again naming ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, mode, encoding=encoding if "b" not in mode else None) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes owner-only files; give the permissions open() would
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if exc.filename is None:
            raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike):
    """Write a folder under a temporary name beside ``path``; it replaces ``path`` only if the block finishes.

    The folder written is ``.NAME.XXXX.tmp/NAME``, so code that names things after the folder sees its real name.
    A crash between the two renames of the replacement leaves the previous folder as ``.NAME.old`` beside it
    (and no ``NAME``): never a mix of old and new files."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    tmp = stage / path.name
    try:
        tmp.mkdir()  # with the permissions of a plain mkdir (mkdtemp's own folder is owner-only)
        yield tmp
        old = path.with_name(f".{path.name}.old")
        _remove(old)
        if path.exists() or path.is_symlink():
            os.replace(path, old)
        os.replace(tmp, path)
        _remove(old)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def check_output_apart(output: str | os.PathLike, inputs: Iterable[str | os.PathLike | None], flag: str = "--out",
                       writes: Iterable[str] | None = None) -> None:
    """Refuse an output folder that is, contains or lies inside one of ``inputs`` (files or folders that exist;
    hub ids and None are skipped): writing the output there would replace or mix with what the command reads
    (``nerft export --out RUN --overwrite`` once replaced its own run). ``writes``: the names the command writes
    or clears in the folder, when it does not replace the folder as a whole (train's run files): an input inside
    the folder is refused only when it is, or lies under, one of them."""
    out = Path(output).expanduser().resolve()
    touched = None if writes is None else {out / name for name in writes}
    for given in inputs:
        if given is None or not str(given) or not Path(given).expanduser().exists():
            continue
        source = Path(given).expanduser().resolve()
        inside_out = source.is_relative_to(out) and source != out
        if inside_out and touched is not None and not any(source.is_relative_to(t) for t in touched):
            continue
        how = ("is" if out == source else "contains" if inside_out
               else "is inside" if out.is_relative_to(source) else None)
        if how is not None:
            raise NerftError(f"{flag} {output} {how} the input {given}, which writing it would replace or mix with: "
                             f"pass an {flag} apart from every input")


def describe_os_error(exc: OSError) -> str:
    """One sentence for an OSError: the path and why; a path under a file says which part is the file."""
    path = exc.filename
    if path is None:
        return exc.strerror or str(exc)
    if exc.errno in (errno.EEXIST, errno.ENOTDIR):  # mkdir or open of a path whose parent (or itself) is a file
        for part in (Path(path), *Path(path).parents):
            if part.is_file():
                return f"{part} is a file, not a folder (needed for {path})" if str(part) != str(path) \
                    else f"{path} is a file, not a folder"
    return f"{path}: {exc.strerror or exc}"


@contextlib.contextmanager
def write_errors(path: str | os.PathLike):
    """A failed write inside the block (an OSError, or safetensors' own error type on a full disk) as one
    NerftError naming ``path``. Meant around :func:`atomic_dir`, so the previous folder is kept."""
    from safetensors import SafetensorError

    try:
        yield
    except (OSError, SafetensorError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EEXIST, errno.ENOTDIR):
            raise NerftError(describe_os_error(exc)) from None  # a file where a folder must go
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise NerftError(f"cannot write {path}: {reason}; the previous copy, if any, is kept") from None


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_write(path) as f:
        json.dump(obj, f, ensure_ascii=False, indent=2)
        f.write("\n")
