"""The vLLM backend (optional extra ``nerft[vllm]``, CUDA GPUs): the same ``DecodingPlan`` as the transformers
backend (prompts, windows, answer bounds, answer reading); only token generation differs.

vLLM is imported only when a ``VllmEngine`` is built, so CPU installs never need it. ``VllmPredictor`` takes any
engine with ``generate(prompts: list[list[int]], limits: list[int]) -> list[Generated]``, which is how it is tested
without vLLM. A run directory's LoRA adapter is served as an adapter (``enable_lora``), not merged first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..generation import Generated, stop_token_ids
from ..modeling import canonical_dtype, resolve_device, resolve_source
from ..schema import NerftError
from .base import EnginePredictor
from .location import ModelLocation
from .options import LoadOptions, PredictOptions, VllmOptions

VLLM_DTYPES = {"auto": "auto", "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


class VllmEngine:
    """Greedy generation with ``vllm.LLM``; ``adapter``: a peft LoRA folder applied per request."""

    def __init__(self, model: str | Path, tokenizer: Any, *, revision: str | None = None,
                 adapter: str | Path | None = None, dtype: str = "auto", max_num_seqs: int | None = None,
                 prefix_cache: bool = True,                  settings: VllmOptions | None = None):
        try:
            import vllm
        except ImportError:
            raise NerftError("the vllm backend needs vLLM: pip install 'nerft[vllm]' (GPU machines)") from None
        settings = settings or VllmOptions()
        kwargs: dict[str, Any] = {"tensor_parallel_size": settings.tensor_parallel_size,
                                  "gpu_memory_utilization": settings.gpu_memory_utilization,
                                  "dtype": VLLM_DTYPES[canonical_dtype(dtype)], "enable_prefix_caching": prefix_cache}
        if settings.max_model_len:
            kwargs["max_model_len"] = settings.max_model_len
        if max_num_seqs:
            kwargs["max_num_seqs"] = max_num_seqs
        if adapter is not None:
            kwargs.update(enable_lora=True, max_lora_rank=settings.max_lora_rank)
        self._vllm = vllm
        self.llm = vllm.LLM(model=str(model), revision=revision, **kwargs)
        self.lora = None
        if adapter is not None:
            from vllm.lora.request import LoRARequest

            self.lora = LoRARequest("nerft", 1, str(adapter))
        self.stops = stop_token_ids(tokenizer)
        self.tokenizer = tokenizer

    def generate(self, prompts: list[list[int]], limits: list[int]) -> list[Generated]:
        from vllm.inputs import TokensPrompt

        params = [self._vllm.SamplingParams(temperature=0.0, max_tokens=limit, stop_token_ids=self.stops, logprobs=0)
                  for limit in limits]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=p) for p in prompts], params, use_tqdm=False,
                                 lora_request=self.lora)
        results = []
        for out in outs:
            o = out.outputs[0]
            ids = [t for t in o.token_ids if t not in self.stops]
            lps = [float(step[t].logprob) if step and t in step else 0.0
                   for t, step in zip(ids, o.logprobs or [], strict=False)]
            results.append(Generated(self.tokenizer.decode(ids, skip_special_tokens=True), ids, lps,
                                     o.finish_reason == "stop"))
        return results


class VllmPredictor(EnginePredictor):
    """A ``Predictor`` over a vLLM engine (or anything with the engine's ``generate``)."""

    backend = "vllm"

    @staticmethod
    def check_device(where: ModelLocation) -> None:
        if resolve_device(where.weights).type != "cuda":
            raise NerftError("the vllm backend runs on CUDA GPUs only; use --backend transformers on this machine")

    @classmethod
    def from_location(cls, where: ModelLocation, tokenizer: Any, opts: LoadOptions, options: PredictOptions
                      ) -> VllmPredictor:
        cls.check_device(where)
        labels, prompt = where.labels_and_prompt
        source, _gguf = resolve_source(where.weights)  # ~ expanded, modelscope: downloaded
        engine = VllmEngine(source, tokenizer, revision=where.weights.revision,
                            adapter=where.adapter, dtype=opts.dtype, max_num_seqs=options.batch_size,
                            prefix_cache=options.prefix_cache, settings=opts.vllm)
        return cls(engine, tokenizer, labels, prompt, options, name=where.name, hint_lexicon=where.hint_lexicon(prompt))
