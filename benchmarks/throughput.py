"""Throughput of every CPU engine on the seeded CCFBDCI test split, against the machine's roofline (issue 26).

    python -m benchmarks.throughput --model runs/qwen2.5-0.5b-cpu            # every engine x batch 8, 32
    python -m benchmarks.throughput --model RUN --engines transformers-fp32,llamacpp-q8_0,ct2-int8@32+64 --batch-sizes 32

One row per engine x batch size, each in a fresh process (peak RSS is that engine's): the model is loaded (timed
apart, ``load_s``), then every test document is predicted in input order through nerft's ``Predictor`` (prompts,
windows, answer reading, grounding, scores: end to end but for file I/O), free decoding with the run's thresholds
and lexicon (the engines cannot constrain; ``transformers-constrained`` is today's CPU recipe decoding). Engines:

- ``transformers-fp32``, ``transformers-autocast`` (fp32 weights, bf16 matmuls in the transformer blocks under
  torch.autocast, as ``nerft predict --autocast bf16`` runs them), ``transformers-bf16`` (bf16 weights),
  ``transformers-constrained`` (fp32, constrained decoding: the CPU recipe's run decoding before autocast),
  ``transformers-constrained_autocast`` (the same under autocast: ``nerft predict --model RUN`` on a CPU where bf16
  pays);
- ``llamacpp-q8_0``, ``llamacpp-q4_k_m``, ``llamacpp-f16`` (``nerft export --output-format gguf``; one window at a time,
  the batch size does not apply);
- ``ct2-int8``, ``ct2-int8_float32``, ``ct2-bfloat16``, ``ct2-float32`` (``nerft export --output-format ct2``);
- ``tagger-fp32``, ``tagger-autocast``, ``tagger-bf16``: the tagging run ``--tagger RUN`` (``task: tag``), one
  forward pass a window and no answer (its FLOPs: 2 x parameters of the layers it keeps x positions).

Exports are written once under WORK/throughput/exports. Each row is kept in WORK/throughput/rows.json as soon as it
finishes: a rerun skips the rows done (``--fresh`` starts over). F1 is strict micro from ``nerft evaluate``;
``same_entities`` is the share of documents whose entity set (span + label) equals the first row's.

Roofline: fp32, bf16 and int8 matmul peak (torch; int8 for the int8 and llama.cpp rows) and memory bandwidth (a
large array copy) measured in the same run;
per document the FLOPs (2 x parameters x tokens: prefill of the prompt after the cached system prompt, decode of
the answer with the lm_head at every step, the lm_head once per prefill) and the weight bytes a decode step reads
(shared by the rows decoding together). ``roofline_share``: the time that bound allows divided by the time taken.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .common import (
    RESULTS,
    WORK,
    labels_beside,
    log,
    markdown_table,
    prepare_ccfbdci,
    read_jsonl,
    run_in_child,
    write_results,
)

ENGINES = ("transformers-fp32", "transformers-autocast", "transformers-bf16", "transformers-constrained",
           "transformers-constrained_autocast",
           "llamacpp-q8_0", "llamacpp-q4_k_m", "llamacpp-f16", "ct2-int8", "ct2-int8_float32", "ct2-bfloat16",
           "ct2-float32", "tagger-fp32", "tagger-autocast", "tagger-bf16")
DEFAULT_ENGINES = ("transformers-constrained,transformers-constrained_autocast,transformers-autocast,llamacpp-q8_0,"
                   "ct2-int8")
# bytes a weight takes in each engine (q8_0: 34 bytes per 32 weights; q4_k_m: ~4.85 bits a weight)
WEIGHT_BYTES = {"fp32": 4.0, "autocast": 4.0, "bf16": 2.0, "constrained": 4.0, "constrained_autocast": 4.0,
                "f16": 2.0, "q8_0": 34 / 32,
                "q4_k_m": 4.85 / 8, "int8": 1.0, "int8_float32": 1.0, "bfloat16": 2.0, "float32": 4.0}
BF16_COMPUTE = {"autocast", "constrained_autocast", "bf16", "bfloat16"}
INT8_COMPUTE = {"int8", "q8_0", "q4_k_m"}  # llama.cpp's quantized dot products run on int8 too


def engine_parts(engine: str) -> tuple[str, str]:
    if engine not in ENGINES:
        raise SystemExit(f"unknown engine {engine!r}; choose among {', '.join(ENGINES)}")
    backend, variant = engine.split("-", 1)
    return backend, variant


def exported_folder(model: str, engine: str, exports: str) -> dict:
    """``export_engine`` as a child process's result."""
    return {"folder": export_engine(model, engine, Path(exports))}


def export_engine(model: str, engine: str, exports: Path) -> str:
    """The folder the engine loads: the run itself for transformers and the tagger, else an export made once."""
    backend, variant = engine_parts(engine)
    if backend in ("transformers", "tagger"):
        return model
    out = exports / engine
    if not out.exists():
        from nerft.export import export_for_engine
        from nerft.inference.options import LoadOptions

        log(f"exporting {engine} to {out}")
        start = time.perf_counter()
        export_for_engine(LoadOptions(model=model), out, "gguf" if backend == "llamacpp" else "ct2", variant)
        log(f"  exported in {time.perf_counter() - start:.0f}s")
    return str(out)


def run_engine(folder: str, engine: str, batch_size: int, engine_threads: int, test_file: str, out_file: str,
               limit: int | None) -> dict:
    """In a child process: load, predict every document, write the predictions; times and token counts."""
    from nerft.generation import prompt_ids, shared_prefix_ids
    from nerft.jsonl import write_jsonl

    backend, variant = engine_parts(engine)
    docs = read_jsonl(test_file, limit)
    texts = [d["text"] for d in docs]
    kwargs: dict = {"batch_size": batch_size, "constrained": variant.startswith("constrained")}
    if backend in ("transformers", "tagger"):  # autocast as nerft predict's --autocast does it
        kwargs.update(device="cpu", dtype="bf16" if variant == "bf16" else "fp32",
                      autocast="bf16" if "autocast" in variant else "off")
    start = time.perf_counter()
    predictor = open_engine(folder, "transformers" if backend == "tagger" else backend, kwargs, engine_threads)
    load_s = time.perf_counter() - start
    start = time.perf_counter()
    predictions = predictor.predict_detailed(texts)
    seconds = time.perf_counter() - start
    if backend == "tagger":  # one forward pass over each window's positions; nothing generated
        windows = sum(len(predictor.windows(t)) for t in texts)
        positions = sum(predictor.count_positions(t[w.start:w.end]) for t in texts for w in predictor.windows(t))
        write_jsonl(out_file, [{"id": d["id"], "text": d["text"], "entities": [e.to_dict() for e in p.entities]}
                               for d, p in zip(docs, predictions, strict=True)])
        return {"docs": len(docs), "windows": windows, "load_s": load_s, "seconds": seconds,
                "prompt_tokens": positions, "answer_tokens": 0, "unfinished": 0}
    tok, prompt = predictor.tokenizer, predictor.prompt
    prefix = len(shared_prefix_ids(tok, prompt))
    prompt_tokens = sum(len(prompt_ids(tok, prompt, t)) - prefix for t in texts)
    answer_tokens = sum(len(tok.encode(a, add_special_tokens=False)) + 1 for p in predictions for a in p.answers)
    windows = sum(len(p.answers) for p in predictions)
    write_jsonl(out_file, [{"id": d["id"], "text": d["text"], "entities": [e.to_dict() for e in p.entities]}
                           for d, p in zip(docs, predictions, strict=True)])
    return {"docs": len(docs), "windows": windows, "load_s": load_s, "seconds": seconds,
            "prompt_tokens": prompt_tokens, "answer_tokens": answer_tokens, "unfinished": predictor.stats.unfinished}


def open_engine(folder: str, backend: str, kwargs: dict, threads: int):
    from nerft.inference.loading import open_predictor
    from nerft.inference.location import decoding_options
    from nerft.inference.options import LoadOptions

    load = LoadOptions(model=folder, backend=backend, device=kwargs.pop("device", "cpu"),  # type: ignore[arg-type]
                       dtype=kwargs.pop("dtype", "auto"), autocast=kwargs.pop("autocast", "off"))
    load.llamacpp.threads = load.ct2.threads = threads
    return open_predictor(load, decoding_options(load, kwargs))


def memory_bandwidth(gigabytes: float = 0.5, seconds: float = 2.0) -> float:
    """Bytes/s of a large array copy (read + write), best of repeats."""
    import numpy as np

    a = np.ones(int(gigabytes * 1e9 / 8))
    b = np.empty_like(a)
    best, end, runs = float("inf"), time.perf_counter() + seconds, 0
    while time.perf_counter() < end or runs < 3:
        t = time.perf_counter()
        np.copyto(b, a)
        best, runs = min(best, time.perf_counter() - t), runs + 1
    return 2 * a.nbytes / best


def machine_limits(threads: int, seconds: float = 2.0) -> dict:
    from .matmul_peak import matmul_flops

    return {"fp32_flops": matmul_flops(2048, "float32", threads, seconds)["flops"],
            "bf16_flops": matmul_flops(2048, "bfloat16", threads, seconds)["flops"],
            "int8_ops": matmul_flops(2048, "int8", threads, seconds)["flops"],
            "bandwidth": memory_bandwidth(seconds=seconds)}


def model_sizes(model: str) -> dict:
    """Parameters per token of the transformer blocks and of the lm_head, from the run's base config (a tagger:
    the layers it keeps, and no lm_head)."""
    from nerft.inference.location import locate_model
    from nerft.inference.options import LoadOptions
    from nerft.modeling import resolve_source

    where = locate_model(LoadOptions(model=model))
    source, _ = resolve_source(where.weights)
    c = json.loads((Path(source) / "config.json").read_text(encoding="utf-8"))
    h, inter, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    tagger = where.info.tagger if where.info is not None and where.info.kind == "tagger" else None
    if tagger is not None:
        layers, vocab = min(layers, tagger.get("layers") or layers), 0
    kv = h // c["num_attention_heads"] * c.get("num_key_value_heads", c["num_attention_heads"])
    return {"block_params": layers * (2 * h * h + 2 * h * kv + 3 * h * inter), "head_params": h * vocab}


def roofline(r: dict, engine: str, batch: int, sizes: dict, limits: dict) -> dict:
    """FLOPs and bytes one document costs, and the share of the machine's bound the row reached."""
    _, variant = engine_parts(engine)
    docs, block, head = r["docs"], sizes["block_params"], sizes["head_params"]
    prefill = 2 * block * r["prompt_tokens"] / docs
    decode = 2 * block * r["answer_tokens"] / docs
    lm_head = 2 * head * (r["answer_tokens"] + r["windows"]) / docs
    rows_together = 1 if engine.startswith("llamacpp") else batch
    weight_bytes = (block + head) * WEIGHT_BYTES[variant]
    bytes_per_doc = weight_bytes * r["answer_tokens"] / docs / rows_together
    peak = (limits["bf16_flops"] if variant in BF16_COMPUTE else
            limits.get("int8_ops", limits["fp32_flops"]) if variant in INT8_COMPUTE else limits["fp32_flops"])
    bound = max((prefill + decode + lm_head) / peak, bytes_per_doc / limits["bandwidth"])
    return {"gflop_prefill": _sig(prefill / 1e9), "gflop_decode": _sig(decode / 1e9),
            "gflop_lm_head": _sig(lm_head / 1e9), "decode_gb": _sig(bytes_per_doc / 1e9),
            "roofline_share": _sig(bound / (r["seconds"] / docs))}


def _sig(x: float) -> float:
    return float(f"{x:.3g}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="the trained run directory (configs/qwen2.5-0.5b-cpu.yaml)")
    parser.add_argument("--tagger", help="a tagging run (configs/qwen2.5-0.5b-cpu-tagger.yaml) for the tagger-* "
                                         "engines, measured beside the generative ones")
    parser.add_argument("--test", default=None, help="test.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--engines", default=DEFAULT_ENGINES,
                        help=f"comma-separated among {', '.join(ENGINES)}; ENGINE@8+64: that engine at batch sizes "
                             "8 and 64 instead of --batch-sizes")
    parser.add_argument("--batch-sizes", default="8,32")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--limit", type=int, default=None, help="first N documents (default: all)")
    parser.add_argument("--fresh", action="store_true", help="forget the rows already measured")
    parser.add_argument("--limits-seconds", type=float, default=2.0, help="time per machine-limit measurement")
    parser.add_argument("--out-name", default="throughput")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batch_sizes.split(",")]
    plan = []  # (engine, batch sizes): ENGINE@B1+B2 gives an engine batch sizes of its own
    for spec in (e.strip() for e in args.engines.split(",") if e.strip()):
        engine, _, own = spec.partition("@")
        engine_parts(engine)
        plan.append((engine, [int(b) for b in own.split("+")] if own else batches))
    test_file = args.test or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "test.jsonl")
    work = Path(args.work) / "throughput"
    work.mkdir(parents=True, exist_ok=True)
    state_file = work / "rows.json"
    key = {"model": str(Path(args.model).resolve()), "test": test_file, "limit": args.limit,
           **({"tagger": str(Path(args.tagger).resolve())} if args.tagger else {})}
    state = json.loads(state_file.read_text()) if state_file.is_file() and not args.fresh else {}
    if state.get("key") != key:
        state = {"key": key, "rows": {}}
    if "limits" not in state:
        log("measuring the machine: matmul peak (fp32, bf16) and memory bandwidth")
        state["limits"] = machine_limits(args.threads, args.limits_seconds)
    sizes = model_sizes(args.model)
    for engine, engine_batches in plan:
        for batch in ([1] if engine.startswith("llamacpp") else engine_batches):
            name = f"{engine}/b{batch}"
            if name in state["rows"]:
                log(f"{name}: done before, kept")
                continue
            # in a child of its own: an export loads the whole model, and a parent grown that large would hand its
            # peak RSS to every child forked after it (Linux keeps ru_maxrss across fork and exec)
            if engine.startswith("tagger") and not args.tagger:
                raise SystemExit(f"{engine} needs --tagger RUN (a tagging run)")
            model = args.tagger if engine.startswith("tagger") else args.model
            folder = run_in_child(exported_folder, threads=args.threads, model=model, engine=engine,
                                  exports=str(work / "exports"))["folder"]
            out_file = str(work / f"{engine}-b{batch}.jsonl")
            log(f"{name}: predicting")
            r = run_in_child(run_engine, threads=args.threads, folder=folder, engine=engine, batch_size=batch,
                             engine_threads=args.threads, test_file=test_file, out_file=out_file, limit=args.limit)
            r.update(engine=engine, batch=batch, out_file=out_file, sizes=model_sizes(model))
            state["rows"][name] = r
            state_file.write_text(json.dumps(state, indent=1))
            log(f"  {r['docs']} docs in {r['seconds']:.1f}s ({r['docs'] / r['seconds']:.2f} docs/s)")
            write_table(state, sizes, test_file, args, work)
    write_table(state, sizes, test_file, args, work)
    return 0


def write_table(state: dict, sizes: dict, test_file: str, args, work: Path) -> None:
    from .bench_predict import entity_sets, strict_scores

    rows, reference = [], None
    for name, r in state["rows"].items():
        sets = entity_sets(r["out_file"])
        reference = reference or sets
        row = {"engine": r["engine"], "batch": r["batch"], "docs": r["docs"],
               "docs_per_s": round(r["docs"] / r["seconds"], 2), "load_s": round(r["load_s"], 2),
               "same_entities": round(sum(a == b for a, b in zip(sets, reference, strict=True)) / len(sets), 4),
               "peak_rss_gb": r["peak_rss_gb"],
               **roofline(r, r["engine"], r["batch"], r.get("sizes", sizes), state["limits"])}
        gold = test_file if args.limit is None else _gold_subset(test_file, args.limit, work)
        row["f1"] = strict_scores(gold, r["out_file"], work / f"eval-{name.replace('/', '-')}",
                                  labels_beside(test_file))["f1"]
        rows.append(row)
    limits = state["limits"]
    cols = ["engine", "batch", "docs", "docs_per_s", "load_s", "f1", "same_entities", "peak_rss_gb",
            "gflop_prefill", "gflop_decode", "gflop_lm_head", "decode_gb", "roofline_share"]
    md = (f"## Throughput by engine ({Path(args.model).name}; {rows[0]['docs'] if rows else 0} test documents; "
          f"{args.threads} threads)\n\n" + markdown_table(rows, cols)
          + f"\n\nMachine limits measured in this run: fp32 matmul {limits['fp32_flops'] / 1e9:.1f} GFLOP/s, bf16 "
          f"{limits['bf16_flops'] / 1e9:.1f} GFLOP/s, int8 {limits.get('int8_ops', 0) / 1e9:.1f} GOP/s, "
          f"memory bandwidth {limits['bandwidth'] / 1e9:.1f} GB/s. "
          "docs_per_s: predicting only (load_s apart); same_entities: share of documents with the first row's "
          "entity set; gflop_*/decode_gb: per document; roofline_share: the time the FLOP or bandwidth bound "
          "allows over the time taken.")
    write_results(args.out_name, {"benchmark": "throughput", **state, "sizes": sizes, "table": rows}, md,
                  Path(args.results))


def _gold_subset(test_file: str, limit: int, work: Path) -> str:
    from nerft.jsonl import write_jsonl

    path = work / f"gold-{limit}.jsonl"
    if not path.is_file():
        write_jsonl(path, read_jsonl(test_file, limit))
    return str(path)


if __name__ == "__main__":
    sys.exit(main())
