"""Shared by the benchmark smoke tests: a hand-written mini dataset and a tiny model that answers at once."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_tiny_qwen2


def has_crfsuite() -> bool:
    """python-crfsuite is a benchmark extra (pip install -e .[bench]); the CRF tests skip without it."""
    try:
        import pycrfsuite  # noqa: F401
    except ImportError:
        return False
    return True


def mini_doc(doc_id: str, text: str, spans: list[tuple[int, int, str]]) -> dict:
    return {"id": doc_id, "text": text, "entities": [{"start": s, "end": e, "label": lab, "text": text[s:e]}
                                                     for s, e, lab in spans]}


def write_mini_data(out: Path, docs: list[tuple]) -> Path:
    """train (all), dev (first 2) and test (first 3) JSONL splits plus labels.json, in ``out``."""
    from nerft.labels import ccfbdci_labels

    rows = [mini_doc(*d) for d in docs]
    for split, part in (("train", rows), ("dev", rows[:2]), ("test", rows[:3])):
        (out / f"{split}.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in part),
                                            encoding="utf-8")
    (out / "labels.json").write_text(json.dumps(ccfbdci_labels().to_dict(), ensure_ascii=False), encoding="utf-8")
    return out


def save_instant_model(out: Path, tokenizer) -> Path:
    """A tiny Qwen2 folder with ``tokenizer``; its generation config ends every answer at once (fast,
    deterministic)."""
    model = make_tiny_qwen2(tokenizer=tokenizer)
    im_end, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    model.generation_config.eos_token_id = [im_end, pad]
    model.generation_config.pad_token_id = pad
    model.generation_config.sequence_bias = [[[im_end], 100.0]]
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def f1_follows(row: dict) -> bool:
    """A result row's F1 is the harmonic mean of its precision and recall (all in percent, rounded to 2 decimals)."""
    p, r = row["precision"], row["recall"]
    return abs(row["f1"] - (2 * p * r / (p + r) if p + r else 0.0)) <= 0.02
