"""Test helpers shared by the training, demo and distributed tests: small documents, the project's own
character-level tokenizer, and a tiny random Qwen2 saved as a local model folder. (The byte-level BPE tokenizer
built like Qwen2's is the ``tiny_tokenizer`` fixture, see conftest.py.)"""

from __future__ import annotations

from pathlib import Path

from conftest import make_tiny_qwen2

from nerft.fileio import write_json
from nerft.jsonl import write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.resources.demo_corpus import generate_corpus
from nerft.resources.demo_tokenizer import build_char_tokenizer
from nerft.schema import Document


def sample_docs(n: int = 24, seed: int = 0) -> list[Document]:
    return generate_corpus(n, seed=seed)


def char_tokenizer(docs: list[Document] | None = None):
    labels = ccfbdci_labels()
    texts = [d.text for d in (docs or sample_docs(200))]
    texts += [build_prompt(labels, f).system for f in ("compact", "jsonl")]
    texts += [build_prompt(labels, "tutorial", "tutorial").system, "没有找到任何实体", '{"entity_text": ""}']
    return build_char_tokenizer(texts)


def save_base_model(folder: Path, tokenizer, seed: int = 0, arch: str = "qwen2") -> Path:
    """A tiny random Qwen2 (hidden 32, 2 layers; or ``arch`` qwen3, llama) sized to ``tokenizer``, saved with it."""
    make_tiny_qwen2(seed=seed, tokenizer=tokenizer, arch=arch).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_splits(folder: Path, n_train: int = 24, n_dev: int = 4) -> dict[str, str]:
    docs = sample_docs(n_train + n_dev)
    write_jsonl(folder / "train.jsonl", docs[:n_train])
    write_jsonl(folder / "dev.jsonl", docs[n_train:])
    write_json(folder / "labels.json", ccfbdci_labels().to_dict())
    return {"train": str(folder / "train.jsonl"), "dev": str(folder / "dev.jsonl"),
            "labels": str(folder / "labels.json")}


def tiny_recipe(base: Path, splits: dict[str, str], out: Path, **over) -> dict:
    """A TrainConfig mapping that trains the tiny model for a few steps, fast."""
    recipe = {
        "model": {"name_or_path": str(base), "device": "cpu"},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "data": {**splits, "max_length": 256},
        "optim": {"batch_size": 4, "grad_accum": 2, "max_steps": 4, "lr": 1e-3, "warmup_steps": 1},
        "eval": {"every": 2, "dev_docs": 4, "batch_size": 4, "max_new_tokens": 6, "samples": 2},
        "tracking": {"backend": "none", "log_every": 1},
        "output": {"dir": str(out)},
    }
    for dotted, value in over.items():
        section, key = dotted.split("__")
        recipe.setdefault(section, {})[key] = value
    return recipe
