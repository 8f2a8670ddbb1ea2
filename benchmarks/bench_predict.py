"""B2 inference throughput: the tutorial's predict() vs nerft's predictor on the same test texts.

    python -m benchmarks.bench_predict                                   # base model, 64 texts
    python -m benchmarks.bench_predict --adapter benchmarks/work/b3/tutorial/final   # a tutorial-trained adapter
    python -m benchmarks.bench_predict --nerft-run runs/nerft-0.5b      # adds nerft's own fine-tuned model

Rows, each in a fresh process, model loading not timed:
- ``tutorial``: the tutorial's predict(), one text at a time, max_new_tokens 512, its prompt;
- ``nerft``: nerft's ``TransformersPredictor`` on the same weights with the same (tutorial) prompt, default
  options (batched, answer length bounded by the text, stop at end of turn, repetition guard, prefix cache);
- ``nerft+constrained``: the same with constrained decoding;
- ``nerft-run`` (with --nerft-run): nerft's own fine-tuned run directory with its own prompt and format.

Entity sets come from the same parser and grounding for every row; "agree" is the share of texts whose entity
set (span + label) equals the tutorial row's. Strict F1 against gold comes from ``nerft evaluate``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from nerft.jsonl import write_jsonl

from .common import (
    DEFAULT_MODEL,
    RESULTS,
    WORK,
    labels_beside,
    log,
    markdown_table,
    nerft_evaluate,
    prepare_ccfbdci,
    read_jsonl,
    require,
    run_in_child,
    write_results,
)
from .scoring import answer_in_chunks, tutorial_answers


def run_tutorial(model: str, adapter: str | None, test_file: str, limit: int, out_file: str) -> dict:
    docs, answers, generated, entities, seconds = tutorial_answers(test_file, limit, model, adapter, "tutorial")
    rows = [{"id": d["id"], "text": d["text"], "output": a, "generated_tokens": n,
             "entities": [e.to_dict() for e in ents]}
            for d, a, n, ents in zip(docs, answers, generated, entities, strict=True)]
    write_jsonl(out_file, rows)
    return {"texts": len(docs), "seconds": seconds, "generated_tokens": sum(generated),
            "hit_512": sum(n >= 512 for n in generated)}


def run_nerft(model: str | None, adapter: str | None, run_dir: str | None, test_file: str, limit: int,
              out_file: str, options: dict, autocast: str = "auto") -> dict:
    from nerft.inference.loading import load_predictor

    docs = read_jsonl(test_file, limit)
    if run_dir:
        predictor = load_predictor(run_dir, device="cpu", autocast=autocast, **options)
    else:
        predictor = load_predictor(base=model, adapter=adapter, device="cpu", autocast=autocast, **options)
    chunk = max(1, predictor.options.batch_size * 4)
    results, raw, seconds = answer_in_chunks(predictor, [d["text"] for d in docs], chunk, predictor.name)
    tok = predictor.tokenizer
    # the tokens of each raw answer + its stop token (the predictor does not hand back its token ids)
    generated = [len(tok.encode(a, add_special_tokens=False)) + 1 for a in raw]
    rows = [{"id": d["id"], "text": d["text"], "output": a, "generated_tokens": n,
             "entities": [e.to_dict() for e in ents]}
            for d, a, n, ents in zip(docs, raw, generated, results, strict=True)]
    write_jsonl(out_file, rows)
    return {"texts": len(docs), "seconds": seconds, "generated_tokens": sum(generated),
            "prompt": predictor.prompt.style + "/" + predictor.prompt.output_format}


def entity_sets(path: str | Path) -> list[set[tuple]]:
    return [{(e["start"], e["end"], e["label"]) for e in row["entities"]} for row in read_jsonl(path)]


def strict_scores(gold: str, pred: str, out_dir: Path, labels: str) -> dict:
    """``nerft evaluate`` on the entities of a predictions file."""
    m = nerft_evaluate(gold, pred, out_dir, source="entities", labels=labels)
    micro = m["strict"]["micro"]
    return {**{k: round(100 * micro[k], 2) for k in ("precision", "recall", "f1")},
            "parse_failures": m.get("parse_failures"), "hallucinations": m.get("hallucinations")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="base model folder (default: the 0.5B)")
    parser.add_argument("--adapter", default=None, help="a peft adapter trained with the tutorial's recipe "
                                                        "(default: none, the base model)")
    parser.add_argument("--nerft-run", default=None, help="also time nerft's own run directory")
    parser.add_argument("--test", default=None, help="test.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--texts", type=int, default=64, help="first N test documents")
    parser.add_argument("--batch-size", type=int, default=None, help="nerft's generation batch (default: nerft "
                        "predict's, PredictOptions.batch_size)")
    parser.add_argument("--rows", default="tutorial,nerft,nerft+constrained")
    parser.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"],
                        help="nerft's rows: bf16 autocast as nerft predict --autocast (default auto: where this CPU "
                             "runs bf16 matmuls faster; the tutorial's row is always its own fp32 loop)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-name", default="b2_predict")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK), help="scratch folder (splits, adapters, predictions)")
    args = parser.parse_args(argv)
    if args.batch_size is None:
        from nerft.inference.options import PredictOptions

        args.batch_size = PredictOptions().batch_size

    model = str(require(Path(args.model), "build it with ../shared/bin/get-qwen2.5-coder-0.5b"))
    test_file = args.test or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "test.jsonl")
    work = Path(args.work) / "b2"
    gold = work / "gold.jsonl"
    write_jsonl(gold, read_jsonl(test_file, args.texts))
    rows_wanted = [r.strip() for r in args.rows.split(",") if r.strip()]
    if args.nerft_run:
        rows_wanted.append("nerft-run")
    runs: dict[str, dict] = {}
    start = time.perf_counter()
    for n, name in enumerate(rows_wanted, 1):
        log(f"row {n}/{len(rows_wanted)}: {name} (elapsed {time.perf_counter() - start:.0f}s)")
        out_file = str(work / f"{name}.jsonl")
        common = {"test_file": str(gold), "limit": args.texts, "out_file": out_file}
        if name == "tutorial":
            r = run_in_child(run_tutorial, threads=args.threads, model=model, adapter=args.adapter, **common)
        else:
            options = {"batch_size": args.batch_size, "constrained": name.endswith("+constrained")}
            r = run_in_child(run_nerft, threads=args.threads, model=model, adapter=args.adapter,
                             run_dir=args.nerft_run if name == "nerft-run" else None, options=options,
                             autocast=args.autocast, **common)
        r["out_file"] = out_file
        runs[name] = r
        log(f"  {name}: {r['texts']} texts in {r['seconds']:.1f}s")

    base_sets = entity_sets(runs["tutorial"]["out_file"]) if "tutorial" in runs else None
    base_answers = [row["output"] for row in read_jsonl(runs["tutorial"]["out_file"])] if "tutorial" in runs else None
    table = []
    for name, r in runs.items():
        row = {"row": name, "texts": r["texts"], "seconds": round(r["seconds"], 1),
               "texts_per_s": round(r["texts"] / r["seconds"], 3),
               "s_per_text": round(r["seconds"] / r["texts"], 2),
               "gen_tokens_per_text": round(r["generated_tokens"] / r["texts"], 1),
               "peak_rss_gb": r["peak_rss_gb"]}
        if "tutorial" in runs:
            row["speedup"] = round(runs["tutorial"]["seconds"] / r["seconds"], 2)
            sets = entity_sets(r["out_file"])
            row["agree_entities"] = round(sum(a == b for a, b in zip(sets, base_sets, strict=True)) / len(sets), 3)
            answers = [x["output"] for x in read_jsonl(r["out_file"])]
            row["same_raw_answer"] = round(sum(a.strip() == b.strip() for a, b in zip(answers, base_answers,
                                                                                       strict=True)) / len(answers), 3)
        row.update(strict_scores(str(gold), r["out_file"], work / f"eval-{name}", labels_beside(test_file)))
        table.append(row)
    which = f"adapter {args.adapter}" if args.adapter else "the base model (no fine-tuning)"
    payload = {"benchmark": "B2 inference throughput", "model": model, "adapter": args.adapter,
               "nerft_run": args.nerft_run, "autocast": args.autocast, "test_file": test_file, "texts": args.texts,
               "batch_size": args.batch_size, "rows": table, "runs": runs}
    cols = ["row", "texts", "seconds", "texts_per_s", "s_per_text", "speedup", "gen_tokens_per_text",
            "agree_entities", "same_raw_answer", "f1", "precision", "recall", "parse_failures", "hallucinations",
            "peak_rss_gb"]
    md = (f"## B2 inference throughput ({Path(model).name}, {which}; first {args.texts} documents of test.jsonl; "
          f"fp32 weights, CPU; nerft's rows with --autocast {args.autocast})\n\n" + markdown_table(table, cols)
          + "\n\nagree_entities: share of texts whose entity set (span + label, same parser and grounding) equals the "
          "tutorial row's. gen_tokens_per_text: tutorial exact (incl. its stop token); nerft rows: tokens of the "
          f"raw answer + 1. nerft batch size {args.batch_size}. F1 is strict micro from `nerft evaluate` on these "
          f"{args.texts} documents only (noisy).")
    if runs.get("tutorial", {}).get("hit_512"):
        md += f" The tutorial's predict() ran to max_new_tokens=512 on {runs['tutorial']['hit_512']} texts."
    write_results(args.out_name, payload, md, Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
