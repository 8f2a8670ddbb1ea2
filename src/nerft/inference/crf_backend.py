"""A ``Predictor`` over a character CRF (a folder written by ``nerft distill``: nerft.json with ``kind: crf`` and
crf.crfsuite): the same contract as the LLM backends (entities with offsets and scores, ``predict_detailed``), so
predict, serve and evaluate --score-with use it unchanged. ``loading.open_predictor`` chooses it from nerft.json,
whatever ``--backend`` says.

Decoding options that apply to any entity list apply here too: ``min_score``, ``label_min_scores`` and the lexicon
(``finish_entities``). The CRF has no prompt to constrain and no answer to window: ``window``, ``constrained`` and
the generation options are ignored. Its ``answers`` are empty (there is no raw model text).
"""

from __future__ import annotations

from pathlib import Path

from ..crf import CrfTagger
from ..labels import LabelSet
from ..lexicon import Lexicon
from ..prompts import Prompt
from ..schema import Entity, NerftError
from .base import Prediction, PredictStats, finish_entities
from .location import ModelLocation
from .options import PredictOptions

CRF_MODEL_FILE = "crf.crfsuite"


class CrfPredictor:
    backend = "crf"

    def __init__(self, model_file: str | Path, labels: LabelSet, prompt: Prompt, options: PredictOptions | None = None,
                 name: str = "crf"):
        self.tagger = CrfTagger(model_file)
        self.labels, self.prompt, self.name = labels, prompt, name
        self.options = options or PredictOptions()
        self.lexicon = Lexicon.load(self.options.lexicon) if self.options.lexicon else None
        self.codes = set(labels.codes)
        if unknown := set(self.options.label_min_score_map()) - self.codes:
            raise NerftError(f"label_min_scores names {', '.join(sorted(unknown))}, not among the model's label codes "
                             f"({', '.join(labels.codes)})")
        self.stats = PredictStats()

    @classmethod
    def from_location(cls, where: ModelLocation, options: PredictOptions) -> CrfPredictor:
        if where.home is None or where.info is None:
            raise NerftError("a CRF model is a folder written by nerft distill (nerft.json + crf.crfsuite)")
        return cls(where.home / CRF_MODEL_FILE, where.info.labels, where.info.prompt, options, where.name)

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        return [p.entities for p in self.predict_detailed(texts, labels)]

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        allowed = set(self.labels.subset(labels).codes) if labels is not None else self.codes
        out = []
        for text in texts:
            entities = [e for e in self.tagger.tag(text) if e.label in allowed]
            out.append(Prediction(finish_entities(text, entities, self.options, self.lexicon, allowed)))
        self.stats.texts += len(texts)
        self.stats.windows += len(texts)
        self.stats.batches += 1
        return out
