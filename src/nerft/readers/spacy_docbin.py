"""spaCy's binary corpus format, a ``DocBin`` file (``.spacy``: what ``spacy convert`` writes and ``spacy train``
reads), as Documents (``pip install 'nerft[spacy]'``).

A Doc's entities are its ``doc.ents`` and, when present, the spans of ``doc.spans["nerft"]`` (where
``nerft predict --output-format spacy`` keeps overlapping entities, which ``doc.ents`` cannot hold); the same span
in both is one entity. Offsets are the spans' character offsets. Ids: ``doc.user_data["id"]`` when the file was
written with user data (nerft writes it), else ``<file stem>-<n>``. A DocBin has no lines: an error's "line" is
the Doc's position in the file, from 1.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..schema import Document, Entity, InputError, NerftError
from .base import ReadReport, collect, id_prefix

SPANS_KEY = "nerft"  # the span group nerft writes (and its spaCy component sets): every entity, overlaps kept
SCORE_EXTENSION = "nerft_score"  # the Span extension holding an entity's score
ID_KEY = "id"  # the Doc's user_data key holding the document id


def score_extension() -> None:
    """Register ``Span._.nerft_score`` with spaCy (once; the component and the DocBin writer both set it)."""
    from spacy.tokens import Span

    if not Span.has_extension(SCORE_EXTENSION):
        Span.set_extension(SCORE_EXTENSION, default=None)


def read_spacy(path: str | os.PathLike, *, encoding: str = "utf-8", **options: Any) -> tuple[list[Document], ReadReport]:
    """A DocBin file as Documents (``encoding`` is accepted for the common reader signature; a DocBin has none)."""
    path = Path(path)
    docs = load_docbin(path)
    prefix = id_prefix(path)

    def records() -> Iterator[tuple[int, Document | InputError]]:
        for number, doc in enumerate(docs, 1):
            yield number, document_from_spacy(doc, f"{prefix}-{number}")

    return collect(path, "spacy", records(), total=len(docs), **options)


def load_docbin(path: Path) -> list[Any]:
    """The Docs of a DocBin file; a file that is not one is an InputError naming it."""
    try:
        from spacy.tokens import DocBin
        from spacy.vocab import Vocab
    except ImportError:
        raise NerftError(f"reading {path} (a spaCy DocBin) needs spaCy: pip install 'nerft[spacy]'") from None
    try:
        bin_ = DocBin(store_user_data=True).from_bytes(path.read_bytes())
        return list(bin_.get_docs(Vocab()))
    except Exception as exc:  # zlib.error, msgpack's and spaCy's own: whatever a damaged file makes them raise
        raise InputError(path, None, f"not a spaCy DocBin ({type(exc).__name__}: {exc})") from None


def document_from_spacy(doc: Any, default_id: str) -> Document:
    doc_id = doc.user_data.get(ID_KEY)
    spans = list(doc.ents) + list(doc.spans[SPANS_KEY] if SPANS_KEY in doc.spans else ())
    entities = {(s.start_char, s.end_char, s.label_): Entity(s.start_char, s.end_char, s.label_, s.text)
                for s in spans}
    return Document(doc_id if isinstance(doc_id, str) and doc_id else default_id, doc.text, list(entities.values()))
