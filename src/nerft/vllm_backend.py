"""The vLLM backend (optional extra ``nerft[vllm]``, GPU): same prompts, answer budget, parsing and grounding as
the transformers backend (functions from ``predict``); only token generation differs.

vLLM is imported only when a ``VllmEngine`` is built, so CPU installs never need it. ``VllmPredictor`` takes any
engine with ``generate(prompts: list[list[int]], limits: list[int]) -> list[Generated]``, which is how it is tested
without vLLM.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .generation import Generated, prompt_ids, stop_token_ids
from .labels import LabelSet
from .predict import (
    PredictOptions,
    answer_budget,
    answer_to_entities,
    entity_overhead_tokens,
    predict_in_windows,
    unit_scores,
)
from .prompts import Prompt
from .schema import Entity, NerftError
from .windows import Window, make_windows


class VllmEngine:
    """Greedy generation with vllm.LLM over a merged model folder (adapters go through ``nerft export`` first)."""

    def __init__(self, model_dir: str | Path, tokenizer, **llm_kwargs: Any):
        try:
            import vllm
        except ImportError:
            raise NerftError("the vllm backend needs vLLM: pip install 'nerft[vllm]' (GPU machines)") from None
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model_dir), tokenizer=str(model_dir), **llm_kwargs)
        self.stops = stop_token_ids(tokenizer)
        self.tokenizer = tokenizer

    def generate(self, prompts: list[list[int]], limits: list[int]) -> list[Generated]:
        from vllm.inputs import TokensPrompt

        params = [self._vllm.SamplingParams(temperature=0.0, max_tokens=limit, stop_token_ids=self.stops, logprobs=0)
                  for limit in limits]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False)
        results = []
        for out in outs:
            o = out.outputs[0]
            ids = [t for t in o.token_ids if t not in self.stops]
            lps = [float(step[t].logprob) if step and t in step else 0.0 for t, step in zip(ids, o.logprobs or [], strict=False)]
            results.append(Generated(self.tokenizer.decode(ids, skip_special_tokens=True), ids, lps,
                                     o.finish_reason == "stop"))
        return results


class VllmPredictor:
    def __init__(self, engine, tokenizer, labels: LabelSet, prompt: Prompt, options: PredictOptions | None = None,
                 name: str = "nerft"):
        self.engine, self.tokenizer, self.labels, self.prompt = engine, tokenizer, labels, prompt
        self.options = options or PredictOptions()
        if self.options.constrained:
            raise NerftError("--constrained is available with the transformers backend only")
        if self.options.none_bias:
            raise NerftError("--none-bias is available with the transformers backend only")
        self.name = name
        self._overhead = entity_overhead_tokens(tokenizer, labels, prompt.output_format)
        self.last_raw: list[list[str]] = []

    @classmethod
    def load(cls, model: str | Path | None = None, *, base: str | Path | None = None,
             adapter: str | Path | None = None, **options: Any) -> VllmPredictor:
        from .predict import _load_tokenizer, resolve_model, tutorial_prompt

        where = resolve_model(model, base, adapter)
        if where["adapter"] is not None:
            raise NerftError("the vllm backend loads merged weights: run `nerft export` first and pass its folder")
        info = where["info"]
        labels, prompt = (info.labels, info.prompt) if info else tutorial_prompt()
        tokenizer = _load_tokenizer(*where["tokenizer"])
        return cls(VllmEngine(where["base"], tokenizer), tokenizer, labels, prompt, PredictOptions(**options),
                   name=Path(where["base"]).name)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _windows(self, text: str) -> list[Window]:
        if not self.options.window:
            return [Window(0, len(text))]
        return make_windows(text, self.options.window, self.count_tokens, self.options.window_overlap)

    def generate_answers(self, texts: list[str], allowed: set[str] | None = None) -> list[tuple[str, list[Entity]]]:
        ids = [prompt_ids(self.tokenizer, self.prompt, t) for t in texts]
        limits = [answer_budget(self.count_tokens(t), self._overhead) for t in texts]
        if self.options.max_new_tokens:
            limits = [min(limit, self.options.max_new_tokens) for limit in limits]
        out = []
        for text, g in zip(texts, self.engine.generate(ids, limits), strict=True):
            scores = unit_scores(self.tokenizer, g.text, g.token_ids, g.logprobs)
            out.append((g.text, answer_to_entities(text, g.text, self.labels, scores=scores, allowed=allowed,
                                                   keep_hallucinated=self.options.keep_hallucinated)))
        return out

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        allowed = set(self.labels.subset(labels).codes) if labels is not None else None
        results, self.last_raw, _ = predict_in_windows(texts, self._windows,
                                                       lambda ts: self.generate_answers(ts, allowed))
        return results
