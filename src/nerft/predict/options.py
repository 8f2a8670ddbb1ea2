"""The options of prediction, declared once: how a model is loaded (``LoadOptions``: ``--model``, ``--base``,
``--adapter``, ``--device``, ``--dtype``, ``--backend``, shared by ``predict``, ``serve`` and ``export``) and how it
decodes (``PredictOptions``: ``predict`` and ``serve``). Both are config dataclasses: flags, YAML and keywords."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import opt

BACKENDS = ("transformers", "vllm")


@dataclass
class VllmOptions:
    """vLLM engine settings (``--backend vllm`` only)."""

    tensor_parallel_size: int = opt(1, "GPUs to shard the model over")
    max_model_len: int | None = opt(None, "longest prompt + answer in tokens (default: the model's)")
    gpu_memory_utilization: float = opt(0.9, "share of each GPU's memory vLLM may take")
    max_lora_rank: int = opt(64, "largest LoRA rank the engine accepts (adapters are served without merging)")


@dataclass
class LoadOptions:
    """Which model to open and where it runs."""

    model: str | None = opt(None, "a run directory (nerft train), a merged folder (nerft export) or a peft adapter "
                                  "folder (e.g. the tutorial's checkpoint-N)")
    base: str | None = opt(None, "base model: hub id, modelscope:<id>, local folder or .gguf file; overrides the "
                                 "one the run directory records (needed only when that one is unreachable)")
    revision: str | None = opt(None, "hub revision of --base (branch, tag or commit)")
    adapter: str | None = opt(None, "a peft adapter folder to put on --base")
    device: str = opt("auto", "auto (CUDA when there is a GPU, else CPU), cpu, cuda or cuda:N")
    dtype: str = opt("auto", "auto, fp32, bf16 or fp16 (or float32, bfloat16, float16); auto = bf16 on a GPU "
                             "that supports it, fp32 on CPU")
    backend: Literal["transformers", "vllm"] = opt("transformers", "generation engine (vllm: GPU, pip install "
                                                                   "'nerft[vllm]')")
    vllm: VllmOptions = opt(help="vLLM engine settings", factory=VllmOptions)


@dataclass
class PredictOptions:
    """How a predictor decodes: the config schema behind ``nerft predict`` / ``nerft serve`` flags and the
    keywords of ``load_predictor``."""

    batch_size: int = opt(32, "texts per generation batch; rows that finish leave it (on 2 CPU cores a batch of "
                              "32 decodes 1.6x faster per text than 8)")
    max_new_tokens: int | None = opt(None, "cap on the answer length, on top of the bound derived from each text")
    constrained: bool = opt(False, "allow only known labels and mentions that occur in the text")
    window: int | None = opt(256, "max text tokens per window for long documents (0 or null: never split)")
    window_overlap: int = opt(32, "text tokens shared by neighbouring windows")
    keep_hallucinated: bool = opt(False, "keep mentions not found in the text (they get no offsets)")
    prefix_cache: bool = opt(True, "compute the KV cache of the shared system prompt once")
    none_bias: float = opt(0.0, "lower the first answer token's score for a 'no entity' answer by this much: "
                                "> 0 trades precision for recall (e.g. 2); 0 is plain greedy decoding")
