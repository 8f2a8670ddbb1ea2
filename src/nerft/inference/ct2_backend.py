"""The CTranslate2 backend (optional extra ``nerft[ct2]``, CPU or GPU): the same ``DecodingPlan`` as the other
backends (prompts, windows, answer bounds, answer reading); only token generation differs.

The model is a folder written by ``nerft export --output-format ct2`` (CTranslate2's model.bin beside the run's
nerft.json and tokenizer). Prompts go in as token ids (as token strings of the same vocabulary), the shared system
prompt as CTranslate2's ``static_prompt`` (its state is computed once and reused), and each generated token comes
back through a step callback with its id and log-probability, which also stops a row at its own answer bound.
Decoding is greedy and free: CTranslate2 has no logits processor, so ``--constrained`` and ``--none-bias`` are
refused.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..generation import Generated, shared_prefix_ids, stop_token_ids
from ..schema import NerftError
from .base import EnginePredictor, guarded_generate, sorted_batches
from .location import ModelLocation
from .options import CT2Options, PredictOptions

if TYPE_CHECKING:
    from ctranslate2 import GenerationStepResult

CT2_MODEL_FILE = "model.bin"


def ct2_folder(where: ModelLocation) -> Path:
    """The CTranslate2 model folder of a located model (an export written with ``--output-format ct2``)."""
    folder = Path(where.weights.name_or_path).expanduser()
    if not (folder / CT2_MODEL_FILE).is_file():
        raise NerftError(f"{folder} holds no CTranslate2 model ({CT2_MODEL_FILE}); write one with "
                         f"nerft export --model RUN --output-format ct2 --output DIR, then pass --model DIR")
    return folder


class CT2Engine:
    """Greedy generation with ``ctranslate2.Generator`` from prompt token ids; ``prefix``: token ids every prompt
    starts with (sent once as the static prompt)."""

    def __init__(self, folder: str | Path, tokenizer: Any, *, prefix: list[int] | None = None,
                 batch_size: int = 32, settings: CT2Options | None = None):
        try:
            import ctranslate2
        except ImportError:
            raise NerftError("the ct2 backend needs CTranslate2: pip install 'nerft[ct2]'") from None
        settings = settings or CT2Options()
        try:
            self.generator = ctranslate2.Generator(str(folder), device=settings.device,
                                                   compute_type=settings.compute_type,
                                                   intra_threads=settings.threads)
        except (RuntimeError, ValueError, OSError) as exc:  # a truncated, empty or foreign model.bin/vocabulary
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise NerftError(f"CTranslate2 cannot load {folder} ({first[:160]}); the folder is damaged or not "
                             "a CTranslate2 export: write it again with nerft export --output-format ct2") from None
        self.tokenizer, self.batch_size = tokenizer, batch_size
        self.stops = stop_token_ids(tokenizer)
        self.prefix = list(prefix or [])

    def generate(self, prompts: list[list[int]], limits: list[int],
                 stop_row: Callable[[int, list[int]], bool] | None = None) -> list[Generated]:
        """One answer per prompt, in batches of similar length; ``stop_row(i, ids)`` is asked after each token of
        prompt ``i`` whether to stop it (a repetition loop: then it counts as finished)."""
        results: list[Generated | None] = [None] * len(prompts)
        for batch in sorted_batches([len(p) for p in prompts], self.batch_size):
            gens = self._batch([prompts[i] for i in batch], [limits[i] for i in batch], batch, stop_row)
            for i, g in zip(batch, gens, strict=True):
                results[i] = g
        return results  # type: ignore[return-value]

    def _batch(self, prompts: list[list[int]], limits: list[int], rows: list[int],
               stop_row: Callable[[int, list[int]], bool] | None) -> list[Generated]:
        n = len(self.prefix)
        static = n > 0 and all(p[:n] == self.prefix and len(p) > n for p in prompts)
        starts = [p[n:] if static else p for p in prompts]
        ids: list[list[int]] = [[] for _ in prompts]
        lps: list[list[float]] = [[] for _ in prompts]
        ended = [False] * len(prompts)

        stops = set(self.stops)

        # The callback must not hold the engine: CTranslate2 may drop it last in its own worker thread, and a
        # Generator freed there would join that thread from itself (abort: "Resource deadlock avoided").
        def step(result: GenerationStepResult) -> bool:  # one generated token of one row; True stops that row
            b = result.batch_id
            if result.token_id in stops:
                ended[b] = True
                return True
            ids[b].append(result.token_id)
            lps[b].append(float(result.log_prob) if result.log_prob is not None else 0.0)
            if stop_row is not None and len(ids[b]) < limits[b] and stop_row(rows[b], ids[b]):
                ended[b] = True
            return ended[b] or len(ids[b]) >= limits[b]

        convert = self.tokenizer.convert_ids_to_tokens
        kwargs = {"static_prompt": convert(self.prefix)} if static else {}
        # the prompt tokens past the batch's shortest are forced through the decoding loop and may count towards
        # max_length; each row's own bound is kept by the callback
        spread = max(len(r) for r in starts) - min(len(r) for r in starts)
        self.generator.generate_batch([convert(r) for r in starts], max_length=max(limits) + spread, sampling_topk=1,
                                      end_token=self.stops, include_prompt_in_result=False, return_scores=True,
                                      callback=step, **kwargs)
        return [Generated(self.tokenizer.decode(ids[b], skip_special_tokens=True), ids[b], lps[b],
                          ended[b] or len(ids[b]) < limits[b]) for b in range(len(prompts))]


class CT2Predictor(EnginePredictor):
    """A ``Predictor`` over a CTranslate2 engine (or anything with the engine's ``generate``)."""

    backend = "ct2"

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, settings: CT2Options, options: PredictOptions
                      ) -> CT2Predictor:
        labels, prompt = where.labels_and_prompt
        prefix = shared_prefix_ids(tokenizer, prompt) if options.prefix_cache else []
        engine = CT2Engine(ct2_folder(where), tokenizer, prefix=prefix, batch_size=options.batch_size,
                           settings=settings)
        return cls(engine, tokenizer, labels, prompt, options, name=where.name, hint_lexicon=where.hint_lexicon(prompt))

    def _generate(self, texts: list[str], ids: list[list[int]], limits: list[int],
                  label_names: list[str]) -> list[Generated]:
        return guarded_generate(self, texts, ids, limits)
