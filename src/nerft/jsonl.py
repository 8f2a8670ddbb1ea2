"""JSON Lines input and output: one module for every reader and writer of ``.jsonl`` files in nerft.

- ``iter_jsonl(path)``: (line number, object) for each non-blank line; a bad line raises ``InputError`` naming
  the file and line (``tolerant=True`` yields the error in the object's place instead, so a reader can skip it).
- ``write_jsonl(path, rows)``: the whole file, atomically (a temp file renamed into place).
- ``JsonlAppender``: append rows one flushed line at a time (logs, resumable outputs); ``cut_torn_tail`` removes a
  last line that an interrupted write left without its newline.
- ``read_documents`` / ``write_documents``: the canonical nerft document JSONL.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .schema import Document, InputError, NerftError, atomic_write, document_from_dict


def dumps_line(obj: Any) -> str:
    """One JSON line (UTF-8 text kept readable, newline included)."""
    return json.dumps(obj.to_dict() if hasattr(obj, "to_dict") else obj, ensure_ascii=False) + "\n"


def iter_jsonl(path: str | os.PathLike, *, tolerant: bool = False, encoding: str = "utf-8"
               ) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object) for each non-blank line; a leading BOM is ignored.

    A line that is not JSON raises ``InputError``, or with ``tolerant`` is yielded as that error (the caller
    decides whether to skip it). Undecodable bytes raise ``InputError`` with the line and byte offset.
    """
    with open(path, "rb") as f:
        offset = 0
        for lineno, raw_bytes in enumerate(f, 1):
            try:
                raw = raw_bytes.decode(encoding)
            except UnicodeDecodeError as exc:
                raise InputError(path, lineno, f"not valid {encoding} at byte {offset + exc.start} of the file "
                                               f"({exc.reason}); pass --encoding (e.g. gb18030) or convert the file") from None
            offset += len(raw_bytes)
            if lineno == 1:
                raw = raw.lstrip("\ufeff")
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                error = InputError(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
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


def cut_torn_tail(path: str | os.PathLike) -> int:
    """Truncate ``path`` after its last complete line (one ending in a newline that parses as JSON) and return
    the number of complete lines. What an interrupted append left behind is removed; nothing else is touched."""
    path = Path(path)
    if not path.is_file():
        return 0
    good_end, lines = 0, 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            if raw.strip():
                try:
                    json.loads(raw)
                except ValueError:
                    break
                lines += 1
            good_end += len(raw)
    if good_end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return lines


class JsonlAppender:
    """Appends rows to a JSONL file, each flushed (``fsync`` with ``durable``) so a crash loses no written row."""

    def __init__(self, path: str | os.PathLike, *, truncate: bool = False, durable: bool = False):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        try:
            self._file = open(self.path, "w" if truncate else "a", encoding="utf-8")  # noqa: SIM115
        except OSError as exc:
            raise NerftError(f"cannot write {self.path}: {exc.strerror}") from None

    def write(self, row: Any) -> None:
        self.write_many([row])

    def write_many(self, rows: Iterable[Any]) -> None:
        self._file.write("".join(dumps_line(r) for r in rows))
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> JsonlAppender:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_documents(path: str | os.PathLike) -> list[Document]:
    """A canonical nerft JSONL file (ids default to the 0-based record index)."""
    if not Path(path).is_file():
        raise NerftError(f"{path} does not exist")
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
