"""A tiny tagging run (task: tag) for tests: texts a tiny random Qwen2 learns to tag exactly in seconds."""

from __future__ import annotations

import random
from pathlib import Path

from nerft.schema import Document, Entity

FILLER = ["今天", "天气", "不错", "我们", "去了", "在", "工作", "𝒳", "e\u0301", "😀", "a\u0301b", "，", "。", "的"]


def synthetic_docs(n: int, seed: int) -> list[Document]:
    """Texts of filler pieces with 北京 (GPE) and 张三 (PER) among them: a task a tiny model learns exactly, so
    the tests can ask for exact entities. Fillers include a character outside the BMP (a surrogate pair in
    UTF-16), combining accents and an emoji, next to the mentions."""
    rng = random.Random(seed)
    docs = []
    for k in range(n):
        text, entities = "", []
        for _ in range(rng.randint(3, 9)):
            piece = rng.choice(FILLER + ["北京", "张三"])
            if piece in ("北京", "张三"):
                entities.append(Entity(len(text), len(text) + 2, "GPE" if piece == "北京" else "PER", piece))
            text += piece
        docs.append(Document(f"s{seed}-{k}", text, entities))
    return docs


def build_tagger_run(root: Path, tiny_tokenizer) -> tuple[Path, Path]:
    """(the run, its data folder): 60 steps on 96 synthetic documents, dev F1 ~100."""
    from nerft_helpers import save_base_model, tiny_recipe

    from nerft import config as cfglib
    from nerft.fileio import write_json
    from nerft.jsonl import write_jsonl
    from nerft.labels import ccfbdci_labels
    from nerft.train import TrainConfig, train

    base = save_base_model(root / "base", tiny_tokenizer)
    data = root / "data"
    write_jsonl(data / "train.jsonl", synthetic_docs(96, 0))
    write_jsonl(data / "dev.jsonl", synthetic_docs(12, 1))
    write_json(data / "labels.json", ccfbdci_labels().to_dict())
    splits = {"train": str(data / "train.jsonl"), "dev": str(data / "dev.jsonl"), "labels": str(data / "labels.json")}
    recipe = tiny_recipe(base, splits, root / "run", optim__max_steps=60, optim__lr=1e-2, optim__batch_size=8,
                         optim__grad_accum=1, eval__every=30, eval__dev_docs=12, lora__r=8, lora__alpha=16,
                         lora__dropout=0.0, data__empty_share=None)
    recipe["task"] = "tag"
    recipe["tagger"] = {"max_length": 24}
    return train(cfglib.from_dict(TrainConfig, recipe)), data
