"""What every reader shares: the read report, record validation (``collect``) and JSON record iteration."""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..jsonl import iter_jsonl
from ..progress import track
from ..schema import Document, InputError, NerftError, find_overlaps, validate_document
from ..textio import check_json_text, read_text

MAX_WARNINGS = 50  # a report keeps the first warnings verbatim and counts the rest

# Extensions that name a format rather than a split; kept out of document ids ("weiboNER_2nd_conll.train" keeps
# its ".train" so the three Weibo files give distinct ids).
_FORMAT_SUFFIXES = {".jsonl", ".json", ".txt", ".tsv", ".conll", ".bio", ".bioes", ".bmes", ".char", ".spacy"}


@dataclass
class ReadReport:
    """What reading one source found, beyond the documents themselves."""

    source: str
    format: str
    docs: int = 0
    entities: int = 0
    skipped: int = 0
    repaired_tags: int = 0
    overlaps: int = 0
    duplicate_entities: int = 0
    warnings: list[str] = field(default_factory=list)
    more_warnings: int = 0

    def warn(self, message: str) -> None:
        if len(self.warnings) < MAX_WARNINGS:
            self.warnings.append(message)
        else:
            self.more_warnings += 1

    def merge(self, other: ReadReport) -> None:
        """Add another source's counts (used when one input is several split files)."""
        for name in ("docs", "entities", "skipped", "repaired_tags", "overlaps", "duplicate_entities",
                     "more_warnings"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for message in other.warnings:
            self.warn(message)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "format": self.format, "docs": self.docs, "entities": self.entities,
            "skipped": self.skipped, "repaired_tags": self.repaired_tags, "overlaps": self.overlaps,
            "duplicate_entities": self.duplicate_entities, "warnings": self.warnings,
            "more_warnings": self.more_warnings,
        }


# Top-level fields that hold the annotations of a record in the formats nerft reads, and whose format that is.
# A file read with a reader whose field is in none of its records, but that has one of these, was read with the
# wrong --input-format: without the check every document would come out without entities.
ANNOTATION_FIELDS: dict[str, str] = {
    "entities": "nerft, chinese_ner_sft or doccano",
    "label": "cluener or doccano",
    "labels": "doccano",
    "annotations": "label-studio",
}


class WrongFormatError(NerftError):
    """The file's records carry another format's annotation field and never this reader's."""


@dataclass
class FieldCensus:
    """Counts which top-level fields with a list or object value a file's records carry."""

    records: int = 0
    fields: Counter[str] = field(default_factory=Counter)

    def observe(self, obj: Any) -> None:
        if isinstance(obj, dict):
            self.records += 1
            self.fields.update(k for k, v in obj.items() if isinstance(v, (dict, list)))

    def check(self, path: str | os.PathLike, fmt: str, entity_field: str) -> None:
        """Raise WrongFormatError when no record has ``entity_field`` but some have another format's field."""
        if not self.records or self.fields[entity_field]:
            return
        others = [(name, owner) for name, owner in ANNOTATION_FIELDS.items()
                  if name != entity_field and self.fields[name]]
        if others:
            name, owner = others[0]
            raise WrongFormatError(
                f"{path}: no record has `{entity_field}`, the field format {fmt} reads entities from, but "
                f"{self.fields[name]} of {self.records} have `{name}` ({owner}); every document would come out "
                "without entities: pass the file's --input-format (or leave it at auto)")


def json_line_records(path: Path, convert: Callable[[Any, int, str], Document], *, encoding: str = "utf-8",
                      fmt: str = "", entity_field: str | None = None) -> Iterator[tuple[int, Document | InputError]]:
    """(line number, document or the error that line gave) for a one-object-a-line JSON file. With
    ``entity_field``: a WrongFormatError at the end when no record had it but another format's field is there."""
    prefix = id_prefix(path)
    census = FieldCensus()
    for lineno, obj in iter_jsonl(path, tolerant=True, encoding=encoding):
        if isinstance(obj, InputError):
            yield lineno, obj
            continue
        census.observe(obj)
        try:
            yield lineno, convert(obj, lineno, f"{prefix}-{lineno}")
        except InputError as exc:
            yield lineno, exc
    if entity_field:
        census.check(path, fmt, entity_field)


def collect(
    source: str | os.PathLike,
    fmt: str,
    records: Iterable[tuple[int | None, Document | InputError]],
    *,
    skip_invalid: bool = False,
    reject_overlaps: bool = False,
    progress: bool | None = None,
    total: int | None = None,
) -> tuple[list[Document], ReadReport]:
    """Validate each record; raise on the first bad one, or skip and count it with ``skip_invalid``."""
    report = ReadReport(str(source), fmt)
    docs: list[Document] = []
    first_line_of_id: dict[str, int | None] = {}
    name = Path(str(source)).name
    for line, item in track(records, f"reading {name}", unit="doc", total=total, show=progress):
        try:
            if isinstance(item, InputError):
                raise item
            doc = _clean(item, report)
            problems = validate_document(doc, allow_overlaps=not reject_overlaps)
            if problems:
                raise InputError(source, line, "; ".join(problems))
            if doc.id in first_line_of_id:
                raise InputError(source, line, f"id {doc.id!r} repeats the id of line {first_line_of_id[doc.id]}")
        except InputError as exc:
            if not skip_invalid:
                raise
            report.skipped += 1
            report.warn(f"skipped {exc}")
            continue
        first_line_of_id[doc.id] = line
        overlaps = find_overlaps(doc.entities)
        if overlaps:
            report.overlaps += len(overlaps)
            a, b = overlaps[0]
            report.warn(f"{source}, line {line}: overlapping entities {a.text!r} ({a.label}) and {b.text!r} ({b.label})")
        report.docs += 1
        report.entities += len(doc.entities)
        docs.append(doc)
    return docs, report


def _clean(doc: Document, report: ReadReport) -> Document:
    """Sort entities by position and drop exact duplicates (same span and label)."""
    unique = sorted(set(doc.entities), key=lambda e: (e.start, e.end, e.label))
    if len(unique) != len(doc.entities):
        report.duplicate_entities += len(doc.entities) - len(unique)
    doc.entities = unique
    return doc



def iter_json_objects(path: Path, encoding: str = "utf-8") -> Iterator[tuple[int, Any]]:
    """(line where it starts, object or InputError) for concatenated JSON values, one a line or pretty-printed.

    A top-level array yields its items. After a syntax error the walk resumes at the next line starting with
    ``{`` after the broken object's first line, so ``skip_invalid`` can step over one broken object. The file is
    decoded whole (``encoding`` may be ``auto``); a bad byte is an InputError with its line and offset.
    """
    text = read_text(path, encoding)
    decoder = json.JSONDecoder()
    pos, line, length = 0, 1, len(text)
    while True:
        start = _skip_space(text, pos)
        line += text.count("\n", pos, start)
        pos = start
        if pos >= length:
            return
        try:
            value, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as exc:
            yield line, InputError(path, exc.lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")
            # Resume at the next line that opens a top-level object after the broken one's start (nested objects
            # of pretty-printed JSON are indented, so they do not match).
            resume = text.find("\n{", pos + 1)
            if resume < 0:
                return
            line += text.count("\n", pos, resume + 1)
            pos = resume + 1
            continue
        for item in value if isinstance(value, list) else [value]:
            try:
                check_json_text(item, text[pos:end], path, line)
            except InputError as exc:
                yield line, exc
            else:
                yield line, item
        line += text.count("\n", pos, end)
        pos = end


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def require_text(obj: Any, path: str | None, line: int | None) -> str:
    if not isinstance(obj, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(path, line, "missing or non-string field 'text'")
    return text


def require_int(value: Any, name: str, path: str | None, line: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(path, line, f"{name} must be an integer, got {value!r}")
    return value


def id_prefix(path: Path) -> str:
    return path.stem if path.suffix.lower() in _FORMAT_SUFFIXES else path.name
