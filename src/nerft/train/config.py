"""The configuration of ``nerft train``: typed sections that YAML recipes and ``--section.key`` flags fill."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..config import check_output_format, opt
from ..modeling import LoraSettings, ModelConfig
from ..tagger.model import TaggerSettings
from ..tracking import TrackingConfig


@dataclass
class DataConfig:
    train: str | None = opt(None, "training split: canonical JSONL written by `nerft prepare`", path=True)
    dev: str | None = opt(None, "dev split for evaluation during training (best adapter kept by dev F1)", path=True)
    test: str | None = opt(None, "test split, scored once at the end with the best adapter", path=True)
    labels: str | None = opt(None, "label set: ccfbdci, cluener or a labels file; default labels.json beside "
                                   "the train file, else inferred from the training data", path=True)
    mixture: list[str] = opt(help="train one adapter on several datasets instead of data.train: folders written by "
                                  "`nerft prepare` (train.jsonl, dev.jsonl, labels.json), each example prompted "
                                  "with its own folder's label set; the run's label set, prompt, lexicon and dev "
                                  "(unless data.labels/data.dev; the decoding is chosen on it) are the first "
                                  "folder's; predict with another folder's set with --label-set", factory=list)
    mixture_balance: Literal["proportional", "equal"] = opt(
        "proportional", "data.mixture: proportional: each folder's documents once per epoch (a small dataset is a "
                        "small share of the steps); equal: every folder repeated or sampled up to the largest "
                        "one's count, so each gets the same share of the steps (as if trained alone for its share "
                        "of the time)")
    output_format: str = opt("compact", "what the model learns to write: compact, jsonl, tutorial, or a format "
                                        "registered with nerft.formats.register_format")
    prompt_style: Literal["nerft", "tutorial"] = opt("nerft", "nerft: short prompt; tutorial: the tutorial's")
    describe_labels: bool = opt(False, "add each label's description to the prompt")
    examples_in_prompt: int = opt(0, "append N worked examples to the system prompt: short training documents "
                                     "with entities, chosen deterministically (one per label first, then in "
                                     "order); the prompt prefix cache and data.shared_prefix cover them")
    lexicon_hints: int = opt(0, "after each text, a line naming up to N of its strings that the training data "
                                "annotates, with their majority label and annotated share (Lexicon.hint; each "
                                "training example sees the other documents' counts); predict/serve read the "
                                "run's lexicon.json for it; 0: off")
    system_prompt: str | None = opt(None, "your own system prompt instead of the built one (saved in the run "
                                          "directory, so predict/serve use it too)")
    end_token: Literal["eot", "pad"] = opt("eot", "answer ends with <|im_end|> (eot) or the pad token (tutorial)")
    max_length: int = opt(512, "longest example in tokens (prompt + answer + end token)")
    overlong: Literal["drop", "keep", "truncate"] = opt(
        "drop", "examples longer than max_length: drop them, keep them whole, or cut them (the tutorial)")
    max_examples: int | None = opt(None, "use only the first N training documents")
    empty_share: float | None = opt(0.5, "keep at most this share of documents without entities (a seeded "
                                   "random subset of them; CCFBDCI has 63%, which teaches a short run to answer "
                                   "'none' to everything: F1 0, against 71.9 at 0.5 in the CPU recipe's hour); "
                                   "null keeps all (the tutorial)")
    group_by_length: bool = opt(True, "batch examples of similar length (less padding)")
    packing: bool = opt(False, "concatenate each batch into one sequence with per-example positions: no padding")
    shared_prefix: bool = opt(False, "compute the prompt prefix every example shares (system turn + user header) "
                                     "once per micro-batch and run only each example's own tokens after its KV "
                                     "cache: the same loss and gradients with fewer tokens (with LoRA dropout, one "
                                     "dropout mask on the prefix for the whole micro-batch); not with packing or "
                                     "gradient checkpointing")

    def __post_init__(self) -> None:
        check_output_format(self.output_format, "data.output_format")

@dataclass
class OptimConfig:
    batch_size: int = opt(4, "examples per micro-batch (per process)")
    grad_accum: int = opt(4, "micro-batches per optimizer step")
    epochs: int = opt(2, "passes over the training data (ignored when max_steps is set)")
    max_steps: int | None = opt(None, "optimizer steps to run (overrides epochs)")
    max_minutes: float | None = opt(None, "wall-clock training budget: warmup and decay run over this time "
                                          "instead of over steps and training ends when it is spent "
                                          "(evaluation and checkpoint time excluded); epochs/max_steps still cap it")
    lr: float = opt(1e-4, "peak learning rate")
    weight_decay: float = opt(0.0, "AdamW weight decay")
    warmup_steps: int | None = opt(None, "linear warmup steps (default: warmup_ratio of all steps)")
    warmup_ratio: float = opt(0.03, "warmup as a fraction of all steps")
    schedule: Literal["cosine", "linear", "constant"] = opt("cosine", "decay after warmup")
    max_grad_norm: float = opt(1.0, "gradient clipping (0 = off)")
    gradient_checkpointing: bool = opt(False, "recompute activations: less memory, ~20% slower")
    autocast: Literal["off", "bf16", "auto"] = opt(
        "off", "mixed precision over fp32 weights (LoRA weights, optimizer and loss stay fp32): bf16 runs the "
               "matmuls in bfloat16; auto = bf16 where it pays: on a CUDA GPU with bf16, or on a CPU where a short "
               "matmul check finds bf16 at least 1.25x faster than fp32 (CPUs differ: 2.2x on one here, 0.5x on "
               "another); off when the weights are already 16-bit")
    seed: int = opt(42, "seed for adapters, dropout and data order")


@dataclass
class EvalConfig:
    every: int = opt(0, "evaluate on dev every N optimizer steps (0 = at the end of each epoch)")
    dev_docs: int = opt(200, "size of the fixed dev subset scored during training")
    batch_size: int = opt(8, "prompts per generation batch")
    max_new_tokens: int = opt(128, "generation limit per answer")
    samples: int = opt(5, "sample predictions logged at each evaluation")
    at_start: bool = opt(False, "also score the untrained model before the first step")


@dataclass
class TuneConfig:
    enabled: bool = opt(True, "at the end of training, choose the decoding on dev as `nerft tune` does (min-score, "
                              "per label, the run's lexicon and its min-rate; one decoding pass of the saved run) "
                              "and write it to RUN/decoding.yaml, which predict, serve, evaluate --score-with, tune "
                              "and export start from (--no-tune: skip it)")
    dev_docs: int | None = opt(None, "dev documents to tune on (default: the whole dev split, which costs one "
                                     "prediction pass over it)")
    lexicon: bool = opt(True, "also try completing the answers from the run's lexicon.json")
    per_label: bool = opt(True, "also try a min-score per label (kept only where dev F1 rises)")
    constrained: bool = opt(False, "answer dev with constrained decoding (known labels, mentions from the text "
                                   "only), which then is part of the run's decoding")


@dataclass
class OutputConfig:
    dir: str = opt("runs/nerft", "run directory")
    save_every: int = opt(0, "checkpoint every N optimizer steps (0: only by time, at the end and on Ctrl-C/SIGTERM)")
    save_every_minutes: float | None = opt(30.0, "also checkpoint once this many minutes of training have passed "
                                                 "since the last checkpoint, so a long run always has one to resume "
                                                 "from (null: off)")
    keep_checkpoints: int = opt(2, "most recent checkpoints kept")
    overwrite: bool = opt(False, "reuse a run directory that already holds a run")


@dataclass
class TrainConfig:
    task: Literal["generate", "tag"] = opt(
        "generate", "generate: the LLM answers with the entities it finds (the default; docs/training.md); tag: the "
                    "same LLM as a tagger, one forward pass per text and a tag per character (the tagger: section)")
    model: ModelConfig = opt(help="base model", factory=ModelConfig)
    lora: LoraSettings = opt(help="LoRA adapters", factory=LoraSettings)
    data: DataConfig = opt(help="data and tokenisation", factory=DataConfig)
    optim: OptimConfig = opt(help="optimisation", factory=OptimConfig)
    eval: EvalConfig = opt(help="dev evaluation", factory=EvalConfig)
    tracking: TrackingConfig = opt(help="experiment tracking", factory=TrackingConfig)
    tagger: TaggerSettings = opt(help="task tag: the tagger's architecture", factory=TaggerSettings)
    tune: TuneConfig = opt(help="the decoding chosen on dev at the end", factory=TuneConfig)
    output: OutputConfig = opt(help="run directory and checkpoints", factory=OutputConfig)
    resume: str | None = opt(None, "continue a run: 'latest' or a checkpoint folder")
    stop_after_steps: int | None = opt(None, "stop (with a checkpoint) after N optimizer steps of this session; "
                                             "continue later with --resume")
