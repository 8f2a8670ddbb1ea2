"""Dev and test scoring during training, through the same predictor and answer reading as ``nerft predict``, so
a dev score is what the saved run will score."""

from __future__ import annotations

from typing import Any

from ..labels import LabelSet
from ..lexicon import Lexicon
from ..prompts import Prompt
from ..schema import Document


def predict_documents(model: Any, tokenizer: Any, prompt: Prompt, labels: LabelSet, docs: list[Document],
                      batch_size: int, max_new_tokens: int, hint_lexicon: Lexicon | None = None,
                      constrained: bool = False) -> tuple[list[Document], dict[str, int]]:
    """Predictions for ``docs`` (windows, answer bounds, repetition guard, shared-prompt cache of ``nerft
    predict``), with the parse failures (against the trained output format), hallucinations and unfinished
    answers counted."""
    from ..inference.options import PredictOptions
    from ..inference.transformers_backend import TransformersPredictor

    predictor = TransformersPredictor(model, tokenizer, labels, prompt,
                                      PredictOptions(batch_size=batch_size, max_new_tokens=max_new_tokens,
                                                     constrained=constrained),
                                      frozen=False, hint_lexicon=hint_lexicon)
    predictions = predictor.predict_detailed([d.text for d in docs])
    counts = {"parse_failures": sum(p.parse_failures for p in predictions),
              "hallucinated": sum(p.hallucinated for p in predictions),
              "unfinished": sum(not p.finished for p in predictions)}
    return [Document(d.id, d.text, p.entities) for d, p in zip(docs, predictions, strict=True)], counts


def score(gold: list[Document], pred: list[Document], counts: dict[str, int]) -> dict[str, Any]:
    """Strict micro P/R/F1 in percent (exact span and label), plus parse failures and hallucinations."""
    from ..metrics import score_documents

    strict = score_documents(gold, pred, parse_failures=counts["parse_failures"],
                             hallucinations=counts["hallucinated"])["strict"]["micro"]
    return {"precision": round(100 * strict["precision"], 2), "recall": round(100 * strict["recall"], 2),
            "f1": round(100 * strict["f1"], 2), **counts, "docs": len(gold)}


def sample_rows(docs: list[Document], preds: list[Document], n: int, labels: LabelSet) -> list[dict[str, str]]:
    """The first ``n`` documents as text / gold / predicted strings, for the tracker."""
    def show(d: Document) -> str:
        return "; ".join(f"{labels.name_of(e.label)}:{e.text}[{e.start},{e.end})" for e in d.entities) or "-"

    return [{"text": g.text, "gold": show(g), "predicted": show(p)} for g, p in list(zip(docs, preds, strict=True))[:n]]
