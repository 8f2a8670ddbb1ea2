"""Readers of span-annotated JSON: nerft's own JSONL, ``chinese_ner_sft`` (CCFBDCI; also from the hub) and
CLUENER2020. Each returns ``(documents, ReadReport)``; offsets are checked by ``base.collect``."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..schema import Document, Entity, InputError, NerftError, document_from_dict
from .base import (
    FieldCensus,
    ReadReport,
    collect,
    id_prefix,
    iter_json_objects,
    json_line_records,
    require_int,
    require_text,
)

HUB_PREFIX = "hub:"
HUB_REPO = "qgyd2021/chinese_ner_sft"


def read_nerft(path: str | os.PathLike, encoding: str = "utf-8", **options: Any) -> tuple[list[Document], ReadReport]:
    """The canonical nerft JSONL (``schema.read_documents``' format), with validation and per-line errors."""
    path = Path(path)
    records = json_line_records(
        path, lambda obj, lineno, doc_id: document_from_dict(obj, path=str(path), line=lineno, default_id=doc_id),
        encoding=encoding, fmt="nerft", entity_field="entities")
    return collect(path, "nerft", records, **options)


def read_chinese_ner_sft(path: str | os.PathLike, encoding: str = "utf-8", **options: Any
                         ) -> tuple[list[Document], ReadReport]:
    """chinese_ner_sft span JSONL: ``{"text", "entities": [{"start_idx", "end_idx", "entity_text", ...}]}``."""
    path = Path(path)
    records = json_line_records(
        path, lambda obj, lineno, doc_id: document_from_chinese_ner_sft(obj, str(path), lineno, doc_id),
        encoding=encoding, fmt="chinese_ner_sft", entity_field="entities")
    return collect(path, "chinese_ner_sft", records, **options)


def document_from_chinese_ner_sft(obj: Any, path: str | None, line: int | None, default_id: str) -> Document:
    """One chinese_ner_sft row (a parsed JSON line or a ``datasets`` row) as a Document; offsets not yet checked."""
    text = require_text(obj, path, line)
    raw_entities = obj.get("entities") or []
    if not isinstance(raw_entities, list):
        raise InputError(path, line, "'entities' must be a list")
    entities = []
    for i, raw in enumerate(raw_entities):
        if not isinstance(raw, dict):
            raise InputError(path, line, f"entity {i} must be an object, got {type(raw).__name__}")
        missing = [k for k in ("start_idx", "end_idx", "entity_label") if raw.get(k) is None]
        if missing:
            raise InputError(path, line, f"entity {i} lacks {', '.join(missing)}")
        start, end = require_int(raw["start_idx"], "start_idx", path, line), require_int(
            raw["end_idx"], "end_idx", path, line)
        mention = raw.get("entity_text")
        if mention is None:  # older rows: take the mention from the text (validation still checks the offsets)
            mention = text[start:end] if 0 <= start < end <= len(text) else ""
        entities.append(Entity(start, end, str(raw["entity_label"]), str(mention)))
    return Document(str(obj.get("id") or default_id), text, entities)


def read_cluener(path: str | os.PathLike, encoding: str = "utf-8", **options: Any) -> tuple[list[Document], ReadReport]:
    """CLUENER2020 JSON (inclusive ``end``): one object a line, concatenated pretty-printed objects, or an array."""
    path = Path(path)
    prefix = id_prefix(path)

    def records() -> Iterator[tuple[int, Document | InputError]]:
        census = FieldCensus()
        for index, (lineno, obj) in enumerate(iter_json_objects(path, encoding)):
            if isinstance(obj, InputError):
                yield lineno, obj
                continue
            census.observe(obj)
            try:
                yield lineno, _document_from_cluener(obj, str(path), lineno, f"{prefix}-{index}")
            except InputError as exc:
                yield lineno, exc
        census.check(path, "cluener", "label")

    return collect(path, "cluener", records(), **options)


def _document_from_cluener(obj: Any, path: str, line: int, default_id: str) -> Document:
    text = require_text(obj, path, line)
    labels = obj.get("label") or {}
    if not isinstance(labels, dict):
        raise InputError(path, line, f"'label' must map entity types to mentions, got {type(labels).__name__}")
    entities = []
    for label, mentions in labels.items():
        if not isinstance(mentions, dict):
            raise InputError(path, line, f"label {label!r} must map mentions to [[start, end], ...] lists")
        for mention, spans in mentions.items():
            if not isinstance(spans, list):
                raise InputError(path, line, f"mention {mention!r}: expected a list of [start, end] pairs")
            for span in spans:
                if not (isinstance(span, list) and len(span) == 2):
                    raise InputError(path, line, f"mention {mention!r}: span {span!r} is not a [start, end] pair")
                start = require_int(span[0], "start", path, line)
                end_inclusive = require_int(span[1], "end", path, line)
                entities.append(Entity(start, end_inclusive + 1, str(label), str(mention)))
    return Document(str(obj.get("id") if obj.get("id") is not None else default_id), text, entities)


def parse_hub_spec(spec: str) -> tuple[str, str, str]:
    """``hub:REPO:SUBSET[:SPLIT]`` -> (repo, subset, split). REPO may be a local folder laid out like the hub's."""
    body = spec[len(HUB_PREFIX):] if spec.startswith(HUB_PREFIX) else spec
    parts = body.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], "train"
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise NerftError(f"bad hub input {spec!r}; expected hub:{HUB_REPO}:SUBSET, e.g. hub:{HUB_REPO}:CCFBDCI")


def load_hub_chinese_ner_sft(
    subset: str = "CCFBDCI",
    split: str = "train",
    cache_dir: str | None = None,
    data_dir: str | None = None,
    *,
    repo_id: str = HUB_REPO,
    skip_invalid: bool = False,
    reject_overlaps: bool = False,
) -> tuple[list[Document], ReadReport]:
    """Load one subset of the ``qgyd2021/chinese_ner_sft`` hub dataset (needs internet unless ``data_dir``).

    The hub repository keeps each subset as ``data/<subset in lower case>.jsonl`` next to a loading script, which
    ``datasets`` >= 4 no longer runs; so the subset's JSONL file is loaded directly with
    ``datasets.load_dataset("json", data_files=...)`` from ``hf://datasets/<repo_id>/data/...``. ``data_dir``
    replaces the hub with a local folder of the same layout (an offline mirror, or a test fixture), exercising the
    same code. The hub files are not split: ``split`` only names the loaded rows (and their ids,
    ``<subset>-<split>-<row>``); ``nerft prepare`` makes the train/dev/test split. ``cache_dir`` is passed to
    ``datasets``. On the command line: ``--input hub:qgyd2021/chinese_ner_sft:CCFBDCI``; when the repository part
    names an existing local folder, that folder is used as ``data_dir``.
    """
    import datasets  # heavy; imported only when a hub input is used

    root = str(data_dir) if data_dir is not None else f"hf://datasets/{repo_id}"
    data_file = f"{root}/data/{subset.lower()}.jsonl"
    source = f"{HUB_PREFIX}{repo_id}:{subset}" if data_dir is None else data_file
    if data_dir is not None and not Path(data_file).is_file():
        raise NerftError(f"{data_dir} has no data/{subset.lower()}.jsonl; is it laid out like {repo_id}?")
    try:
        rows = datasets.load_dataset("json", data_files={split: data_file}, split=split, cache_dir=cache_dir)
    except Exception as exc:  # network, missing subset, unparsable file: all user-facing
        raise NerftError(f"cannot load subset {subset!r} of {repo_id} ({data_file}): {exc}") from exc
    prefix = f"{subset.lower()}-{split}"

    def records() -> Iterator[tuple[int, Document | InputError]]:
        for index, row in enumerate(rows):
            try:
                yield index + 1, document_from_chinese_ner_sft(row, source, index + 1, f"{prefix}-{index + 1}")
            except InputError as exc:
                yield index + 1, exc

    return collect(source, "chinese_ner_sft", records(), skip_invalid=skip_invalid,
                    reject_overlaps=reject_overlaps, total=len(rows))


