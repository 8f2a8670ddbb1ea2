"""doccano's sequence-labelling JSONL, one document a line, in either of its two layouts:

- ``{"id", "text", "label": [[start, end, "LABEL"], ...]}``: the export of a sequence-labelling project (and the
  layout doccano imports);
- ``{"id", "text", "entities": [{"id", "label", "start_offset", "end_offset"}], "relations": [...]}``: the export
  of a project with relations enabled (relations are ignored).

Offsets are character offsets with ``end`` exclusive. Older exports name the text ``data`` and the spans
``labels``; both are read. Other keys (doccano's ``Comments``, metadata) are ignored. Ids: the record's ``id``,
else ``<file stem>-<line>``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..jsonl import iter_jsonl
from ..schema import Document, Entity, InputError
from .base import ReadReport, collect, id_prefix, require_int

_SPAN_KEYS = ("label", "labels")


def read_doccano(path: str | os.PathLike, *, encoding: str = "utf-8",
                 **options: Any) -> tuple[list[Document], ReadReport]:
    """doccano sequence-labelling JSONL (``label`` triples or ``entities`` objects) as Documents."""
    path = Path(path)
    prefix = id_prefix(path)

    def records() -> Iterator[tuple[int, Document | InputError]]:
        for line, obj in iter_jsonl(path, tolerant=True, encoding=encoding):
            try:
                yield line, obj if isinstance(obj, InputError) else document_from_doccano(
                    obj, str(path), line, f"{prefix}-{line}")
            except InputError as exc:
                yield line, exc

    return collect(path, "doccano", records(), **options)


def is_doccano_record(record: Any) -> bool:
    """Whether a parsed JSON record has doccano's span layout (a ``label`` list of triples or ``start_offset``
    entities); an empty ``label`` list counts (no other format has a list there)."""
    if not isinstance(record, dict):
        return False
    label = record.get("label")
    if isinstance(label, list) and (not label or isinstance(label[0], list)):
        return True
    entities = record.get("entities")
    return isinstance(entities, list) and bool(entities) and isinstance(entities[0], dict) \
        and "start_offset" in entities[0]


def document_from_doccano(obj: Any, path: str | None, line: int | None, default_id: str) -> Document:
    if not isinstance(obj, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text", obj.get("data"))
    if not isinstance(text, str):
        raise InputError(path, line, "missing or non-string field 'text'")
    entities = []
    if "entities" in obj:
        raw = obj["entities"]
        if not isinstance(raw, list):
            raise InputError(path, line, "'entities' must be a list")
        for i, span in enumerate(raw):
            if not isinstance(span, dict) or not {"start_offset", "end_offset", "label"} <= span.keys():
                raise InputError(path, line, f"entity {i} must be an object with start_offset, end_offset and label")
            entities.append(_entity(text, span["start_offset"], span["end_offset"], span["label"], path, line))
    else:
        key = next((k for k in _SPAN_KEYS if k in obj), None)
        raw = obj.get(key, []) if key else []
        if not isinstance(raw, list):
            raise InputError(path, line, f"'{key}' must be a list of [start, end, label] triples")
        for span in raw:
            if not (isinstance(span, list) and len(span) == 3):
                raise InputError(path, line, f"span {span!r} is not a [start, end, label] triple")
            entities.append(_entity(text, span[0], span[1], span[2], path, line))
    doc_id = obj.get("id")
    return Document(str(doc_id) if doc_id is not None else default_id, text, entities)


def _entity(text: str, start: Any, end: Any, label: Any, path: str | None, line: int | None) -> Entity:
    start = require_int(start, "start offset", path, line)
    end = require_int(end, "end offset", path, line)
    if not isinstance(label, str) or not label:
        raise InputError(path, line, f"span [{start}, {end}) needs a label string, got {label!r}")
    return Entity(start, end, label, text[start:end] if 0 <= start < end <= len(text) else "")
