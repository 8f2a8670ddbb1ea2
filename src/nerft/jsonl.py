"""JSON Lines input and output: one module for every reader and writer of ``.jsonl`` files in nerft.

- ``iter_jsonl(path)``: (line number, object) for each non-blank line; a bad line raises ``InputError`` naming
  the file and line (``tolerant=True`` yields the error in the object's place instead, so a reader can skip it).
- ``write_jsonl(path, rows)``: the whole file, atomically (a temp file renamed into place).
- ``JsonlAppender``: append rows one flushed line at a time (logs, resumable outputs); ``cut_torn_tail`` removes a
  last line that an interrupted write left without its newline (and refuses a file that is not JSONL).
- ``read_documents`` / ``write_documents``: the canonical nerft document JSONL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .fileio import atomic_write
from .schema import Document, InputError, NerftError, document_from_dict
from .textio import check_json_text, iter_lines, require_file


def dumps_line(obj: Any) -> str:
    """One JSON line (UTF-8 text kept readable, newline included)."""
    return json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj, ensure_ascii=False) + "\n"


def iter_jsonl(path: str | os.PathLike, *, tolerant: bool = False, encoding: str = "utf-8"
               ) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; a leading BOM is ignored.

    A line that is not JSON, or holds a lone surrogate escape, raises ``InputError``, or with ``tolerant`` is
    yielded as that error (the caller decides whether to skip it). ``encoding`` may be ``auto`` (see
    :mod:`nerft.textio`); undecodable bytes raise ``InputError`` with the line and byte offset, tolerant or not.
    """
    for lineno, raw in iter_lines(path, encoding):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
            check_json_text(obj, raw, path, lineno)
        except json.JSONDecodeError as exc:
            error = InputError(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
        except InputError as exc:
            error = exc
        else:
            yield lineno, obj
            continue
        if not tolerant:
            raise error from None
        yield lineno, error


def write_jsonl(path: str | os.PathLike, rows: Iterable[Any]) -> int:
    """Write dicts or objects with ``to_dict()`` as JSONL, atomically; returns the number of lines."""
    n = 0
    with atomic_write(path) as f:
        for row in rows:
            f.write(dumps_line(row))
            n += 1
    return n


def cut_torn_tail(path: str | os.PathLike, row_start: bytes = b"{") -> int:
    """Remove what an interrupted append left after the last complete line of ``path``; return the number of
    complete lines.

    Only the bytes after the last newline are ever removed, and only when they are a torn row: they do not parse
    as JSON and begin like a row (``row_start``; a prefix of it is enough). A last row that is complete but lacks
    its newline gets one. Anything else, a complete line that is not JSON included, means the file is not one
    that nerft appended to: NerftError, and the file is left as it is.
    """
    path = Path(path)
    if not path.is_file():
        return 0
    data = path.read_bytes()
    cut = data.rfind(b"\n") + 1
    lines = 0
    for lineno, raw in enumerate(data[:cut].split(b"\n")[:-1], 1):
        if raw.strip():
            try:
                json.loads(raw)
            except ValueError:
                raise NerftError(f"{path}, line {lineno}: not a JSON line; nerft appends only to files it wrote, "
                                 "and leaves this one as it is: pass another file") from None
            lines += 1
    tail = data[cut:]
    if not tail.strip():
        return lines
    try:
        json.loads(tail)
    except ValueError:
        if not (tail.startswith(row_start) or row_start.startswith(tail)):
            raise NerftError(f"{path}, line {lines + 1}: not a JSON line; nerft appends only to files it wrote, "
                             "and leaves this one as it is: pass another file") from None
        with open(path, "r+b") as f:
            f.truncate(cut)
        return lines
    with open(path, "ab") as f:
        f.write(b"\n")
    return lines + 1


class JsonlAppender:
    """Appends rows to a JSONL file, each batch written straight to the file (unbuffered; ``fsync`` with
    ``durable``) so a crash loses no written row; an interrupted write leaves at most a torn last line, which
    :func:`cut_torn_tail` removes."""

    def __init__(self, path: str | os.PathLike, *, truncate: bool = False, durable: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        try:
            self._file = open(self.path, "wb" if truncate else "ab", buffering=0)  # noqa: SIM115
        except OSError as exc:
            raise NerftError(f"cannot write {self.path}: {exc.strerror}") from None

    def write(self, row: Any) -> None:
        self.write_many([row])

    def write_many(self, rows: Iterable[Any]) -> None:
        data = memoryview("".join(dumps_line(r) for r in rows).encode("utf-8"))
        try:
            while data:
                data = data[self._file.write(data):]
            if self.durable:
                os.fsync(self._file.fileno())
        except OSError as exc:  # a full disk: say which file; the rows written before are whole
            raise NerftError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_documents(path: str | os.PathLike) -> list[Document]:
    """A canonical nerft JSONL file (ids default to the 0-based record index)."""
    require_file(path)
    return [document_from_dict(obj, path=str(path), line=lineno, default_id=str(i))
            for i, (lineno, obj) in enumerate(iter_jsonl(path))]


def read_records(path: str | os.PathLike, limit: int | None = None) -> list[dict[str, Any]]:
    """The lines of a JSONL file as dicts (a training log, a benchmark table), the first ``limit`` of them when
    given; a line that is not an object is an error."""
    out: list[dict[str, Any]] = []
    for lineno, obj in iter_jsonl(path):
        if limit is not None and len(out) >= limit:
            break
        if not isinstance(obj, dict):
            raise InputError(path, lineno, f"expected a JSON object, got {type(obj).__name__}")
        out.append(obj)
    return out


write_documents = write_jsonl
