"""The options of prediction, declared once: how a model is loaded (``LoadOptions``: ``--model``, ``--base``,
``--adapter``, ``--device``, ``--dtype``, ``--backend``, shared by ``predict``, ``serve`` and ``export``) and how it
decodes (``PredictOptions``: ``predict`` and ``serve``). Both are config dataclasses: flags, YAML and keywords."""

from __future__ import annotations

import argparse
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Literal

from ..config import ConfigError, opt

BACKENDS = ("transformers", "vllm", "openai", "llamacpp", "ct2")


@dataclass
class VllmOptions:
    """vLLM engine settings (``--backend vllm`` only)."""

    tensor_parallel_size: int = opt(1, "GPUs to shard the model over")
    max_model_len: int | None = opt(None, "longest prompt + answer in tokens (default: the model's)")
    gpu_memory_utilization: float = opt(0.9, "share of each GPU's memory vLLM may take")
    max_lora_rank: int = opt(64, "largest LoRA rank the engine accepts (adapters are served without merging)")


@dataclass
class OpenAIOptions:
    """An OpenAI-compatible server (``--backend openai``: vLLM's, SGLang's, a hosted API, another ``nerft serve``).
    nerft builds the prompts and reads the answers; the server only generates."""

    base_url: str | None = opt(None, "the server, e.g. http://gpu-box:8000/v1 (with or without /v1)",
                               aliases=("--base-url",))
    model_name: str | None = opt(None, "the served model's name (default: the server's only model)",
                                 aliases=("--model-name",))
    # repr=False: the key never shows in a log or traceback; nothing writes LoadOptions to disk. No --api-key
    # alias: nerft serve's --api-key is the key its own clients must send.
    api_key: str | None = field(default=None, repr=False, metadata={
        "help": "API key of the server; better from the environment (see --openai.api-key-env), which keeps it "
                "out of the process list"})
    api_key_env: str = opt("NERFT_OPENAI_API_KEY", "environment variable holding the API key (then "
                                                   "OPENAI_API_KEY is tried)")
    concurrency: int = opt(8, "requests in flight at once")
    retries: int = opt(4, "retries of a request after HTTP 429, 5xx or a connection error (exponential backoff)")
    timeout: float = opt(120.0, "seconds one request may take")
    logprobs: bool = opt(True, "ask for token log-probabilities (entity scores); --no-openai.logprobs for a "
                               "server that refuses them")


@dataclass
class LlamaCppOptions:
    """llama.cpp engine settings (``--backend llamacpp``: a folder written by ``nerft export --output-format gguf``)."""

    threads: int | None = opt(None, "CPU threads for decoding (default: llama.cpp's choice)")
    batch_threads: int | None = opt(None, "CPU threads for prompt evaluation (default: --llamacpp.threads)")
    n_ctx: int = opt(2048, "context length in tokens (prompt + answer of one window)")
    n_batch: int = opt(512, "prompt tokens evaluated per step")
    gguf_file: str | None = opt(None, "which .gguf in the folder (default: its only one)")


@dataclass
class CT2Options:
    """CTranslate2 engine settings (``--backend ct2``: a folder written by ``nerft export --output-format ct2``)."""

    threads: int = opt(0, "CPU threads (intra_threads; 0: CTranslate2's choice)")
    compute_type: str = opt("default", "default (as exported), int8, int8_float32, bfloat16, float32, ...")
    device: str = opt("cpu", "cpu, cuda or auto")


@dataclass
class LoadOptions:
    """Which model to open and where it runs."""

    model: str | None = opt(None, "a run directory (nerft train), a merged folder (nerft export) or a peft adapter "
                                  "folder (e.g. the tutorial's checkpoint-N)", path=True)
    base: str | None = opt(None, "base model: hub id, modelscope:<id>, local folder or .gguf file; overrides the "
                                 "one the run directory records (needed only when that one is unreachable)", path=True)
    revision: str | None = opt(None, "hub revision of --base (branch, tag or commit)")
    adapter: str | None = opt(None, "a peft adapter folder to put on --base", path=True)
    device: str = opt("auto", "auto (CUDA when there is a GPU, else CPU), cpu, cuda or cuda:N")
    dtype: str = opt("auto", "auto, fp32, bf16 or fp16 (or float32, bfloat16, float16); auto = bf16 on a GPU "
                             "that supports it, fp32 on CPU")
    autocast: Literal["auto", "bf16", "off"] = opt(
        "auto", "transformers backend over fp32 weights: bf16 matmuls in the transformer blocks under torch.autocast "
                "(the lm_head and the answer scores stay fp32); auto = on a GPU with bf16, and on a CPU where a "
                "start-up check finds bf16 matmuls at least 1.25x faster, for models of 50M parameters or more")
    backend: Literal["transformers", "vllm", "openai", "llamacpp", "ct2"] = opt(
        "transformers", "generation engine (vllm: GPU, pip install 'nerft[vllm]'; openai: an OpenAI-compatible "
                        "server at --base-url, --model then gives only the labels, prompt and tokenizer; llamacpp "
                        "and ct2: a folder nerft export --output-format gguf / ct2 wrote, pip install 'nerft[llamacpp]' "
                        "/ 'nerft[ct2]')")
    run_decoding: bool = opt(True, "start from the decoding nerft train chose on dev for this run (RUN/decoding.yaml: "
                                   "min-score, per-label min-scores, lexicon); --config and flags override it "
                                   "field by field; --no-run-decoding ignores it")
    label_set: str | None = opt(None, "predict with this label set (a built-in such as cluener or weibo, or a "
                                      "YAML/JSON file) instead of the run's: the prompt is rebuilt for it (runs whose "
                                      "prompt is built from the labels alone, e.g. a data.mixture recipe's); --labels "
                                      "then picks codes from it", path=True)
    vllm: VllmOptions = opt(help="vLLM engine settings", factory=VllmOptions)
    openai: OpenAIOptions = opt(help="OpenAI-compatible server (--backend openai)", factory=OpenAIOptions)
    llamacpp: LlamaCppOptions = opt(help="llama.cpp engine settings (--backend llamacpp)", factory=LlamaCppOptions)
    ct2: CT2Options = opt(help="CTranslate2 engine settings (--backend ct2)", factory=CT2Options)


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
    min_score: float = opt(0.0, "drop the mentions the model wrote with a confidence (score) below this, before "
                                "--lexicon completes the answer (a lexicon string may then take a dropped one's "
                                "place); mentions without a score (a server that returns no log-probabilities) "
                                "are kept")
    label_min_scores: list[str] = opt(help="per-label --min-score: LABEL=X pairs (label codes), e.g. LOC=0.5 "
                                           "GPE=0.9; a label not named uses --min-score (nerft tune chooses both "
                                           "on dev)", factory=list)
    lexicon: str | None = opt(None, "complete answers from what the training data annotates: a run's lexicon.json "
                                    "(nerft train writes it; the run directory itself works too) or a training "
                                    "file in nerft JSONL. Adds the left-out occurrences of strings annotated "
                                    "consistently there, with their majority label", path=True)
    lexicon_min_rate: float = opt(0.3, "--lexicon: a string counts as consistently annotated when at least this "
                                       "share of its occurrences in the training texts is annotated, overall and "
                                       "beside the neighbouring characters (chosen on CCFBDCI dev)")
    lexicon_min_count: int = opt(1, "--lexicon: ... and it occurs at least this many times there")

    def __post_init__(self) -> None:
        if not 0 <= self.min_score <= 1:
            raise ConfigError(f"min_score must be in [0, 1], got {self.min_score}")
        self._floors = self._parse_label_min_scores()  # a malformed pair is a ConfigError now, once
        if not 0 < self.lexicon_min_rate <= 1:
            raise ConfigError(f"lexicon_min_rate must be in (0, 1], got {self.lexicon_min_rate}")
        if self.lexicon_min_count < 1:
            raise ConfigError(f"lexicon_min_count must be >= 1, got {self.lexicon_min_count}")

    def label_min_score_map(self) -> dict[str, float]:
        """``label_min_scores`` as {label code: min score}."""
        return dict(self._floors)

    def _parse_label_min_scores(self) -> dict[str, float]:
        out: dict[str, float] = {}
        for pair in self.label_min_scores:
            code, sep, value = str(pair).partition("=")
            try:
                score = float(value) if sep and code.strip() else None
            except ValueError:
                score = None
            if score is None or not 0 <= score <= 1:
                raise ConfigError(f"label_min_scores: {pair!r} is not LABEL=X with X in [0, 1]")
            out[code.strip()] = score
        return out

    def min_score_of(self, label: str) -> float:
        """The confidence a mention of ``label`` needs to be kept."""
        return self._floors.get(label, self.min_score)


def add_load_arguments(parser: argparse.ArgumentParser, skip: Collection[str] = frozenset()) -> None:
    """The model-loading flags every command that opens a model shares (``LoadOptions``), on ``parser``."""
    from ..config import add_config_arguments

    add_config_arguments(parser, LoadOptions, skip=set(skip))

