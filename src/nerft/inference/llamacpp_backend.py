"""The llama.cpp backend (optional extra ``nerft[llamacpp]``, CPU): the same ``DecodingPlan`` as the other backends
(prompts, windows, answer bounds, answer reading); only token generation differs.

The model is a folder written by ``nerft export --output-format gguf`` (one .gguf beside the run's nerft.json and
tokenizer). Prompts go in as token ids, one window after another: llama.cpp keeps the KV cache of the tokens it
evaluated last, and each prompt evaluates only what follows the part it shares with the previous one (the system
prompt, computed once). Each step reads the last position's logits: the greedy token and its log-probability.
Decoding is free (no logits processors): ``--constrained`` and ``--none-bias`` are refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..generation import Generated, stop_token_ids
from ..schema import NerftError
from .base import EnginePredictor, guarded_generate
from .location import ModelLocation
from .options import LlamaCppOptions, PredictOptions


def gguf_file(where: ModelLocation, settings: LlamaCppOptions) -> Path:
    """The .gguf of a located model: ``--llamacpp.gguf-file``, else the folder's only one (or the file itself)."""
    path = Path(where.weights.name_or_path).expanduser()
    if path.suffix == ".gguf" and path.is_file():
        return path
    if settings.gguf_file:
        chosen = path / settings.gguf_file
        if not chosen.is_file():
            raise NerftError(f"{chosen} does not exist")
        return chosen
    found = sorted(path.glob("*.gguf")) if path.is_dir() else []
    if len(found) != 1:
        what = "holds no .gguf file" if not found else f"holds {len(found)} .gguf files"
        raise NerftError(f"{path} {what}; write one with nerft export --model RUN --output-format gguf --output DIR"
                         + ("" if not found else " or choose one with --llamacpp.gguf-file"))
    return found[0]


class LlamaCppEngine:
    """Greedy generation with llama-cpp-python's ``Llama`` from prompt token ids."""

    def __init__(self, path: str | Path, tokenizer: Any, settings: LlamaCppOptions | None = None):
        try:
            import llama_cpp
        except ImportError:
            raise NerftError("the llamacpp backend needs llama-cpp-python: pip install 'nerft[llamacpp]'") from None
        import numpy as np

        settings = settings or LlamaCppOptions()
        self.np = np
        try:
            self.llm = llama_cpp.Llama(model_path=str(path), n_ctx=settings.n_ctx, n_batch=settings.n_batch,
                                       n_threads=settings.threads, n_threads_batch=settings.batch_threads or
                                       settings.threads, n_gpu_layers=0, logits_all=False, verbose=False)
        except (ValueError, RuntimeError, OSError) as exc:  # a truncated or foreign .gguf: llama.cpp says only
            raise NerftError(f"llama.cpp cannot load {path} ({str(exc).strip()[:120]}); the file is damaged or "
                             "not a GGUF export: write it again with nerft export --output-format gguf") from None
        self.n_vocab = self.llm.n_vocab()
        self.tokenizer = tokenizer
        self.stops = set(stop_token_ids(tokenizer))

    def _logits(self):
        import llama_cpp

        return self.np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(self.llm.ctx, -1), shape=(self.n_vocab,))

    def _start(self, prompt: list[int]) -> None:
        """Evaluate ``prompt``, keeping the cached tokens it starts with (at least its last token is evaluated)."""
        llm = self.llm
        if len(prompt) + 1 > llm.n_ctx():
            raise NerftError(f"a prompt of {len(prompt)} tokens does not fit llama.cpp's context "
                             f"(--llamacpp.n-ctx {llm.n_ctx()}); raise it or lower --window")
        cached = llm.input_ids[: llm.n_tokens]
        same = 0
        while same < min(len(cached), len(prompt) - 1) and cached[same] == prompt[same]:
            same += 1
        llm.n_tokens = same
        llm.eval(prompt[same:])

    def generate(self, prompts: list[list[int]], limits: list[int],
                 stop_row: Callable[[int, list[int]], bool] | None = None) -> list[Generated]:
        np, out = self.np, []
        for row, (prompt, limit) in enumerate(zip(prompts, limits, strict=True)):
            limit = min(limit, self.llm.n_ctx() - len(prompt) - 1)
            self._start(prompt)
            ids: list[int] = []
            lps: list[float] = []
            finished = False
            while len(ids) < limit:
                logits = self._logits().astype(np.float64)
                token = int(logits.argmax())
                if token in self.stops:
                    finished = True
                    break
                shifted = logits - logits.max()
                lps.append(float(shifted[token] - np.log(np.exp(shifted).sum())))
                ids.append(token)
                if stop_row is not None and stop_row(row, ids):
                    finished = len(ids) < limit  # a cut repetition loop counts as finished, as in transformers
                    break
                if len(ids) < limit:
                    self.llm.eval([token])
            out.append(Generated(self.tokenizer.decode(ids, skip_special_tokens=True), ids, lps, finished))
        return out


class LlamaCppPredictor(EnginePredictor):
    """A ``Predictor`` over a llama.cpp engine (or anything with the engine's ``generate``)."""

    backend = "llamacpp"

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, settings: LlamaCppOptions,
                      options: PredictOptions) -> LlamaCppPredictor:
        labels, prompt = where.labels_and_prompt
        engine = LlamaCppEngine(gguf_file(where, settings), tokenizer, settings)
        return cls(engine, tokenizer, labels, prompt, options, name=where.name, hint_lexicon=where.hint_lexicon(prompt))

    def _generate(self, texts: list[str], ids: list[list[int]], limits: list[int],
                  label_names: list[str]) -> list[Generated]:
        return guarded_generate(self, texts, ids, limits)
