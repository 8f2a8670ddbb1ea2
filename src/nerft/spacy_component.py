"""nerft as a spaCy pipeline component (``pip install 'nerft[spacy]'``, spaCy 3.8):

    import spacy
    nlp = spacy.blank("zh")
    nlp.add_pipe("nerft", config={"model": "runs/ccfbdci"})   # a run, an export, a distill folder, a hub id
    doc = nlp("王伟昨天在北京参观了清华大学。")
    doc.ents                      # the entities, as spaCy spans (overlaps resolved: the longest, then the first)
    doc.spans["nerft"]            # every entity nerft found, overlaps kept; span._.nerft_score: its score

The factory is registered through the ``spacy_factories`` entry point, so ``add_pipe("nerft")`` works without
importing nerft first. ``nlp.pipe`` sends the texts to the model in batches (``batch_size``).

nerft's offsets are characters; spaCy's spans are tokens. An entity whose boundary falls inside a spaCy token is
placed as ``Doc.char_span(alignment_mode=...)`` allows (``alignment_mode``: ``strict``, ``contract`` or
``expand``); one that cannot be placed is never dropped silently: it is counted in
``doc.user_data["nerft_unaligned"]`` (with its offsets, label and text) and in the component's ``unaligned``
total, and a warning names it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .readers.spacy_docbin import SCORE_EXTENSION, SPANS_KEY, score_extension

if TYPE_CHECKING:
    from spacy.tokens import Doc

    from .schema import Entity

log = logging.getLogger("nerft.spacy")


class NerftComponent:
    """The pipeline component: ``__call__`` on one Doc, ``pipe`` on a stream of them (batched through nerft)."""

    def __init__(self, nlp: Any, name: str, model: str, alignment_mode: str = "expand", spans_key: str = SPANS_KEY,
                 batch_size: int = 32, labels: list[str] | None = None, options: dict[str, Any] | None = None):
        from .api import load

        if alignment_mode not in ("strict", "contract", "expand"):
            raise ValueError(f"alignment_mode must be strict, contract or expand, got {alignment_mode!r}")
        score_extension()
        self.name, self.alignment_mode, self.spans_key = name, alignment_mode, spans_key
        self.batch_size, self.labels = batch_size, labels
        self.ner = load(model, **(options or {}))
        self.unaligned = 0

    def __call__(self, doc: Doc) -> Doc:
        return self._annotate(doc, self.ner(doc.text, labels=self.labels))

    def pipe(self, docs: Iterable[Any], batch_size: int | None = None) -> Iterator[Any]:
        from spacy.util import minibatch

        for batch in minibatch(docs, batch_size or self.batch_size):
            found = self.ner([d.text for d in batch], labels=self.labels)
            for doc, entities in zip(batch, found, strict=True):
                yield self._annotate(doc, entities)

    def _annotate(self, doc: Doc, entities: list[Entity]) -> Doc:
        from spacy.util import filter_spans

        spans, lost = [], []
        for e in entities:
            if e.start is None or e.end is None:
                continue
            span = doc.char_span(e.start, e.end, label=e.label, alignment_mode=self.alignment_mode)
            if span is None or len(span) == 0:
                lost.append({"start": e.start, "end": e.end, "label": e.label, "text": e.text})
                continue
            span._.set(SCORE_EXTENSION, e.score)
            spans.append(span)
        if lost:
            self.unaligned += len(lost)
            log.warning(f"{len(lost)} entit{'y' if len(lost) == 1 else 'ies'} of a document could not be placed on "
                        f"spaCy's tokens (alignment_mode {self.alignment_mode}): "
                        + ", ".join(f"{x['label']}:{x['text']}[{x['start']},{x['end']})" for x in lost[:5]))
        doc.user_data["nerft_unaligned"] = lost
        doc.spans[self.spans_key] = spans
        doc.ents = filter_spans(spans)  # spaCy's ents cannot overlap: the longest, then the first, as spaCy keeps
        return doc


def make_nerft(nlp: Any, name: str, model: str, alignment_mode: str, spans_key: str, batch_size: int,
               labels: list[str] | None, options: dict[str, Any]) -> NerftComponent:
    """The factory spaCy calls for ``nlp.add_pipe("nerft", config={...})``."""
    return NerftComponent(nlp, name, model, alignment_mode, spans_key, batch_size, labels, options)


def register() -> None:
    """Register the ``nerft`` factory with spaCy (the entry point does it on spaCy's first look; calling it twice
    is harmless)."""
    from spacy.language import Language

    if "nerft" not in Language.factories:
        Language.factory("nerft", default_config={"model": None, "alignment_mode": "expand", "spans_key": SPANS_KEY,
                                                  "batch_size": 32, "labels": None, "options": {}})(make_nerft)


try:  # imported by spaCy's entry point: register at import
    register()
except ImportError:  # spaCy is not installed: nothing to register with
    pass
