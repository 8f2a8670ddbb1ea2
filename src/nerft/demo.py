"""``nerft demo``: the whole pipeline offline in a few minutes on a CPU, with nothing downloaded.

prepare -> train -> evaluate -> predict on a generated Chinese NER corpus (resources/demo_corpus.py), with a tiny
randomly initialised Qwen2 and a character-level ChatML tokenizer built on the spot (resources/demo_tokenizer.py).
The model is tiny and starts from random weights, so this shows the mechanics and that training works, not what a
pretrained LLM reaches. ``configs/demo.yaml`` holds the same training recipe for ``nerft train``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import config as cfglib
from .config import opt
from .fileio import write_json
from .formats import FORMATS, TUTORIAL_NONE
from .jsonl import read_documents, write_jsonl
from .labels import ccfbdci_labels
from .prompts import build_prompt
from .resources.demo_corpus import generate_corpus
from .resources.demo_tokenizer import build_char_tokenizer
from .schema import Document

DEMO_SYSTEM_PROMPT = "抽取实体，每行输出“类型:实体”。"


@dataclass
class DemoConfig:
    out: str = opt("demo_out", "folder for the data, the tiny base model, the run and the predictions",
                   aliases=("--output",))
    docs: int = opt(600, "documents to generate")
    steps: int = opt(1000, "optimizer steps")
    eval_every: int = opt(250, "dev evaluation every N steps")
    dev_docs: int = opt(60, "dev documents scored during training")
    hidden_size: int = opt(128, "width of the tiny Qwen2")
    layers: int = opt(2, "layers of the tiny Qwen2")
    seed: int = opt(0, "seed of the corpus, the model and training")


def train_recipe(base_model: str, data_dir: str, run_dir: str, steps: int = 1000, eval_every: int = 250,
                 dev_docs: int = 60, seed: int = 0) -> dict:
    """The demo's training config as a mapping (configs/demo.yaml holds the same values)."""
    return {
        "model": {"name_or_path": base_model, "dtype": "fp32", "device": "cpu"},
        # A random model has nothing to adapt. Its random frozen embeddings are what stalls LoRA alone (the loss
        # stays near 4.5), so the demo also trains the embeddings and the output layer (modules_to_save).
        "lora": {"r": 32, "alpha": 64, "dropout": 0.0, "modules_to_save": ["embed_tokens", "lm_head"]},
        # Every prompt token is paid on every example: a short system prompt makes the demo ~30% faster.
        "data": {"train": f"{data_dir}/train.jsonl", "dev": f"{data_dir}/dev.jsonl", "test": f"{data_dir}/test.jsonl",
                 "labels": f"{data_dir}/labels.json", "output_format": "compact", "max_length": 256,
                 "system_prompt": DEMO_SYSTEM_PROMPT},
        # A constant rate after warmup learns more in the demo's few steps than a decay (loss 0.36 vs 0.59).
        "optim": {"batch_size": 16, "grad_accum": 1, "max_steps": steps, "lr": 3e-3, "warmup_steps": 10,
                  "schedule": "constant", "seed": seed},
        "eval": {"every": eval_every, "dev_docs": dev_docs, "batch_size": 32, "max_new_tokens": 96, "samples": 3,
                 "at_start": True},
        "tracking": {"backend": "none", "log_every": 25},
        "output": {"dir": run_dir, "overwrite": True},
    }


def build_base_model(folder: Path, docs: list[Document], hidden_size: int, layers: int, seed: int) -> None:
    """Save a char-level tokenizer over everything the demo reads or writes and a random tiny Qwen2 to ``folder``."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    labels = ccfbdci_labels()
    texts = [d.text for d in docs] + [TUTORIAL_NONE, DEMO_SYSTEM_PROMPT]
    for fmt in FORMATS.values():
        texts.append(build_prompt(labels, fmt.name, "tutorial" if fmt.name == "tutorial" else "nerft").system)
        texts += [fmt.render(d.entities, labels) for d in docs[:50] if d.entities]
    tokenizer = build_char_tokenizer(texts)
    torch.manual_seed(seed)
    config = Qwen2Config(
        vocab_size=len(tokenizer), hidden_size=hidden_size, intermediate_size=2 * hidden_size,
        num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
        tie_word_embeddings=False, bos_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def _show(doc: Document) -> str:
    return "  ".join(f"{e.label}:{e.text}[{e.start},{e.end})" for e in doc.entities) or "(none)"


def _predict(run_dir: Path, texts: list[str], constrained: bool = False) -> list[Document]:
    """What ``nerft predict RUN [--constrained]`` does: load the run directory, predict entities with offsets."""
    from .inference.loading import load_predictor

    predictor = load_predictor(run_dir, device="cpu", batch_size=32, constrained=constrained)
    return [Document(str(i), t, list(ents)) for i, (t, ents) in enumerate(zip(texts, predictor.predict(texts), strict=True))]


def _score_test(run_dir: Path, test_docs: list[Document]) -> dict[str, dict]:
    """Strict micro P/R/F1 on the test split, free decoding vs constrained decoding (``--constrained``)."""
    from .metrics import score_documents

    out = {}
    for name, constrained in (("free", False), ("constrained", True)):
        pred = _predict(run_dir, [d.text for d in test_docs], constrained)
        out[name] = {k: round(100 * v, 2) for k, v in score_documents(test_docs, pred)["strict"]["micro"].items()}
    return out


def run_demo(cfg: DemoConfig) -> dict:
    """Run the demo; returns the dev F1 before/after, the test scores and the wall time."""
    from .prepare import PrepareConfig, prepare
    from .train import TrainConfig, train

    t0 = time.perf_counter()
    out = Path(cfg.out)
    corpus = generate_corpus(cfg.docs, seed=cfg.seed)
    write_jsonl(out / "corpus.jsonl", corpus)

    print(f"[1/4] prepare: {len(corpus)} generated documents -> {out / 'data'}")
    data_dir = out / "data"
    prepare(PrepareConfig(input=str(out / "corpus.jsonl"), out=str(data_dir), format="nerft", labels="ccfbdci",
                          seed=cfg.seed, dev=0.1, test=0.1, plot=False))
    build_base_model(out / "base-model", corpus, cfg.hidden_size, cfg.layers, cfg.seed)

    print(f"[2/4] train: tiny random Qwen2 ({cfg.layers} layers x {cfg.hidden_size}) with LoRA, {cfg.steps} steps")
    recipe = train_recipe(str(out / "base-model"), str(data_dir), str(out / "run"), cfg.steps, cfg.eval_every,
                          cfg.dev_docs, cfg.seed)
    run_dir = train(cfglib.from_dict(TrainConfig, recipe))

    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    before = metrics.get("dev", {}).get("f1_before_training", 0.0)
    after = metrics.get("dev", {}).get("best_f1", 0.0)
    test = metrics.get("test", {})
    answered = f", as answered {test['as_answered']['f1']:.1f}" if "as_answered" in test else ""
    print(f"[3/4] evaluate: dev strict F1 {before:.1f} before training -> {after:.1f} after; "
          f"test F1 {test.get('f1', 0.0):.1f} (P {test.get('precision', 0.0):.1f}, R {test.get('recall', 0.0):.1f}"
          f"{answered})")

    test_docs = read_documents(data_dir / "test.jsonl")
    decoding = _score_test(run_dir, test_docs)
    for name, m in decoding.items():
        print(f"      test, {name + ' decoding:':<22} F1 {m['f1']:.1f} (P {m['precision']:.1f}, R {m['recall']:.1f})")
    print("[4/4] predict (entities with character offsets):")
    samples = test_docs[:4]
    for gold, pred in zip(samples, _predict(run_dir, [d.text for d in samples]), strict=True):
        print(f"  {gold.text}\n    predicted: {_show(pred)}\n    gold:      {_show(gold)}")
    summary = {"dev_f1_before": before, "dev_f1_after": after, "test": test, "test_decoding": decoding,
               "seconds": round(time.perf_counter() - t0, 1), "run_dir": str(run_dir)}
    write_json(out / "demo_summary.json", summary)
    print(f"done in {summary['seconds']:.0f} s; try: nerft predict --model {run_dir} \"王伟昨天在北京参观了清华大学。\"")
    return summary


def register(subparsers: Any, name: str = "demo", summary: str = "") -> argparse.ArgumentParser:
    parser = subparsers.add_parser(name, help=summary, description=summary,
                                   formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    cfglib.add_config_arguments(parser, DemoConfig)
    parser.set_defaults(func=lambda args: run_demo(cfglib.build_config(DemoConfig, args)) and 0)
    return parser
