"""A character CRF tagger (python-crfsuite, the optional extra ``nerft[crf]``): features, BIO tags, training and
tagging. ``nerft distill`` trains one on gold + silver documents; the benchmarks' CRF baseline is this one.

Every character is one token; its tag is ``B-``/``I-`` + the label code, or ``O``. Features of character i
(``c[k]`` is the character at i + k, ``<s>``/``</s>`` past either end):

- ``bias``;
- unigrams ``c[-2]`` .. ``c[+2]``;
- bigrams ``c[-2]c[-1]``, ``c[-1]c[0]``, ``c[0]c[+1]``, ``c[+1]c[+2]``, and the trigram ``c[-1]c[0]c[+1]``;
- the character type of ``c[-1]``, ``c[0]``, ``c[+1]`` (han, digit, latin, punct, space, other; full-width
  digits and letters count as digits and latin) and their concatenation;
- ``BOS`` / ``EOS`` on the first and last character.

Training: L-BFGS (``iterations``, c1 0.1, c2 0.01), every transition allowed. Decoding: Viterbi, then BIO to spans
(an ``I-X`` that does not continue an ``X`` opens a new entity); a span's score is the lowest marginal probability
of its characters' tags (how sure the CRF is of the whole span).
"""

from __future__ import annotations

import os
import time
import unicodedata
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .schema import SCORE_DIGITS, Document, Entity, NerftError

Span = tuple[int, int, str]  # start, end (exclusive), label code


def require_crfsuite() -> Any:
    """The ``pycrfsuite`` module, or a NerftError saying how to install it."""
    try:
        import pycrfsuite
    except ImportError:
        raise NerftError("the character CRF needs python-crfsuite: pip install 'nerft[crf]' "
                         "(or pip install python-crfsuite)") from None
    return pycrfsuite


def char_type(ch: str) -> str:
    if ch in ("<s>", "</s>"):
        return ch
    if ch.isspace():
        return "space"
    if "0" <= ch <= "9" or "０" <= ch <= "９":
        return "digit"
    if ch.isascii() and ch.isalpha() or "Ａ" <= ch <= "Ｚ" or "ａ" <= ch <= "ｚ":
        return "latin"
    if "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf":
        return "han"
    if unicodedata.category(ch).startswith("P"):
        return "punct"
    return "other"


def char_features(text: str) -> list[list[str]]:
    """The feature strings of every character of ``text`` (see the module docstring)."""
    padded = ["<s>", "<s>", *text, "</s>", "</s>"]
    feats = []
    for i in range(len(text)):
        c = {k: padded[i + 2 + k] for k in range(-2, 3)}
        t = {k: char_type(c[k]) for k in (-1, 0, 1)}
        f = ["bias"]
        f += [f"c{k}={c[k]}" for k in range(-2, 3)]
        f += [f"b{k}={c[k]}{c[k + 1]}" for k in range(-2, 2)]
        f.append(f"t={c[-1]}{c[0]}{c[1]}")
        f += [f"y{k}={t[k]}" for k in (-1, 0, 1)]
        f.append(f"yyy={t[-1]}|{t[0]}|{t[1]}")
        if i == 0:
            f.append("BOS")
        if i == len(text) - 1:
            f.append("EOS")
        feats.append(f)
    return feats


def bio_tags(length: int, spans: Iterable[Span]) -> list[str]:
    """B-/I-/O tags for ``length`` characters; of overlapping spans the first (by start, longest first) wins."""
    tags = ["O"] * length
    for start, end, label in sorted(spans, key=lambda s: (s[0], -s[1])):
        if any(t != "O" for t in tags[start:end]):
            continue
        tags[start] = "B-" + label
        for i in range(start + 1, end):
            tags[i] = "I-" + label
    return tags


def spans_from_bio(tags: Sequence[str]) -> list[Span]:
    """Spans from BIO tags; an I-X that does not continue an X opens one."""
    out: list[Span] = []
    start, label = 0, None
    for i, tag in enumerate([*tags, "O"]):
        kind, _, lab = tag.partition("-")
        if kind == "I" and label == lab:
            continue
        if label is not None:
            out.append((start, i, label))
            label = None
        if kind in ("B", "I"):
            start, label = i, lab
    return out


def document_spans(doc: Document) -> list[Span]:
    return [(e.start, e.end, e.label) for e in doc.entities if e.start is not None and e.end is not None]


def train_crf(docs: Iterable[Document], model_file: str | os.PathLike, iterations: int = 100, c1: float = 0.1,
              c2: float = 0.01) -> dict[str, Any]:
    """Train on ``docs`` (documents without text are skipped) and write the crfsuite model through a ``.part``
    file renamed at the end, so a stopped training leaves no model behind; returns ``train_docs`` and ``train_s``."""
    pycrfsuite = require_crfsuite()
    start = time.perf_counter()
    trainer = pycrfsuite.Trainer(verbose=False)
    n = 0
    for doc in docs:
        if doc.text:
            trainer.append(char_features(doc.text), bio_tags(len(doc.text), document_spans(doc)))
            n += 1
    if not n:
        raise NerftError("no document with text to train the CRF on")
    trainer.set_params({"c1": c1, "c2": c2, "max_iterations": iterations, "feature.possible_transitions": True})
    model_file = Path(model_file)
    model_file.parent.mkdir(parents=True, exist_ok=True)
    part = model_file.with_name(model_file.name + ".part")
    trainer.train(str(part))
    os.replace(part, model_file)
    return {"train_docs": n, "train_s": round(time.perf_counter() - start, 2)}


class CrfTagger:
    """An open crfsuite model: ``tag(text)`` gives its entities with offsets and scores."""

    def __init__(self, model_file: str | os.PathLike):
        pycrfsuite = require_crfsuite()
        if not Path(model_file).is_file():
            raise NerftError(f"CRF model {model_file} does not exist")
        self.tagger = pycrfsuite.Tagger()
        self.tagger.open(str(model_file))
        self.labels = sorted({t[2:] for t in self.tagger.labels() if t != "O"})

    def tag(self, text: str) -> list[Entity]:
        """The Viterbi entities of ``text``, each scored by the lowest marginal of its characters' tags."""
        if not text:
            return []
        tags = self.tagger.tag(char_features(text))
        out = []
        for start, end, label in spans_from_bio(tags):
            score = min(self.tagger.marginal(tags[i], i) for i in range(start, end))
            out.append(Entity(start, end, label, text[start:end], round(score, SCORE_DIGITS)))
        return out
