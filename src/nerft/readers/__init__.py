"""Dataset readers: every supported NER format in, canonical :class:`~nerft.schema.Document` lists out.

Formats (``--input-format``):

``chinese_ner_sft``
    One JSON object a line, ``{"text", "entities": [{"start_idx", "end_idx", "entity_text", "entity_label",
    "entity_names"}]}`` with ``end_idx`` exclusive: the layout of the ``qgyd2021/chinese_ner_sft`` hub dataset.
``cluener``
    CLUENER2020: ``{"text", "label": {type: {mention: [[start, end], ...]}}}`` with an INCLUSIVE ``end``; objects
    may be one a line, concatenated and pretty-printed, or the items of one JSON array.
``doccano``
    doccano's sequence-labelling JSONL: ``{"text", "label": [[start, end, label], ...]}``, or with relations
    enabled ``{"text", "entities": [{"start_offset", "end_offset", "label"}]}`` (see :mod:`.doccano`).
``label-studio``
    A Label Studio JSON export (an array of tasks: ``data.text`` and ``annotations[].result[]`` of type
    ``labels``; the first non-cancelled annotation, else the first prediction) or its JSON-MIN export (see
    :mod:`.label_studio` for the rules).
``conll``
    Character tagging, one ``<char> ... <tag>`` row a line (tab- or space-separated, the tag is the last column),
    a blank line between sentences; BIO, BIOES or BMES tags. Weibo NER's ``<char><digit>`` tokens (the digit is a
    word-segmentation position) are recognised and the digits stripped.
``nerft``
    The canonical JSONL (see :mod:`nerft.schema`).
``spacy``
    A spaCy DocBin (``.spacy``, what ``spacy convert`` writes and ``spacy train`` reads): ``doc.ents`` and the
    ``doc.spans["nerft"]`` group (see :mod:`.spacy_docbin`; needs ``pip install 'nerft[spacy]'``). Detected by
    its extension.

Every reader validates offsets (in range, non-empty, matching the text), sorts entities, drops exact duplicate
entities, counts overlapping spans (kept unless ``reject_overlaps``) and returns a :class:`ReadReport` with the
documents. A bad record raises :class:`~nerft.schema.InputError` naming file and line; with ``skip_invalid`` it is
skipped and counted instead. Document ids are stable: the record's own ``id`` when it has one, otherwise
``<file stem>-<line>`` for line-based JSON, ``<file stem>-<index>`` for CLUENER objects and CoNLL sentences.
"""

from __future__ import annotations

import codecs
import json
import os
import re
from pathlib import Path
from typing import Any, Literal

from ..schema import Document, NerftError
from ..textio import decode_error, read_text, require_file, resolve_encoding
from .base import ReadReport, WrongFormatError
from .conll import TagScheme, read_conll, split_columns
from .doccano import is_doccano_record, read_doccano
from .label_studio import is_label_studio_record, read_label_studio
from .spacy_docbin import read_spacy
from .spans import (
    HUB_PREFIX,
    HUB_REPO,
    document_from_chinese_ner_sft,
    load_hub_chinese_ner_sft,
    parse_hub_spec,
    read_chinese_ner_sft,
    read_cluener,
    read_nerft,
)

FORMATS = ("chinese_ner_sft", "cluener", "conll", "doccano", "label-studio", "nerft", "spacy")
Format = Literal["chinese_ner_sft", "cluener", "conll", "doccano", "label-studio", "nerft", "spacy"]

SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
SNIFF_CHARS = 1 << 16  # format detection reads this much of a file
SNIFF_RECORDS = 200



# --------------------------------------------------------------------------------------------------- entry points


def read_dataset(
    source: str | os.PathLike,
    format: str = "auto",
    *,
    skip_invalid: bool = False,
    reject_overlaps: bool = False,
    conll_scheme: TagScheme = "auto",
    progress: bool | None = None,
    encoding: str = "utf-8",
    use_predictions: bool = False,
) -> tuple[list[Document], ReadReport]:
    """Read one file (or a ``hub:REPO:SUBSET`` spec) in any supported format.

    ``progress``: a bar (True), none (False), or as the command chose (None: :mod:`nerft.progress`). ``encoding``: a codec name or ``auto``
    (see :mod:`nerft.textio`). A file read with the wrong ``format`` (its records carry another format's
    annotation field and never this one's) raises WrongFormatError naming that field and its formats.
    ``use_predictions``: Label Studio tasks without annotations are read from their predictions (unreviewed).
    """
    if isinstance(source, str) and source.startswith(HUB_PREFIX):
        repo, subset, split = parse_hub_spec(source)
        local = Path(repo)
        return load_hub_chinese_ner_sft(
            subset, split, data_dir=str(local) if local.is_dir() else None, repo_id=repo,
            skip_invalid=skip_invalid, reject_overlaps=reject_overlaps,
        )
    path = Path(source)
    if path.is_dir():
        raise NerftError(f"{path} is a directory; read its split files with read_split_dir")
    require_file(path, "input")
    fmt = detect_format(path, encoding) if format == "auto" else format
    if fmt == "spacy":  # binary: no text encoding
        return read_spacy(path, skip_invalid=skip_invalid, reject_overlaps=reject_overlaps, progress=progress)
    encoding = resolve_encoding(path, encoding)
    options: dict[str, Any] = {"skip_invalid": skip_invalid, "reject_overlaps": reject_overlaps,
                               "progress": progress, "encoding": encoding}
    if fmt == "chinese_ner_sft":
        return read_chinese_ner_sft(path, **options)
    if fmt == "cluener":
        return read_cluener(path, **options)
    if fmt == "conll":
        return read_conll(path, scheme=conll_scheme, **options)
    if fmt == "nerft":
        return read_nerft(path, **options)
    if fmt == "doccano":
        return read_doccano(path, **options)
    if fmt == "label-studio":
        return read_label_studio(path, use_predictions=use_predictions, **options)
    raise NerftError(f"unknown format {fmt!r}; choose one of auto, {', '.join(FORMATS)}")


def find_split_files(directory: str | os.PathLike) -> dict[str, Path]:
    """The train/dev/test files of a split directory, keyed by split.

    A file belongs to a split when a part of its name (split on ``.``, ``_``, ``-``) is ``train``, ``dev``/``valid``
    /``validation``/``val`` or ``test``: ``train.json``, ``dev.jsonl``, ``weiboNER_2nd_conll.train``. There must be
    a train file and at most one file per split.
    """
    directory = Path(directory)
    found: dict[str, list[Path]] = {}
    for path in sorted(directory.iterdir()):
        if not path.is_file() or path.name.startswith("."):
            continue
        parts = {p.lower() for p in re.split(r"[._\-]", path.name)}
        splits = {SPLIT_ALIASES[p] for p in parts if p in SPLIT_ALIASES}
        if len(splits) == 1:
            found.setdefault(splits.pop(), []).append(path)
    for split, paths in found.items():
        if len(paths) > 1:
            names = ", ".join(p.name for p in paths)
            raise NerftError(f"{directory}: several files look like the {split} split ({names}); keep one")
    if "train" not in found:
        raise NerftError(
            f"{directory}: no training file found; a split directory holds train/dev/test files such as "
            "train.jsonl, dev.json or name.train"
        )
    return {split: found[split][0] for split in SPLITS if split in found}


def read_split_dir(
    directory: str | os.PathLike,
    format: str = "auto",
    **options: Any,
) -> tuple[dict[str, list[Document]], ReadReport]:
    """Read a predefined split: ``{split: documents}`` and one report merging all files."""
    files = find_split_files(directory)
    report = ReadReport(str(directory), format)
    splits: dict[str, list[Document]] = {}
    for split, path in files.items():
        docs, file_report = read_dataset(path, format, **options)
        report.format = file_report.format
        report.merge(file_report)
        splits[split] = docs
    return splits, report


# ---------------------------------------------------------------------------------------------- format detection


def detect_format(path: str | os.PathLike, encoding: str = "utf-8") -> Format:
    """Guess a file's format from its first records (and its extension when they allow two readings)."""
    path = Path(path)
    if path.is_dir():
        return detect_format(next(iter(find_split_files(path).values())), encoding)
    if path.suffix.lower() == ".spacy":  # a binary DocBin: its extension is the only sign
        return "spacy"
    head = _head(path, resolve_encoding(path, encoding))
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise NerftError(f"{path} is empty; cannot detect its format")
    if stripped[0] in "{[":
        records = _leading_json_records(stripped)
        if not records:  # the first record is longer than the sniffed head: read the whole file once
            records = _leading_json_records(read_text(path, encoding).lstrip("\ufeff \t\r\n"), limit=1)
        if not records:
            raise NerftError(f"{path}: starts like JSON but its first record does not parse; pass --input-format")
        return _json_format_of(records, path)
    first_line = stripped.splitlines()[0]
    if len(split_columns(first_line)) >= 2:
        return "conll"
    raise NerftError(
        f"cannot detect the format of {path}: it is neither JSON nor CoNLL-style '<char> <tag>' rows; pass --input-format"
    )


def _head(path: Path, codec: str) -> str:
    """The first SNIFF_CHARS characters; a bad byte there is an InputError with its line and byte offset."""
    with open(path, "rb") as f:
        data = f.read(SNIFF_CHARS * 4)
    try:
        return codecs.getincrementaldecoder(codec)().decode(data, final=len(data) < SNIFF_CHARS * 4)[:SNIFF_CHARS]
    except UnicodeDecodeError as exc:
        raise decode_error(path, data, exc, codec) from None


def _leading_json_records(text: str, limit: int = SNIFF_RECORDS) -> list[Any]:
    """The complete JSON values at the start of ``text`` (items, when it opens a JSON array)."""
    decoder = json.JSONDecoder()
    pos = 1 if text.startswith("[") else 0
    records: list[Any] = []
    while len(records) < limit:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        try:
            value, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            break
        records.append(value)
    return records


def _json_format_of(records: list[Any], path: Path) -> Format:
    # Annotation tools first: a Label Studio task keeps its text under "data", and doccano's "label" list or
    # "entities" objects would otherwise read as CLUENER or nerft JSONL.
    for record in records:
        if is_label_studio_record(record):
            return "label-studio"
        if is_doccano_record(record):
            return "doccano"
    if not isinstance(records[0], dict) or "text" not in records[0]:
        raise NerftError(f"{path}: the first JSON record has no 'text' field; cannot detect the format")
    for record in records:
        if not isinstance(record, dict):
            continue
        if isinstance(record.get("label"), dict):
            return "cluener"
        entities = record.get("entities")
        if isinstance(entities, list) and entities and isinstance(entities[0], dict):
            if "start_idx" in entities[0] or "entity_label" in entities[0]:
                return "chinese_ner_sft"
            return "nerft"
        if "data_source" in record:  # chinese_ner_sft rows carry it even without entities
            return "chinese_ner_sft"
    # No record says more than {"text": ...}: both readings agree on the text; go by the extension.
    return "cluener" if path.suffix == ".json" else "nerft"




__all__ = ["FORMATS", "ReadReport", "WrongFormatError", "TagScheme", "Document", "read_dataset", "read_split_dir", "find_split_files",
           "detect_format", "read_nerft", "read_chinese_ner_sft", "read_cluener", "read_conll", "read_doccano",
           "read_label_studio", "parse_hub_spec",
           "load_hub_chinese_ner_sft", "document_from_chinese_ner_sft", "HUB_PREFIX", "HUB_REPO"]
