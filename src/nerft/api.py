"""The Python API nerft promises: ``nerft.load`` and ``nerft.evaluate`` (re-exported at the package top).

    import nerft
    with nerft.load("runs/ccfbdci") as ner:               # a run, an export, or a hub id of an export
        ner("王伟昨天在北京参观了清华大学。")                  # -> [Entity(3, 5, 'GPE', '北京', score=0.98), ...]
        ner(["text one", "text two"])                       # -> one list of entities per text (batched)
    scores = nerft.evaluate(gold_documents, predicted)      # -> Scores(precision, recall, f1, per_label, ...)

Everything else in the package stays importable (``nerft.inference.loading.load_predictor`` is what ``load``
opens), but these two, with ``Entity``, ``Document``, ``Scores`` and ``LabelScores``, are what does not change
without notice.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, overload

from .metrics import LabelScores, Scores, typed_scores  # noqa: F401 - Scores, LabelScores: part of the API
from .schema import Document, Entity, NerftError  # noqa: F401 - Document: part of the API


class NER:
    """An opened model: call it on a text or a list of texts. ``labels`` is its label set, ``info`` what its
    folder records (task, base model, decoding, scores); ``close()`` (or the ``with`` block) lets the weights go."""

    def __init__(self, predictor: Any, folder: Path | None):
        self._predictor, self.folder = predictor, folder
        self.labels = predictor.labels

    # a str is also a Sequence[str]: the first overload wins for it, as the call does
    @overload
    def __call__(  # type: ignore[overload-overlap]
            self, texts: str, labels: Sequence[str] | None = None) -> list[Entity]: ...

    @overload
    def __call__(self, texts: Sequence[str], labels: Sequence[str] | None = None) -> list[list[Entity]]: ...

    def __call__(self, texts: str | Sequence[str],
                 labels: Sequence[str] | None = None) -> list[Entity] | list[list[Entity]]:
        """The entities of ``texts`` (character offsets into each text, a label code, a score in [0, 1]),
        decoded as the model's own decoding.yaml says; ``labels``: only these label codes."""
        if self._predictor is None:
            raise NerftError("this model was closed")
        one = isinstance(texts, str)
        batch = [texts] if one else list(texts)
        if not all(isinstance(t, str) for t in batch):
            raise TypeError("texts must be a string or a sequence of strings")
        found = self._predictor.predict(batch, list(labels) if labels is not None else None)
        return found[0] if one else found

    @property
    def info(self) -> dict[str, Any]:
        """What the model's folder records (nerft.json), {} for a bare adapter."""
        from .rundir import INFO_FILE, RunInfo

        if self.folder is None or not (self.folder / INFO_FILE).is_file():
            return {}
        return RunInfo.load(self.folder).to_dict()

    def close(self) -> None:
        self._predictor = None
        import gc

        gc.collect()

    def __enter__(self) -> NER:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"NER({self.folder or 'model'}, labels={self.labels.codes})"


def load(model: str | Path, *, revision: str | None = None, **options: Any) -> NER:
    """Open ``model``: a run directory (``nerft train``), an exported folder (``nerft export``), a CRF or tagger
    folder (``nerft distill``), or the hub id of an exported folder (downloaded into the Hugging Face cache; it
    works offline once cached). ``options``: how it loads and decodes, as the keywords of
    ``inference.loading.load_predictor`` (``device``, ``backend``, ``batch_size``, ``min_score``, ...)."""
    folder = resolve_model(str(model), revision)
    from .inference.loading import load_predictor

    return NER(load_predictor(folder, **options), Path(folder))


def resolve_model(model: str, revision: str | None = None) -> str:
    """A local folder as it is; a hub id (``org/name``, not a local path) downloaded to the cache, as a folder."""
    path = Path(model).expanduser()
    if path.exists() or model.startswith((".", "/", "~")) or model.count("/") != 1:
        return str(path)
    try:
        from huggingface_hub import snapshot_download

        return snapshot_download(model, revision=revision)
    except Exception as exc:  # no network, no such repository, no access: one line
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise NerftError(f"{model} is neither a local folder nor a model on the Hugging Face Hub that could be "
                         f"fetched ({first[:200]})") from None


evaluate = typed_scores  # nerft.evaluate (the module of that name, callable) calls the same function
