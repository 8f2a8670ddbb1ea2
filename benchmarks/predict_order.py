"""``nerft predict --input``'s document order: input order chunk by chunk (before) vs longest first (now).

    python -m benchmarks.predict_order --model RUN --docs 320

One process: the predictor is opened as ``nerft predict`` opens it (the run's decoding, ``--autocast`` auto), 16
documents are predicted untimed (warm-up), then ``predict.files.predict_file`` predicts the first ``--docs`` test
documents into a fresh file once per order, in turns (``--rounds``, the order of the pair swapped each round so a
drifting machine favours neither), with the chunk size ``nerft predict`` uses (4 x the batch size). Reports
documents/s per order, their ratio, and the share of documents with the same entities under both orders (batches
of other lengths pad differently, which may move a bf16 score across a threshold).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from .common import RESULTS, WORK, log, markdown_table, prepare_ccfbdci, read_jsonl, write_results

ORDERS = {"input order": False, "longest first": True}


def measure(args: argparse.Namespace) -> dict:
    from nerft.inference.loading import open_predictor
    from nerft.inference.location import decoding_options
    from nerft.inference.options import LoadOptions
    from nerft.jsonl import write_jsonl
    from nerft.predict.files import predict_file

    load = LoadOptions(model=args.model, device="cpu", autocast=args.autocast)
    options = decoding_options(load)
    predictor = open_predictor(load, options)
    test = args.test or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "test.jsonl")
    docs = read_jsonl(test, args.docs)
    work = Path(args.work) / "predict_order"
    inputs = work / "input.jsonl"
    write_jsonl(inputs, [{"id": str(k), "text": d["text"]} for k, d in enumerate(docs)])
    predictor.predict_detailed([d["text"] for d in docs[:16]])
    seconds: dict[str, list[float]] = {name: [] for name in ORDERS}
    answers: dict[str, list] = {}
    for r in range(args.rounds):
        for name in (list(ORDERS) if r % 2 == 0 else list(ORDERS)[::-1]):
            out = work / f"{name.replace(' ', '-')}.jsonl"
            out.unlink(missing_ok=True)
            start = time.perf_counter()
            predict_file(predictor, inputs, out, chunk_size=options.batch_size * 4, progress=False,
                         longest_first=ORDERS[name])
            seconds[name].append(time.perf_counter() - start)
            rows = [json.loads(line) for line in out.read_text("utf-8").splitlines()]
            assert [r["id"] for r in rows] == [str(k) for k in range(len(docs))], "the file is not in input order"
            answers[name] = [sorted((e["start"], e["end"], e["label"]) for e in r["entities"]) for r in rows]
    best = {name: min(s) for name, s in seconds.items()}
    rows = [{"order": name, "docs": len(docs), "seconds": round(s, 2), "docs_per_s": round(len(docs) / s, 2)}
            for name, s in best.items()]
    (before, now), (slow, fast) = (answers[name] for name in ORDERS), best.values()
    return {"rows": rows, "batch_size": options.batch_size, "chunk_size": options.batch_size * 4,
            "rounds": args.rounds, "speedup": round(slow / fast, 2),
            "same_entities": round(sum(a == b for a, b in zip(before, now, strict=True)) / len(docs), 3)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--autocast", default="auto", choices=["auto", "bf16", "off"])
    parser.add_argument("--docs", type=int, default=320)
    parser.add_argument("--rounds", type=int, default=1, help="timed runs of each order (the fastest is reported)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--test", default=None, help="test documents (default: CCFBDCI's seeded test split)")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    result = measure(args)
    log(f"longest first: {result['speedup']}x the documents/s of input order")
    md = (f"## nerft predict --input: input order vs longest first ({result['rows'][0]['docs']} documents, batch "
          f"{result['batch_size']}, chunks of {result['chunk_size']}, fastest of {result['rounds']})\n\n"
          + markdown_table(result["rows"], ["order", "docs", "seconds", "docs_per_s"])
          + f"\n\nLongest first: **{result['speedup']}x** the documents/s of input order; same entities in "
          f"{result['same_entities']:.1%} of the documents. Both files end in input order.\n")
    write_results("predict_order", {"benchmark": "predict_order", **result}, md, Path(args.results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
