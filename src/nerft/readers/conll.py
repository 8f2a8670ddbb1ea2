"""CoNLL-style character tagging (BIO, BIOES, BMES; Weibo NER's ``<char><digit>`` tokens)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

from ..schema import Document, Entity, InputError, NerftError
from ..textio import iter_lines
from .base import ReadReport, WrongFormatError, collect, id_prefix

TagScheme = Literal["auto", "bio", "bioes", "bmes"]


def read_conll(
    path: str | os.PathLike,
    scheme: TagScheme = "auto",
    segmented_tokens: bool | None = None,
    encoding: str = "utf-8",
    **options: Any,
) -> tuple[list[Document], ReadReport]:
    """Character tagging with BIO, BIOES or BMES tags; one ``<token> [extra columns] <tag>`` row a line.

    ``scheme``: ``auto`` picks BIOES/BMES when E-, S- or M- tags occur, BIO otherwise; a named scheme makes tags
    outside it an error. ``segmented_tokens``: tokens are ``<char><digits>`` (Weibo NER's word-position digits),
    which are stripped; None detects it (every token is longer than one character and ends in a digit).

    An I-/M-/E- tag that does not continue an entity of the same label starts a new one; such repairs are counted
    in ``ReadReport.repaired_tags``. Tokens are joined without separators: this is character-level tagging.
    A file whose first row opens a JSON object or array is refused (WrongFormatError): it is not CoNLL.
    """
    path = Path(path)
    prefix = id_prefix(path)
    sentences = _read_conll_sentences(path, encoding)
    rows = [row for sentence in sentences for row in sentence if not isinstance(row, InputError)]
    if segmented_tokens is None:
        segmented_tokens = bool(rows) and all(len(tok) > 1 and tok[-1].isdigit() for _, tok, _ in rows)
    allowed = _allowed_prefixes(scheme)
    repaired_total = 0

    def records() -> Iterator[tuple[int | None, Document | InputError]]:
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

    docs, report = collect(path, "conll", records(), **options)
    report.repaired_tags += repaired_total
    if repaired_total:
        report.warn(f"{path}: {repaired_total} I-/M-/E- tag(s) did not continue an entity and started a new one")
    if segmented_tokens:
        report.warn(f"{path}: tokens are <char><digits> (Weibo-style segmentation positions); digits stripped")
    return docs, report


_Row = tuple[int, str, str]  # line number, token, tag


def _read_conll_sentences(path: Path, encoding: str = "utf-8") -> list[list[_Row | InputError]]:
    sentences: list[list[_Row | InputError]] = []
    current: list[_Row | InputError] = []
    first = True
    for lineno, line in iter_lines(path, encoding):
        if not line.strip():
            if current:
                sentences.append(current)
                current = []
            continue
        if first and _looks_like_json(line):
            raise WrongFormatError(f"{path}, line {lineno}: starts like JSON, not like CoNLL '<char> <tag>' rows; "
                                   "pass the file's --input-format (or leave it at auto)")
        first = False
        if line.startswith("-DOCSTART-"):
            continue
        columns = split_columns(line)
        if len(columns) < 2 or not columns[0]:
            current.append(InputError(path, lineno, f"expected '<char> <tag>' (tab- or space-separated), got {line!r}"))
            continue
        current.append((lineno, columns[0], columns[-1].strip()))
    if current:
        sentences.append(current)
    return sentences


def _looks_like_json(line: str) -> bool:
    """A JSON file's first line ('{', '[', '{"text": ...'); a CoNLL row for the character '{' has a tag column."""
    stripped = line.strip()
    return stripped in ("{", "[") or stripped.startswith(('{"', '[{', '["', "[["))


def split_columns(line: str) -> list[str]:
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


