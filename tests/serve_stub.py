"""``python tests/serve_stub.py --model RUN --port N [nerft serve flags]``: the real ``nerft serve`` (flags, run
description, page, API, uvicorn) with the model replaced by ``StubPredictor``, whose answers a test knows in
advance: every occurrence of a word of ``WORDS``, with its label and score. The browser tests run it as a
subprocess on a free port."""

from __future__ import annotations

import sys

from nerft.inference.base import Prediction
from nerft.labels import Label, LabelSet
from nerft.schema import Entity

LABELS = LabelSet([Label("PER", "人名"), Label("LOC", "地名"), Label("ORG", "机构名")])
WORDS = {"张三": ("PER", 0.62), "李四": ("PER", 0.95), "北京": ("LOC", 0.91), "𠮷野家": ("ORG", 0.35),
         "北京大学": ("ORG", 0.8), "Zoe\u0301": ("PER", 0.7)}


def stub_entities(text: str, labels=None) -> list[Entity]:
    found = [Entity(i, i + len(word), label, word, score) for word, (label, score) in WORDS.items()
             for i in range(len(text)) if text.startswith(word, i) and (labels is None or label in labels)]
    return sorted(found)


class StubPredictor:
    labels = LABELS
    name = "stub"

    def predict(self, texts, labels=None):
        return [stub_entities(t, labels) for t in texts]

    def predict_detailed(self, texts, labels=None):
        return [Prediction(ents) for ents in self.predict(texts, labels)]


def main(argv: list[str]) -> int:
    import nerft.inference.loading as loading
    from nerft.cli import main as nerft_main

    loading.open_predictor = lambda load, options: StubPredictor()
    return nerft_main(["serve", *argv])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
