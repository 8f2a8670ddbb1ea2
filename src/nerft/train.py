"""``nerft train``: LoRA instruction fine-tuning of a chat LLM into an NER model.

Reads top to bottom: config, data (documents -> prompt + answer token ids, loss on the answer only), batching
(length-grouped, optionally packed), the loss (lm_head only at supervised positions), the loop (gradient
accumulation, warmup + cosine/linear schedule, dev evaluation, checkpoints, Ctrl-C), and the run directory.

Runs unchanged on one CPU/GPU, under ``torchrun`` / ``accelerate launch`` (DDP), and under DeepSpeed through
``accelerate launch --config_file configs/deepspeed/zero2.yaml``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
import yaml

from . import config as cfglib
from .config import opt
from .formats import OutputFormat, get_format
from .generation import end_of_turn_id, pad_token_id, prompt_ids
from .jsonl import read_documents
from .labels import LabelSet, load_label_set
from .metrics import read_answer
from .modeling import LoraSettings, ModelConfig, add_lora, load_model, load_tokenizer, resolve_device
from .prompts import Prompt, build_prompt
from .rundir import RunInfo, adapter_dir, tokenizer_dir
from .schema import Document, NerftError, atomic_dir, atomic_write, write_json
from .tracking import Tracker, TrackingConfig

IGNORE = -100


# ---------------------------------------------------------------------------------------------------------------
# Config


@dataclass
class DataConfig:
    train: str | None = opt(None, "training split: canonical JSONL written by `nerft prepare`")
    dev: str | None = opt(None, "dev split for evaluation during training (best adapter kept by dev F1)")
    test: str | None = opt(None, "test split, scored once at the end with the best adapter")
    labels: str | None = opt(None, "label set: ccfbdci, cluener or a labels file; default labels.json beside "
                                   "the train file, else inferred from the training data")
    output_format: Literal["compact", "jsonl", "tutorial"] = opt("compact", "what the model learns to write")
    prompt_style: Literal["nerft", "tutorial"] = opt("nerft", "nerft: short prompt; tutorial: the tutorial's")
    describe_labels: bool = opt(False, "add each label's description to the prompt")
    system_prompt: str | None = opt(None, "your own system prompt instead of the built one (saved in the run "
                                          "directory, so predict/serve use it too)")
    end_token: Literal["eot", "pad"] = opt("eot", "answer ends with <|im_end|> (eot) or the pad token (tutorial)")
    max_length: int = opt(512, "longest example in tokens (prompt + answer + end token)")
    overlong: Literal["drop", "keep", "truncate"] = opt(
        "drop", "examples longer than max_length: drop them, keep them whole, or cut them (the tutorial)")
    max_examples: int | None = opt(None, "use only the first N training documents")
    empty_share: float | None = opt(None, "keep at most this share of documents without entities (a seeded "
                                    "random subset of them; CCFBDCI has 63%, which teaches a short run to "
                                    "answer 'none' to everything); None keeps all")
    group_by_length: bool = opt(True, "batch examples of similar length (less padding)")
    packing: bool = opt(False, "concatenate each batch into one sequence with per-example positions: no padding")


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
class OutputConfig:
    dir: str = opt("runs/nerft", "run directory")
    save_every: int = opt(0, "checkpoint every N optimizer steps (0 = only at the end and on Ctrl-C)")
    keep_checkpoints: int = opt(2, "most recent checkpoints kept")
    overwrite: bool = opt(False, "reuse a run directory that already holds a run")


@dataclass
class TrainConfig:
    model: ModelConfig = opt(help="base model", factory=ModelConfig)
    lora: LoraSettings = opt(help="LoRA adapters", factory=LoraSettings)
    data: DataConfig = opt(help="data and tokenisation", factory=DataConfig)
    optim: OptimConfig = opt(help="optimisation", factory=OptimConfig)
    eval: EvalConfig = opt(help="dev evaluation", factory=EvalConfig)
    tracking: TrackingConfig = opt(help="experiment tracking", factory=TrackingConfig)
    output: OutputConfig = opt(help="run directory and checkpoints", factory=OutputConfig)
    resume: str | None = opt(None, "continue a run: 'latest' or a checkpoint folder")
    stop_after_steps: int | None = opt(None, "stop (with a checkpoint) after N optimizer steps of this session; "
                                             "continue later with --resume")


# ---------------------------------------------------------------------------------------------------------------
# Data: documents -> token ids with the loss on the answer only


@dataclass
class Example:
    input_ids: list[int]
    labels: list[int]  # IGNORE on prompt tokens


@dataclass
class EncodedData:
    examples: list[Example]
    overlong: int = 0  # examples longer than max_length (dropped, kept or cut as configured)
    supervised_tokens: int = 0


def answer_end_id(tokenizer, end_token: str) -> int:
    """<|im_end|> closes the assistant turn; the tutorial ends its answers with the pad token instead."""
    return pad_token_id(tokenizer) if end_token == "pad" else end_of_turn_id(tokenizer)


def encode_document(doc: Document, tokenizer, prompt: Prompt, fmt: OutputFormat, labels: LabelSet,
                    end_id: int) -> Example:
    """Chat prompt ids (ending with the assistant header) + answer ids + end token; labels mask the prompt."""
    prompt_part = prompt_ids(tokenizer, prompt, doc.text)
    answer = fmt.render(doc.entities, labels)
    answer_part = tokenizer(answer, add_special_tokens=False)["input_ids"] + [end_id]
    return Example(prompt_part + answer_part, [IGNORE] * len(prompt_part) + answer_part)


def encode_documents(docs: list[Document], tokenizer, prompt: Prompt, fmt: OutputFormat, labels: LabelSet,
                     end_id: int, max_length: int, overlong: str) -> EncodedData:
    out = EncodedData([])
    for doc in docs:
        ex = encode_document(doc, tokenizer, prompt, fmt, labels, end_id)
        if len(ex.input_ids) > max_length:
            out.overlong += 1
            if overlong == "drop":
                continue
            if overlong == "truncate":
                ex = Example(ex.input_ids[:max_length], ex.labels[:max_length])
        out.supervised_tokens += sum(1 for t in ex.labels if t != IGNORE)
        out.examples.append(ex)
    return out


# ---------------------------------------------------------------------------------------------------------------
# Batching


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int, group_by_length: bool,
                  mega_batches: int = 50) -> list[list[int]]:
    """Example indices per micro-batch for one epoch; a pure function of (seed, epoch), so --resume replays it.

    With length grouping the shuffled order is cut into mega-batches of ``mega_batches`` batches, each sorted by
    length before being cut into batches, and the batches are shuffled: similar lengths share a batch (little
    padding) while the order stays random.
    """
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    if group_by_length:
        chunk = batch_size * mega_batches
        order = [i for s in range(0, len(order), chunk)
                 for i in sorted(order[s:s + chunk], key=lambda i: -lengths[i])]
    batches = [order[s:s + batch_size] for s in range(0, len(order), batch_size)]
    if group_by_length:
        rng.shuffle(batches)
    return batches


def collate(examples: list[Example], pad_id: int, packing: bool) -> dict[str, torch.Tensor]:
    """Right-padded batch with an attention mask, or (packing) one row whose position ids restart per example.

    transformers (>= 4.53) turns restarting position ids without an attention mask into a block-diagonal causal
    mask, so packed examples never attend to each other (tests/test_train.py checks the logits match).
    """
    if packing:
        ids = [t for ex in examples for t in ex.input_ids]
        labels = [t for ex in examples for t in ex.labels]
        positions = [p for ex in examples for p in range(len(ex.input_ids))]
        return {"input_ids": torch.tensor([ids]), "labels": torch.tensor([labels]),
                "position_ids": torch.tensor([positions])}
    width = max(len(ex.input_ids) for ex in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    attention = torch.zeros((len(examples), width), dtype=torch.long)
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        input_ids[i, :n] = torch.tensor(ex.input_ids)
        labels[i, :n] = torch.tensor(ex.labels)
        attention[i, :n] = 1
    return {"input_ids": input_ids, "labels": labels, "attention_mask": attention}


# ---------------------------------------------------------------------------------------------------------------
# Loss


class SupervisedLoss(torch.nn.Module):
    """Summed next-token cross-entropy over supervised positions, and their count.

    The lm_head (vocabulary 151,936 wide for Qwen2) runs only on the hidden states that predict an answer token,
    not on every prompt position: same loss, a much cheaper step. Wrapping the peft model in this module keeps
    DDP/DeepSpeed in charge of the forward pass (gradient sync hooks run).
    """

    def __init__(self, peft_model):
        super().__init__()
        self.peft_model = peft_model

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor, attention_mask: torch.Tensor | None = None,
                position_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        causal_lm = self.peft_model.get_base_model()  # LoRA layers are injected in place
        hidden = causal_lm.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                                 use_cache=False).last_hidden_state
        targets = labels[:, 1:]
        supervised = targets != IGNORE
        logits = causal_lm.lm_head(hidden[:, :-1][supervised])
        loss = F.cross_entropy(logits.float(), targets[supervised], reduction="sum")
        return loss, supervised.sum()


# ---------------------------------------------------------------------------------------------------------------
# Dev/test evaluation: generate, parse, ground, score


def predict_documents(model, tokenizer, prompt: Prompt, labels: LabelSet, docs: list[Document], batch_size: int,
                      max_new_tokens: int) -> tuple[list[Document], dict[str, Any]]:
    """Predictions for ``docs`` by the predictor ``nerft predict`` uses (windows, answer bounds, repetition guard,
    shared-prompt cache), so a dev score is what the saved run will score; with parse failures (by the trained
    format's own parser, as ``nerft evaluate`` counts them), hallucinations and unfinished answers."""
    from .predict import TransformersPredictor

    predictor = TransformersPredictor.from_model(model, tokenizer, labels, prompt, batch_size=batch_size,
                                                 max_new_tokens=max_new_tokens, keep_raw=True)
    entities = predictor.predict([d.text for d in docs])
    counts = {"parse_failures": 0, "hallucinated": 0, "unfinished": predictor.stats["unfinished"]}
    for doc, raws in zip(docs, predictor.last_raw, strict=True):
        for raw in raws:  # one per window
            reading = read_answer(doc.text, raw, prompt.output_format, labels)
            counts["parse_failures"] += not reading.parse_ok
            counts["hallucinated"] += reading.hallucinated
    return [Document(d.id, d.text, ents) for d, ents in zip(docs, entities, strict=True)], counts


def score(gold: list[Document], pred: list[Document], counts: dict[str, Any]) -> dict[str, Any]:
    """Strict micro P/R/F1 in percent (exact span and label), plus parse failures and hallucinations."""
    from .metrics import score_documents

    strict = score_documents(gold, pred, parse_failures=counts["parse_failures"],
                             hallucinations=counts["hallucinated"])["strict"]["micro"]
    return {"precision": round(100 * strict["precision"], 2), "recall": round(100 * strict["recall"], 2),
            "f1": round(100 * strict["f1"], 2), **counts, "docs": len(gold)}


def _sample_rows(docs: list[Document], preds: list[Document], n: int, labels: LabelSet) -> list[dict[str, str]]:
    def show(d: Document) -> str:
        return "; ".join(f"{labels.name_of(e.label)}:{e.text}[{e.start},{e.end})" for e in d.entities) or "-"

    return [{"text": g.text, "gold": show(g), "predicted": show(p)} for g, p in list(zip(docs, preds, strict=True))[:n]]


# ---------------------------------------------------------------------------------------------------------------
# Checkpoints and the run directory


def save_adapter(peft_model, path: Path) -> None:
    with atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)


def _rng_state() -> dict[str, Any]:
    import numpy as np

    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    import numpy as np

    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(run_dir: Path, peft_model, optimizer, scheduler, state: dict[str, Any], keep: int) -> Path:
    """RUN/checkpoints/step-N: adapter, optimizer, scheduler, RNG states and the position in the data."""
    path = run_dir / "checkpoints" / f"step-{state['step']}"
    with atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp / "adapter", safe_serialization=True)
        torch.save({"optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(), **state},
                   tmp / "trainer_state.pt")
    for old in list_checkpoints(run_dir)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def list_checkpoints(run_dir: Path) -> list[Path]:
    found = [p for p in (run_dir / "checkpoints").glob("step-*") if (p / "trainer_state.pt").is_file()]
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path:
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise NerftError(f"--resume latest: no checkpoint under {run_dir / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / "trainer_state.pt").is_file():
        raise NerftError(f"--resume {resume}: not a checkpoint folder (no trainer_state.pt)")
    return path


def _plot_curves(log: list[dict[str, Any]], path: Path) -> None:
    """curves.png: training loss and dev F1 against optimizer steps."""
    loss = [(r["step"], r["loss"]) for r in log if "loss" in r]
    f1 = [(r["step"], r["dev/f1"]) for r in log if "dev/f1" in r]
    try:
        from .plots import line_curves
    except ImportError:
        line_curves = None
    if line_curves is not None:
        try:
            line_curves({"train loss": loss, "dev F1": f1}, path, "nerft train")
            return
        except Exception:  # noqa: BLE001 - plotting must never fail a finished run
            pass
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for ax, series, title in ((axes[0], loss, "train loss"), (axes[1], f1, "dev strict F1")):
        if series:
            ax.plot(*zip(*series, strict=True), marker="." if len(series) < 30 else None)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=100)
    plt.close(fig)


def limit_empty_documents(docs: list[Document], share: float, seed: int) -> list[Document]:
    """Drop a seeded random subset of the entity-less documents so that they make up at most ``share`` of the
    result; the order of the documents kept is unchanged."""
    if not 0.0 <= share < 1.0:
        raise NerftError(f"data.empty_share must be in [0, 1), got {share}")
    empty = [i for i, d in enumerate(docs) if not d.entities]
    with_entities = len(docs) - len(empty)
    allowed = int(share * with_entities / (1.0 - share))
    if len(empty) <= allowed:
        return docs
    keep = set(random.Random(seed).sample(empty, allowed))
    return [d for i, d in enumerate(docs) if d.entities or i in keep]


def _resolve_labels(cfg: DataConfig, train_docs: list[Document]) -> LabelSet:
    if cfg.labels:
        return load_label_set(cfg.labels)
    beside = Path(cfg.train).parent / "labels.json"  # type: ignore[arg-type]
    if beside.is_file():
        return LabelSet.from_file(beside)
    return LabelSet.infer(e.label for d in train_docs for e in d.entities)


class TrainingClock:
    """Seconds spent training: wall time since ``start()`` less the ``paused()`` blocks (evaluation, checkpoints),
    plus ``before``, what earlier sessions of a resumed run spent."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.start()

    def start(self) -> None:
        self._since, self._paused = time.perf_counter(), 0.0

    def seconds(self) -> float:
        return self.before + time.perf_counter() - self._since - self._paused

    @contextlib.contextmanager
    def paused(self):
        started = time.perf_counter()
        try:
            yield
        finally:
            self._paused += time.perf_counter() - started


def _schedule(optimizer, cfg: OptimConfig, total_steps: int, spent: Callable[[], float] | None = None):
    """The learning-rate schedule. With ``cfg.max_minutes`` the schedule's clock is the share of the budget that
    ``spent()`` (training seconds so far) says is used, or the share of ``total_steps`` done if that is larger."""
    from transformers import get_scheduler

    if cfg.max_minutes is None:
        warmup = cfg.warmup_steps if cfg.warmup_steps is not None else math.ceil(cfg.warmup_ratio * total_steps)
        name = {"constant": "constant_with_warmup"}.get(cfg.schedule, cfg.schedule)
        return get_scheduler(name, optimizer, num_warmup_steps=warmup, num_training_steps=total_steps)
    if spent is None:
        raise ValueError("a time-budget schedule needs the training clock")
    budget_s = cfg.max_minutes * 60

    def factor(step: int) -> float:
        if cfg.warmup_steps is not None and step < cfg.warmup_steps:
            return step / max(cfg.warmup_steps, 1)
        done = min(1.0, max(spent() / budget_s, step / max(total_steps, 1)))
        warm = 0.0 if cfg.warmup_steps is not None else cfg.warmup_ratio
        if done < warm:
            return done / warm
        rest = (done - warm) / max(1.0 - warm, 1e-9)
        if cfg.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * rest))
        return 1.0 - rest if cfg.schedule == "linear" else 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ---------------------------------------------------------------------------------------------------------------
# Training


def train(cfg: TrainConfig) -> Path:
    """Fine-tune, evaluate and write the run directory; returns its path."""
    from accelerate import Accelerator
    from accelerate.utils import DistributedType
    from peft import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from tqdm.auto import tqdm

    # --- setup -----------------------------------------------------------------------------------------------
    if not cfg.data.train:
        raise NerftError("no training data: pass --train FILE.jsonl (or data.train in the config)")
    run_dir = Path(cfg.output.dir)
    resume_from = find_resume_checkpoint(cfg.resume, run_dir) if cfg.resume else None
    if resume_from is None and (run_dir / "nerft.json").exists() and not cfg.output.overwrite:
        raise NerftError(f"{run_dir} already holds a run; pass --resume latest, --output.overwrite, or another --out")
    on_cpu = resolve_device(cfg.model).type == "cpu"
    accelerator = Accelerator(cpu=on_cpu)
    main = accelerator.is_main_process
    world = accelerator.num_processes
    torch.manual_seed(cfg.optim.seed)
    random.seed(cfg.optim.seed)

    train_docs = read_documents(cfg.data.train)
    if cfg.data.max_examples:
        train_docs = train_docs[:cfg.data.max_examples]
    if cfg.data.empty_share is not None:
        before = len(train_docs)
        train_docs = limit_empty_documents(train_docs, cfg.data.empty_share, cfg.optim.seed)
        print(f"nerft train: data.empty_share {cfg.data.empty_share}: kept {len(train_docs)} of {before} documents")
    dev_docs = read_documents(cfg.data.dev)[:cfg.eval.dev_docs] if cfg.data.dev else []
    labels = _resolve_labels(cfg.data, train_docs)
    fmt = get_format(cfg.data.output_format)
    prompt = build_prompt(labels, cfg.data.output_format, cfg.data.prompt_style, cfg.data.describe_labels)
    if cfg.data.system_prompt:
        prompt = dataclasses.replace(prompt, system=cfg.data.system_prompt)
    tokenizer = load_tokenizer(cfg.model)
    end_id = answer_end_id(tokenizer, cfg.data.end_token)
    data = encode_documents(train_docs, tokenizer, prompt, fmt, labels, end_id, cfg.data.max_length,
                            cfg.data.overlong)
    if data.overlong and main:
        action = {"drop": "dropped", "keep": "kept whole", "truncate": "truncated"}[cfg.data.overlong]
        warnings.warn(f"{data.overlong} of {len(train_docs)} training examples exceed data.max_length "
                      f"{cfg.data.max_length} tokens and were {action} (data.overlong)", stacklevel=2)
    if not data.examples:
        raise NerftError(f"no training examples left (all {len(train_docs)} exceed max_length {cfg.data.max_length})")

    model = add_lora(load_model(cfg.model, accelerator.device), cfg.lora, cfg.optim.gradient_checkpointing)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay)

    lengths = [len(ex.input_ids) for ex in data.examples]
    batches_per_epoch = len(epoch_batches(lengths, cfg.optim.batch_size, 0, 0, False)) // world * world
    if batches_per_epoch == 0:
        raise NerftError(f"{len(data.examples)} examples make fewer batches than the {world} processes")
    steps_per_epoch = math.ceil(batches_per_epoch // world / cfg.optim.grad_accum)
    total_steps = cfg.optim.max_steps or steps_per_epoch * cfg.optim.epochs
    budget_s = cfg.optim.max_minutes * 60 if cfg.optim.max_minutes is not None else None
    clock = TrainingClock()
    scheduler = _schedule(optimizer, cfg.optim, total_steps, clock.seconds)
    # The scheduler stays outside accelerator.prepare: prepared, it steps once per process and optimizer step
    # (it expects steps counted over the whole dataset), which would run the schedule `world` times too fast.
    loss_module, optimizer = accelerator.prepare(SupervisedLoss(model), optimizer)
    pad_id = pad_token_id(tokenizer)

    step, best_f1, best_step = 0, -1.0, None
    best_state: dict[str, torch.Tensor] | None = None
    if resume_from is not None:
        state = torch.load(resume_from / "trainer_state.pt", weights_only=False)
        set_peft_model_state_dict(model, load_file(str(resume_from / "adapter" / "adapter_model.safetensors")))
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        _set_rng_state(state["rng"])
        step, best_f1, best_step = state["step"], state["best_f1"], state["best_step"]
        clock.before = state.get("train_seconds", 0.0)
        if (run_dir / "adapter").is_dir() and best_step is not None:
            best_state = load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))

    if main:
        if resume_from is None:  # a fresh run: stale checkpoints of an overwritten one must not be resumed later
            shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
        run_dir.mkdir(parents=True, exist_ok=True)
        RunInfo(cfg.model.name_or_path, labels, prompt, max_length=cfg.data.max_length,
                extra={"end_token": cfg.data.end_token, "max_new_tokens": cfg.eval.max_new_tokens}).save(run_dir)
        tokenizer.save_pretrained(tokenizer_dir(run_dir))
        with atomic_write(run_dir / "config.yaml") as f:
            yaml.safe_dump(cfglib.to_dict(cfg), f, allow_unicode=True, sort_keys=False)
    tracker = Tracker(cfg.tracking, run_dir, cfglib.to_dict(cfg), resume=resume_from is not None, enabled=main)
    if main:
        print(f"nerft train: {len(data.examples)} examples ({data.overlong} over max_length "
              f"{cfg.data.max_length}, {cfg.data.overlong}), {data.supervised_tokens} supervised tokens; "
              f"{sum(p.numel() for p in trainable):,} trainable parameters; {total_steps} steps of "
              f"{cfg.optim.batch_size}x{cfg.optim.grad_accum}x{world} examples on {accelerator.device}")

    def evaluate(docs: list[Document], split: str) -> dict[str, Any]:
        with clock.paused():  # evaluation does not spend the training budget
            preds, counts = predict_documents(model, tokenizer, prompt, labels, docs, cfg.eval.batch_size,
                                              cfg.eval.max_new_tokens)
            scores = score(docs, preds, counts)
            tracker.log({f"{split}/{k}": v for k, v in scores.items()}, step)
            tracker.log_samples(_sample_rows(docs, preds, cfg.eval.samples, labels), step)
        return scores

    def checkpoint(state_step: int, epoch: int, step_in_epoch: int, rng: dict[str, Any]) -> None:
        with clock.paused():
            if main:
                save_checkpoint(run_dir, model, optimizer, scheduler,
                                {"step": state_step, "epoch": epoch, "step_in_epoch": step_in_epoch, "rng": rng,
                                 "best_f1": best_f1, "best_step": best_step, "world_size": world,
                                 "train_seconds": clock.seconds()},
                                cfg.output.keep_checkpoints)
            accelerator.wait_for_everyone()

    def budget_spent() -> bool:
        if budget_s is None:
            return False
        over = torch.tensor(float(clock.seconds() >= budget_s), device=accelerator.device)
        return bool(accelerator.gather(over[None]).max().item())  # every process stops at the same step

    def after_dev_eval(scores: dict[str, Any]) -> None:
        nonlocal best_f1, best_step, best_state
        if scores["f1"] > best_f1:
            best_f1, best_step = scores["f1"], step
            best_state = {k: v.detach().clone() for k, v in get_peft_model_state_dict(model).items()}
            save_adapter(model, adapter_dir(run_dir))

    start_scores = None
    if main and dev_docs and cfg.eval.at_start and resume_from is None:
        start_scores = evaluate(dev_docs, "dev")
        print(f"dev before training: F1 {start_scores['f1']:.2f} (P {start_scores['precision']:.2f}, "
              f"R {start_scores['recall']:.2f})")

    # --- loop ------------------------------------------------------------------------------------------------
    start_step = step
    epoch, step_in_epoch = divmod(step, steps_per_epoch)
    if resume_from is not None:
        epoch, step_in_epoch = state["epoch"], state["step_in_epoch"]
    session_limit = start_step + cfg.stop_after_steps if cfg.stop_after_steps else None
    progress = tqdm(total=total_steps, initial=step, disable=not main, desc="train", dynamic_ncols=True)
    tokens_seen, t0, window_loss, window_tokens = 0, time.perf_counter(), 0.0, 0
    clock.start()
    out_of_time = False
    interrupted = False
    rng_at_step_start = _rng_state()
    model.train()
    try:
        while step < total_steps and not out_of_time and (session_limit is None or step < session_limit):
            batches = epoch_batches(lengths, cfg.optim.batch_size, cfg.optim.seed, epoch, cfg.data.group_by_length)
            mine = batches[:batches_per_epoch][accelerator.process_index::world]
            steps = [mine[s:s + cfg.optim.grad_accum] for s in range(0, len(mine), cfg.optim.grad_accum)]
            for micro_batches in steps[step_in_epoch:]:
                collated = [collate([data.examples[i] for i in b], pad_id, cfg.data.packing) for b in micro_batches]
                n_supervised = sum(int((c["labels"][:, 1:] != IGNORE).sum()) for c in collated)
                for j, batch in enumerate(collated):
                    last = j == len(collated) - 1
                    if accelerator.distributed_type == DistributedType.DEEPSPEED:
                        accelerator.gradient_state._set_sync_gradients(last)
                    sync = contextlib.nullcontext() if last else accelerator.no_sync(loss_module)
                    with sync:
                        loss_sum, _ = loss_module(**{k: v.to(accelerator.device) for k, v in batch.items()})
                        accelerator.backward(loss_sum / max(n_supervised, 1))
                    window_loss += loss_sum.item()
                    tokens_seen += int(batch["input_ids"].numel() if cfg.data.packing
                                       else batch["attention_mask"].sum())
                window_tokens += n_supervised
                if cfg.optim.max_grad_norm > 0:
                    accelerator.clip_grad_norm_(trainable, cfg.optim.max_grad_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                step += 1
                step_in_epoch += 1
                rng_at_step_start = _rng_state()  # of the next step: what a Ctrl-C from here on goes back to
                elapsed = time.perf_counter() - t0
                progress.update(1)
                postfix = {"loss": f"{window_loss / max(window_tokens, 1):.4f}",
                           "tok_s": f"{tokens_seen * world / max(elapsed, 1e-9):.0f}"}
                if budget_s is not None:
                    postfix["budget_left"] = f"{max(budget_s - clock.seconds(), 0) / 60:.1f}min"
                progress.set_postfix(**postfix)
                if step % cfg.tracking.log_every == 0 or step == total_steps:
                    record = {"loss": round(window_loss / max(window_tokens, 1), 5), "lr": scheduler.get_last_lr()[0],
                              "tokens_per_s": round(tokens_seen * world / max(elapsed, 1e-9), 1), "epoch": epoch}
                    tracker.log(record, step)
                    window_loss, window_tokens = 0.0, 0
                out_of_time = budget_spent()
                end_of_epoch = step_in_epoch == len(steps)
                due = step % cfg.eval.every == 0 if cfg.eval.every else end_of_epoch
                if dev_docs and (due or step == total_steps or out_of_time):
                    if main:
                        scores = evaluate(dev_docs, "dev")
                        after_dev_eval(scores)
                        progress.write(f"step {step}: dev F1 {scores['f1']:.2f} (best {best_f1:.2f} at {best_step})")
                    accelerator.wait_for_everyone()
                if cfg.output.save_every and step % cfg.output.save_every == 0:
                    checkpoint(step, epoch, step_in_epoch, _rng_state())
                if out_of_time or step >= total_steps or (session_limit is not None and step >= session_limit):
                    break
            else:
                epoch, step_in_epoch = epoch + 1, 0
    except KeyboardInterrupt:
        interrupted = True
        optimizer.zero_grad(set_to_none=True)
        _set_rng_state(rng_at_step_start)  # the unfinished step is replayed on --resume
    progress.close()

    # --- save ------------------------------------------------------------------------------------------------
    done = step >= total_steps or out_of_time
    if not done:
        checkpoint(step, epoch, step_in_epoch, _rng_state())
        if main:
            print(f"nerft train: stopped at step {step}/{total_steps}; checkpoint saved, continue with "
                  f"--resume latest --out {run_dir}")
    metrics: dict[str, Any] = {
        "train": {"steps": step, "total_steps": total_steps, "examples": len(data.examples),
                  "overlong": data.overlong, "overlong_action": cfg.data.overlong,
                  "supervised_tokens": data.supervised_tokens, "seconds": round(time.perf_counter() - t0, 1),
                  "finished": done, "world_size": world, "train_seconds": round(clock.seconds(), 3),
                  "stopped_by": ("time budget" if out_of_time else "steps" if step >= total_steps
                                 else "interrupted")},
    }
    if main:
        if best_state is not None:
            set_peft_model_state_dict(model, best_state)
            metrics["dev"] = {"best_f1": best_f1, "best_step": best_step}
            if start_scores is not None:
                metrics["dev"]["f1_before_training"] = start_scores["f1"]
        else:
            save_adapter(model, adapter_dir(run_dir))
        if done and cfg.data.test:
            test_scores = evaluate(read_documents(cfg.data.test), "test")
            metrics["test"] = test_scores
            print(f"test: F1 {test_scores['f1']:.2f} (P {test_scores['precision']:.2f}, "
                  f"R {test_scores['recall']:.2f})")
        write_json(run_dir / "metrics.json", metrics)
        _plot_curves(_read_log(run_dir), run_dir / "curves.png")
    tracker.finish()
    accelerator.wait_for_everyone()
    if interrupted:
        raise KeyboardInterrupt
    return run_dir


def _read_log(run_dir: Path) -> list[dict[str, Any]]:
    import json

    path = run_dir / "train_log.jsonl"
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------------------------
# CLI


SHORTCUTS = {  # flag -> dotted config key
    "--train": "data.train", "--dev": "data.dev", "--test": "data.test", "--labels": "data.labels",
    "--model": "model.name_or_path", "--out": "output.dir", "--max-steps": "optim.max_steps",
    "--epochs": "optim.epochs", "--lr": "optim.lr",
}


def register(subparsers, name: str = "train", summary: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary)
    parser.add_argument("--config", metavar="FILE.yaml", help="a recipe, e.g. configs/qwen2.5-0.5b-cpu.yaml")
    for flag, dest in SHORTCUTS.items():
        parser.add_argument(flag, dest=dest, default=argparse.SUPPRESS, metavar=flag.strip("-").upper(),
                            help=f"same as --{dest.replace('_', '-')}")
    parser.add_argument("--resume", nargs="?", const="latest", default=argparse.SUPPRESS,
                        help="continue from the latest checkpoint of --out, or from the given checkpoint folder")
    cfglib.add_config_arguments(parser, TrainConfig, skip={"resume"})
    parser.set_defaults(func=_run)
    return parser


def _run(args: argparse.Namespace) -> int:
    cfg = cfglib.build_config(TrainConfig, args, config_path=args.config)
    run_dir = train(cfg)
    if os.environ.get("RANK", "0") == "0":  # once, not once per process under a launcher
        print(f"nerft train: run directory {run_dir}")
    return 0


__all__ = ["TrainConfig", "DataConfig", "OptimConfig", "EvalConfig", "OutputConfig", "train", "register",
           "encode_document", "encode_documents", "epoch_batches", "collate", "SupervisedLoss"]
