"""Dataset readers: every supported NER format in, canonical :class:`~nerft.schema.Document` lists out.

Formats (``--format``):

``chinese_ner_sft``
    One JSON object a line, ``{"text", "entities": [{"start_idx", "end_idx", "entity_text", "entity_label",
    "entity_names"}]}`` with ``end_idx`` exclusive: the layout of the ``qgyd2021/chinese_ner_sft`` hub dataset.
``cluener``
    CLUENER2020: ``{"text", "label": {type: {mention: [[start, end], ...]}}}`` with an INCLUSIVE ``end``; objects
    may be one a line, concatenated and pretty-printed, or the items of one JSON array.
``conll``
    Character tagging, one ``<char> ... <tag>`` row a line (tab- or space-separated, the tag is the last column),
    a blank line between sentences; BIO, BIOES or BMES tags. Weibo NER's ``<char><digit>`` tokens (the digit is a
    word-segmentation position) are recognised and the digits stripped.
``nerft``
    The canonical JSONL (see :mod:`nerft.schema`).

Every reader validates offsets (in range, non-empty, matching the text), sorts entities, drops exact duplicate
entities, counts overlapping spans (kept unless ``reject_overlaps``) and returns a :class:`ReadReport` with the
documents. A bad record raises :class:`~nerft.schema.InputError` naming file and line; with ``skip_invalid`` it is
skipped and counted instead. Document ids are stable: the record's own ``id`` when it has one, otherwise
``<file stem>-<line>`` for line-based JSON, ``<file stem>-<index>`` for CLUENER objects and CoNLL sentences.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from tqdm import tqdm

from .schema import (
    Document,
    Entity,
    InputError,
    NerftError,
    document_from_dict,
    find_overlaps,
    validate_document,
)

FORMATS = ("chinese_ner_sft", "cluener", "conll", "nerft")
Format = Literal["chinese_ner_sft", "cluener", "conll", "nerft"]
TagScheme = Literal["auto", "bio", "bioes", "bmes"]

HUB_PREFIX = "hub:"
HUB_REPO = "qgyd2021/chinese_ner_sft"
SPLITS = ("train", "dev", "test")
SPLIT_ALIASES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "val": "dev", "test": "test"}
SNIFF_CHARS = 1 << 16  # format detection reads this much of a file
SNIFF_RECORDS = 200
MAX_WARNINGS = 50  # a report keeps the first warnings verbatim and counts the rest

# Extensions that name a format rather than a split; kept out of document ids ("weiboNER_2nd_conll.train" keeps
# its ".train" so the three Weibo files give distinct ids).
_FORMAT_SUFFIXES = {".jsonl", ".json", ".txt", ".tsv", ".conll", ".bio", ".bioes", ".bmes", ".char"}


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


# --------------------------------------------------------------------------------------------------- entry points


def read_dataset(
    source: str | os.PathLike,
    format: str = "auto",
    *,
    skip_invalid: bool = False,
    reject_overlaps: bool = False,
    conll_scheme: TagScheme = "auto",
    progress: bool | None = None,
) -> tuple[list[Document], ReadReport]:
    """Read one file (or a ``hub:REPO:SUBSET`` spec) in any supported format.

    ``progress``: show a tqdm bar; None shows it only on a terminal.
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
    if not path.is_file():
        raise NerftError(f"input {path} does not exist")
    fmt = detect_format(path) if format == "auto" else format
    options = {"skip_invalid": skip_invalid, "reject_overlaps": reject_overlaps, "progress": progress}
    if fmt == "chinese_ner_sft":
        return read_chinese_ner_sft(path, **options)
    if fmt == "cluener":
        return read_cluener(path, **options)
    if fmt == "conll":
        return read_conll(path, scheme=conll_scheme, **options)
    if fmt == "nerft":
        return read_nerft(path, **options)
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


def detect_format(path: str | os.PathLike) -> Format:
    """Guess a file's format from its first records (and its extension when they allow two readings)."""
    path = Path(path)
    if path.is_dir():
        return detect_format(next(iter(find_split_files(path).values())))
    with open(path, encoding="utf-8") as f:
        head = f.read(SNIFF_CHARS)
    stripped = head.lstrip("\ufeff \t\r\n")
    if not stripped:
        raise NerftError(f"{path} is empty; cannot detect its format")
    if stripped[0] in "{[":
        records = _leading_json_records(stripped)
        if not records:  # the first record is longer than the sniffed head: read the whole file once
            records = _leading_json_records(path.read_text(encoding="utf-8").lstrip("\ufeff \t\r\n"), limit=1)
        if not records:
            raise NerftError(f"{path}: starts like JSON but its first record does not parse; pass --format")
        return _json_format_of(records, path)
    first_line = stripped.splitlines()[0]
    if len(_split_columns(first_line)) >= 2:
        return "conll"
    raise NerftError(
        f"cannot detect the format of {path}: it is neither JSON nor CoNLL-style '<char> <tag>' rows; pass --format"
    )


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


# ------------------------------------------------------------------------------------------------------ readers


def read_nerft(path: str | os.PathLike, **options: Any) -> tuple[list[Document], ReadReport]:
    """The canonical nerft JSONL (``schema.read_documents``' format), with validation and per-line errors."""
    path = Path(path)
    records = _json_line_records(
        path, lambda obj, lineno, doc_id: document_from_dict(obj, path=str(path), line=lineno, default_id=doc_id))
    return _collect(path, "nerft", records, **options)


def _json_line_records(path: Path, convert: Callable[[Any, int, str], Document]
                       ) -> Iterator[tuple[int, Document | InputError]]:
    """(line number, document or the error that line gave) for a one-object-a-line JSON file."""
    prefix = _id_prefix(path)
    for lineno, obj in _iter_json_lines(path):
        if isinstance(obj, InputError):
            yield lineno, obj
            continue
        try:
            yield lineno, convert(obj, lineno, f"{prefix}-{lineno}")
        except InputError as exc:
            yield lineno, exc


def read_chinese_ner_sft(path: str | os.PathLike, **options: Any) -> tuple[list[Document], ReadReport]:
    """chinese_ner_sft span JSONL: ``{"text", "entities": [{"start_idx", "end_idx", "entity_text", ...}]}``."""
    path = Path(path)
    records = _json_line_records(
        path, lambda obj, lineno, doc_id: document_from_chinese_ner_sft(obj, str(path), lineno, doc_id))

    return _collect(path, "chinese_ner_sft", records, **options)


def document_from_chinese_ner_sft(obj: Any, path: str | None, line: int | None, default_id: str) -> Document:
    """One chinese_ner_sft row (a parsed JSON line or a ``datasets`` row) as a Document; offsets not yet checked."""
    text = _require_text(obj, path, line)
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
        start, end = _require_int(raw["start_idx"], "start_idx", path, line), _require_int(
            raw["end_idx"], "end_idx", path, line)
        mention = raw.get("entity_text")
        if mention is None:  # older rows: take the mention from the text (validation still checks the offsets)
            mention = text[start:end] if 0 <= start < end <= len(text) else ""
        entities.append(Entity(start, end, str(raw["entity_label"]), str(mention)))
    return Document(str(obj.get("id") or default_id), text, entities)


def read_cluener(path: str | os.PathLike, **options: Any) -> tuple[list[Document], ReadReport]:
    """CLUENER2020 JSON (inclusive ``end``): one object a line, concatenated pretty-printed objects, or an array."""
    path = Path(path)
    prefix = _id_prefix(path)

    def records() -> Iterator[tuple[int, Document | InputError]]:
        for index, (lineno, obj) in enumerate(_iter_json_objects(path)):
            if isinstance(obj, InputError):
                yield lineno, obj
                continue
            try:
                yield lineno, _document_from_cluener(obj, str(path), lineno, f"{prefix}-{index}")
            except InputError as exc:
                yield lineno, exc

    return _collect(path, "cluener", records(), **options)


def _document_from_cluener(obj: Any, path: str, line: int, default_id: str) -> Document:
    text = _require_text(obj, path, line)
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
                start = _require_int(span[0], "start", path, line)
                end_inclusive = _require_int(span[1], "end", path, line)
                entities.append(Entity(start, end_inclusive + 1, str(label), str(mention)))
    return Document(str(obj.get("id") if obj.get("id") is not None else default_id), text, entities)


def read_conll(
    path: str | os.PathLike,
    scheme: TagScheme = "auto",
    segmented_tokens: bool | None = None,
    **options: Any,
) -> tuple[list[Document], ReadReport]:
    """Character tagging with BIO, BIOES or BMES tags; one ``<token> [extra columns] <tag>`` row a line.

    ``scheme``: ``auto`` picks BIOES/BMES when E-, S- or M- tags occur, BIO otherwise; a named scheme makes tags
    outside it an error. ``segmented_tokens``: tokens are ``<char><digits>`` (Weibo NER's word-position digits),
    which are stripped; None detects it (every token is longer than one character and ends in a digit).

    An I-/M-/E- tag that does not continue an entity of the same label starts a new one; such repairs are counted
    in ``ReadReport.repaired_tags``. Tokens are joined without separators: this is character-level tagging.
    """
    path = Path(path)
    prefix = _id_prefix(path)
    sentences = _read_conll_sentences(path)
    rows = [row for sentence in sentences for row in sentence if not isinstance(row, InputError)]
    if segmented_tokens is None:
        segmented_tokens = bool(rows) and all(len(tok) > 1 and tok[-1].isdigit() for _, tok, _ in rows)
    allowed = _allowed_prefixes(scheme)
    repaired_total = 0

    def records() -> Iterator[tuple[int, Document | InputError]]:
        nonlocal repaired_total
        for index, sentence in enumerate(sentences):
            first_line = sentence[0].line if isinstance(sentence[0], InputError) else sentence[0][0]
            bad = next((row for row in sentence if isinstance(row, InputError)), None)
            if bad is not None:
                yield first_line, bad
                continue
            try:
                doc, repaired = _decode_sentence(sentence, path, allowed, segmented_tokens, f"{prefix}-{index}")
            except InputError as exc:
                yield first_line, exc
                continue
            repaired_total += repaired
            yield first_line, doc

    docs, report = _collect(path, "conll", records(), **options)
    report.repaired_tags += repaired_total
    if repaired_total:
        report.warn(f"{path}: {repaired_total} I-/M-/E- tag(s) did not continue an entity and started a new one")
    if segmented_tokens:
        report.warn(f"{path}: tokens are <char><digits> (Weibo-style segmentation positions); digits stripped")
    return docs, report


_Row = tuple[int, str, str]  # line number, token, tag


def _read_conll_sentences(path: Path) -> list[list[_Row | InputError]]:
    sentences: list[list[_Row | InputError]] = []
    current: list[_Row | InputError] = []
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.rstrip("\r\n")
            if lineno == 1:
                line = line.lstrip("\ufeff")
            if not line.strip():
                if current:
                    sentences.append(current)
                    current = []
                continue
            if line.startswith("-DOCSTART-"):
                continue
            columns = _split_columns(line)
            if len(columns) < 2 or not columns[0]:
                current.append(InputError(path, lineno, f"expected '<char> <tag>' (tab- or space-separated), got {line!r}"))
                continue
            current.append((lineno, columns[0], columns[-1].strip()))
    if current:
        sentences.append(current)
    return sentences


def _split_columns(line: str) -> list[str]:
    # Tabs win: a tab-separated row may carry a space as its character.
    return line.split("\t") if "\t" in line else line.split()


def _tag_prefix(tag: str) -> str:
    if tag == "O":
        return "O"
    head, sep, _ = tag.partition("-")
    return head.upper() if sep else "?"


def _allowed_prefixes(scheme: TagScheme) -> set[str]:
    if scheme == "bio":
        return {"O", "B", "I"}
    if scheme == "bioes":
        return {"O", "B", "I", "E", "S"}
    if scheme == "bmes":
        return {"O", "B", "M", "E", "S"}
    if scheme != "auto":
        raise NerftError(f"unknown tag scheme {scheme!r}; choose auto, bio, bioes or bmes")
    return {"O", "B", "I", "M", "E", "S"}  # auto: every prefix decodes the same way


def _decode_sentence(
    sentence: list[Any], path: Path, allowed: set[str], segmented: bool, doc_id: str
) -> tuple[Document, int]:
    """Turn one sentence's rows into a Document; returns it with the number of repaired tags."""
    pieces: list[str] = []
    entities: list[Entity] = []
    repaired = 0
    offset = 0
    open_label: str | None = None
    open_start = open_end = 0

    def close() -> None:
        nonlocal open_label
        if open_label is not None:
            entities.append(Entity(open_start, open_end, open_label, ""))
            open_label = None

    for lineno, token, tag in sentence:
        if segmented:
            token = _strip_segment_digits(token)
        start, end = offset, offset + len(token)
        pieces.append(token)
        offset = end
        prefix = _tag_prefix(tag)
        if prefix not in allowed:
            what = "has no B-/I-/E-/S-/M- prefix" if prefix == "?" else "is outside the tag scheme"
            raise InputError(path, lineno, f"tag {tag!r} {what} (allowed prefixes: {', '.join(sorted(allowed))})")
        label = tag[2:] if prefix != "O" else ""
        if prefix != "O" and not label:
            raise InputError(path, lineno, f"tag {tag!r} has no label after the prefix")
        if prefix == "O":
            close()
        elif prefix == "S":
            close()
            entities.append(Entity(start, end, label, ""))
        elif prefix == "B":
            close()
            open_label, open_start, open_end = label, start, end
        else:  # I, M, E continue an open entity of the same label, or (repaired) start one
            if open_label != label:
                close()
                repaired += 1
                open_label, open_start = label, start
            open_end = end
            if prefix == "E":
                close()
    close()
    text = "".join(pieces)
    return Document(doc_id, text, [Entity(e.start, e.end, e.label, text[e.start:e.end]) for e in entities]), repaired


def _strip_segment_digits(token: str) -> str:
    match = re.fullmatch(r"(.+?)(\d+)", token, flags=re.DOTALL)
    return match.group(1) if match else token


# --------------------------------------------------------------------------------------------------- hub loader


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

    return _collect(source, "chinese_ner_sft", records(), skip_invalid=skip_invalid,
                    reject_overlaps=reject_overlaps, total=len(rows))


# ------------------------------------------------------------------------------------------- shared machinery


def _collect(
    source: str | os.PathLike,
    fmt: str,
    records: Iterable[tuple[int, Document | InputError]],
    *,
    skip_invalid: bool = False,
    reject_overlaps: bool = False,
    progress: bool | None = None,
    total: int | None = None,
) -> tuple[list[Document], ReadReport]:
    """Validate each record; raise on the first bad one, or skip and count it with ``skip_invalid``."""
    report = ReadReport(str(source), fmt)
    docs: list[Document] = []
    first_line_of_id: dict[str, int] = {}
    name = Path(str(source)).name
    for line, item in tqdm(records, desc=f"reading {name}", unit=" docs", total=total, disable=_no_bar(progress),
                           leave=False):
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


def _no_bar(progress: bool | None) -> bool | None:
    return None if progress is None else not progress


def _iter_json_lines(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed object or InputError) for each non-blank line; one bad line does not stop the rest."""
    with open(path, encoding="utf-8") as f:
        for lineno, raw in enumerate(f, 1):
            if lineno == 1:
                raw = raw.lstrip("\ufeff")
            if not raw.strip():
                continue
            try:
                yield lineno, json.loads(raw)
            except json.JSONDecodeError as exc:
                yield lineno, InputError(path, lineno, f"invalid JSON ({exc.msg} at column {exc.colno})")


def _iter_json_objects(path: Path) -> Iterator[tuple[int, Any]]:
    """(line where it starts, object or InputError) for concatenated JSON values, one a line or pretty-printed.

    A top-level array yields its items. After a syntax error the walk resumes at the next line starting with
    ``{`` after the broken object's first line, so ``skip_invalid`` can step over one broken object.
    """
    text = path.read_text(encoding="utf-8").lstrip("\ufeff")
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
        if isinstance(value, list):
            for item in value:
                yield line, item
        else:
            yield line, value
        line += text.count("\n", pos, end)
        pos = end


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in " \t\r\n":
        pos += 1
    return pos


def _require_text(obj: Any, path: str | None, line: int | None) -> str:
    if not isinstance(obj, dict):
        raise InputError(path, line, f"expected a JSON object, got {type(obj).__name__}")
    text = obj.get("text")
    if not isinstance(text, str):
        raise InputError(path, line, "missing or non-string field 'text'")
    return text


def _require_int(value: Any, name: str, path: str | None, line: int | None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InputError(path, line, f"{name} must be an integer, got {value!r}")
    return value


def _id_prefix(path: Path) -> str:
    return path.stem if path.suffix.lower() in _FORMAT_SUFFIXES else path.name
