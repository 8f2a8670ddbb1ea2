"""Tokens per document for each output format (the answer the model generates, plus <|im_end|>), over every
CCFBDCI document, with the real Qwen2 tokenizer; and the system-prompt tokens of each prompt.

Generated tokens are the cost of prediction (one decoder step each) and part of the training cost; prompt tokens
are paid on every training example and every prediction. Besides the three shipped formats this measures a few
compact variants, and checks that each still reads back (parse + ground) to the gold spans.

    python -m experiments.format_tokens           # writes experiments/results/format_tokens.{json,md}
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.common import CCFBDCI, QWEN2_TOKENIZER, markdown_table, require, write_results
from nerft.formats import FORMATS, get_format
from nerft.grounding import ground_mentions
from nerft.labels import LabelSet, ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import Entity

from . import RESULTS

Render = Callable[[list[Entity], LabelSet], str]


def _lines(template: str) -> Render:
    """A compact variant: one line per entity from ``template`` (fields: name, code, text)."""
    def render(entities: list[Entity], labels: LabelSet) -> str:
        return "\n".join(template.format(name=labels.name_of(e.label), code=e.label, text=e.text)
                         for e in sorted(entities))
    return render


def variants() -> dict[str, Render]:
    shipped: dict[str, Render] = {name: fmt.render for name, fmt in FORMATS.items()}
    return {
        **shipped,
        "compact/codes (GPE:南京)": _lines("{code}:{text}"),
        "compact/full-width colon (地理实体：南京)": _lines("{name}：{text}"),
        "compact/space (地理实体 南京)": _lines("{name} {text}"),  # not readable by the parser: for comparison
    }


def load_ccfbdci(path: Path) -> list[tuple[str, list[Entity]]]:
    docs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            docs.append((d["text"], [Entity(e["start_idx"], e["end_idx"], e["entity_label"], e["entity_text"])
                                     for e in d["entities"]]))
    return docs


def count_tokens(tokenizer, texts: list[str]) -> list[int]:
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=CCFBDCI)
    parser.add_argument("--tokenizer", type=Path, default=QWEN2_TOKENIZER)
    args = parser.parse_args()
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(require(args.tokenizer, "the shared Qwen2 tokenizer"))
    docs = load_ccfbdci(require(args.data, "ccfbdci.jsonl"))
    labels = ccfbdci_labels()
    with_entities = [i for i, (_, gold) in enumerate(docs) if gold]
    text_tokens = count_tokens(tokenizer, [t for t, _ in docs])

    rows, answers_json = [], {}
    for name, render in variants().items():
        started = time.perf_counter()
        answers = [render(gold, labels) for _, gold in docs]
        tokens = [n + 1 for n in count_tokens(tokenizer, answers)]  # + <|im_end|>
        exact = sum(
            {e.span for e in ground_mentions(text, get_format("compact").parse(a, labels).mentions).entities}
            == {e.span for e in gold}
            for (text, gold), a in zip(docs, answers, strict=True)
        )
        row = {
            "format": name,
            "tokens/doc": statistics.fmean(tokens),
            "tokens/doc (with entities)": statistics.fmean(tokens[i] for i in with_entities),
            "tokens/entity": (sum(tokens[i] - 1 for i in with_entities)
                              / sum(len(docs[i][1]) for i in with_entities)),
            "max": max(tokens),
            "total": sum(tokens),
            "reads back exactly": f"{exact}/{len(docs)}",
            "seconds": time.perf_counter() - started,
        }
        rows.append(row)
        answers_json[name] = row

    prompt_rows = []
    for style, fmt in [("nerft", "compact"), ("nerft", "jsonl"), ("nerft", "tutorial"), ("tutorial", "tutorial")]:
        for describe in (False, True) if style == "nerft" else (False,):
            prompt = build_prompt(labels, fmt, style, describe_labels=describe)
            overhead = tokenizer.apply_chat_template(prompt.messages(""), tokenize=True, add_generation_prompt=True)
            if isinstance(overhead, dict):  # transformers may return a BatchEncoding
                overhead = overhead["input_ids"]
            prompt_rows.append({
                "prompt": f"{style}/{fmt}" + (" +descriptions" if describe else ""),
                "system tokens": len(tokenizer(prompt.system, add_special_tokens=False)["input_ids"]),
                "template tokens (empty text)": len(overhead),
                "system": prompt.system,
            })

    payload = {
        "documents": len(docs),
        "documents_with_entities": len(with_entities),
        "entities": sum(len(g) for _, g in docs),
        "text_tokens_per_doc": statistics.fmean(text_tokens),
        "formats": answers_json,
        "prompts": prompt_rows,
    }
    md = (
        f"# Output-format tokens on CCFBDCI ({len(docs)} documents, {len(with_entities)} with entities; "
        f"mean text {payload['text_tokens_per_doc']:.1f} tokens)\n\n"
        "Answer tokens + <|im_end|> per document (Qwen2 tokenizer). `reads back exactly`: documents whose answer "
        "parses and grounds to exactly the gold spans (the rest annotate a later occurrence of a repeated "
        "mention only).\n\n"
        + markdown_table(rows, ["format", "tokens/doc", "tokens/doc (with entities)", "tokens/entity", "max",
                                "total", "reads back exactly"])
        + "\n\n## System prompts\n\n"
        + markdown_table(prompt_rows, ["prompt", "system tokens", "template tokens (empty text)"])
        + "\n"
    )
    write_results("format_tokens", payload, md, RESULTS)
    print(md)


if __name__ == "__main__":
    main()
