"""B1 training throughput: the tutorial's recipe vs nerft's CPU recipe on the same training examples.

    python -m benchmarks.bench_train                       # full: 64 examples, 1 epoch each, 2 alternating runs
    python -m benchmarks.bench_train --max-steps 2 --repeats 1   # a short harness check

Each run is one fresh process (peak RSS from ``getrusage`` in that process), runs alternate between the recipes
(tutorial, nerft, tutorial, nerft, ...) so that machine noise hits both. Both recipes read the same first N
documents of ``nerft prepare``'s train.jsonl (default seed) and train on them for one epoch (or --max-steps).

Reported per recipe: seconds per optimizer step (median), examples/s, supervised tokens/s, tokens processed
(padded: what the matmuls see, incl. prompt and padding), peak RSS, and executed FLOP/s against the measured
matmul peak. FLOPs are counted from the model shape and the token counts (see ``executed_flops``).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from .common import (
    DEFAULT_MODEL,
    REPO,
    RESULTS,
    WORK,
    log,
    markdown_table,
    prepare_ccfbdci,
    require,
    run_in_child,
    write_results,
)

NERFT_CPU_CONFIG = REPO / "configs" / "qwen2.5-0.5b-cpu.yaml"


# ---------------------------------------------------------------------------------------------------------------
# FLOP accounting


def linear_params(config: dict[str, Any]) -> dict[str, int]:
    """Weights of the matmuls of a Qwen2-style decoder: the body (attention + MLP, all layers) and the lm_head."""
    h, f, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    head_dim = config.get("head_dim") or h // config["num_attention_heads"]
    kv = config["num_key_value_heads"] * head_dim
    body = layers * (2 * h * h + 2 * h * kv + 3 * h * f)
    return {"body": body, "lm_head": config["vocab_size"] * h}


def executed_flops(params: dict[str, int], padded_tokens: int, head_positions: int, checkpointing: bool) -> float:
    """Matmul FLOPs a LoRA step executes (an estimate; attention score/value products and LoRA's rank-8 matmuls,
    < 3% at these lengths, are left out).

    Per token through the body: forward 2N, backward 2N (gradients w.r.t. the activations must still flow through
    every frozen weight; the frozen weights' own gradients are never computed), plus 2N when gradient
    checkpointing recomputes the forward. The lm_head costs 4 x V x H per position it is applied to: every
    position in HF's loss (the tutorial), only supervised positions in nerft's loss.
    """
    body = padded_tokens * params["body"] * (6 if checkpointing else 4)
    head = head_positions * params["lm_head"] * 4
    return float(body + head)


def six_n_bound(params: dict[str, int], padded_tokens: int) -> float:
    """The usual full-fine-tuning estimate, 6 x all matmul weights x tokens: an upper bound for LoRA."""
    return 6.0 * (params["body"] + params["lm_head"]) * padded_tokens


# ---------------------------------------------------------------------------------------------------------------
# One run of each recipe (executed in a fresh process)


def run_tutorial(model: str, train_file: str, limit: int, max_steps: int, out_dir: str, epochs: float = 1) -> dict:
    from .tutorial_baseline import train

    result = train(model, train_file, out_dir, limit=limit, max_steps=max_steps, num_train_epochs=epochs,
                   save=False, save_strategy="no")
    result["checkpointing"] = True
    result["head_positions"] = result["padded_tokens"]  # HF computes logits at every position
    return result


def nerft_train_config(model: str, train_file: str, limit: int, max_steps: int, out_dir: str,
                       config_path: str | None, epochs: int = 1, extra: dict[str, Any] | None = None):
    """nerft's recipe (the CPU YAML when it exists), pointed at the benchmark's data; no dev eval, no tracker."""
    from nerft.config import build_config
    from nerft.train import TrainConfig

    overrides: dict[str, Any] = {
        "model.name_or_path": model, "data.train": train_file, "data.dev": None, "data.test": None,
        "data.max_examples": limit, "optim.epochs": epochs, "optim.max_steps": max_steps if max_steps > 0 else None,
        "output.dir": out_dir, "output.overwrite": True, "output.save_every": 0,
        "tracking.backend": "none", "tracking.log_every": 1, **(extra or {}),
    }
    path = config_path if config_path and Path(config_path).is_file() else None
    return build_config(TrainConfig, overrides, config_path=path)


def run_nerft(model: str, train_file: str, limit: int | None, max_steps: int, out_dir: str, config_path: str | None,
              epochs: int = 1, extra: dict[str, Any] | None = None, max_seconds: float | None = None) -> dict:
    """nerft's ``train()`` through its Python API, logging every step: the per-step records of train_log.jsonl
    carry the token and example counts and the training clock, so nothing is instrumented from outside.

    ``max_seconds``: nerft's own wall-clock budget (``optim.max_minutes``): it stops at the first optimizer-step
    boundary after that much training, as the tutorial side stops through a Trainer callback."""
    from nerft.jsonl import read_records
    from nerft.train import train

    cfg = nerft_train_config(model, train_file, limit, max_steps, out_dir, config_path, epochs, extra)
    cfg.tracking.log_every = 1
    if max_seconds is not None:
        cfg.optim.max_minutes = max_seconds / 60
    t0 = time.perf_counter()
    run_dir = train(cfg)
    total_s = time.perf_counter() - t0
    metrics = json.loads((Path(run_dir) / "metrics.json").read_text(encoding="utf-8"))["train"]
    steps = [r for r in read_records(Path(run_dir) / "train_log.jsonl") if "loss" in r]
    clock = [0.0] + [r["train_seconds"] for r in steps]
    counts = {key: sum(r[key] for r in steps)
              for key in ("examples", "padded_tokens", "real_tokens", "supervised_tokens")}
    return {
        "recipe": "nerft",
        "stop": metrics["stopped_by"] if max_seconds is not None else "max_steps" if max_steps > 0
        else f"{epochs} epoch(s)",
        "run_dir": str(run_dir),
        "load_s": round(total_s - metrics["train_seconds"], 2),
        "train_s": round(metrics["train_seconds"], 2),
        "optimizer_steps": metrics["steps"],
        "step_s": [round(b - a, 3) for a, b in zip(clock[:-1], clock[1:], strict=True)],
        "examples_available": metrics["examples"],
        "truncated_examples": metrics.get("overlong", 0),
        **counts,
        "train_loss": steps[-1]["loss"] if steps else None,
        "losses": [{"step": r["step"], "loss": r["loss"]} for r in steps],
        "checkpointing": cfg.optim.gradient_checkpointing,
        "head_positions": counts["supervised_tokens"],  # SupervisedLoss applies the lm_head there only
        "config": str(cfg.data.output_format) + "/" + str(cfg.data.prompt_style)
                  + f", batch {cfg.optim.batch_size}x{cfg.optim.grad_accum}, packing {cfg.data.packing}",
    }


# ---------------------------------------------------------------------------------------------------------------
# Summary


def summarise(runs: list[dict], params: dict[str, int], peak_flops: float | None) -> dict:
    """Median over the repeats of one recipe."""
    def med(key: str) -> float:
        return statistics.median(float(r[key]) for r in runs)

    train_s = max(med("train_s"), 0.01)  # a one-step smoke run can report 0.0 s (metrics.json rounds to 0.1 s)
    steps = [s for r in runs for s in r["step_s"][1:]] or [s for r in runs for s in r["step_s"]]  # skip warm-up
    first = runs[0]
    flops = executed_flops(params, first["padded_tokens"], first["head_positions"], first["checkpointing"])
    row = {
        "recipe": first["recipe"],
        "runs": len(runs),
        "examples": first["examples"],
        "steps": first["optimizer_steps"],
        "s_per_step": round(statistics.median(steps), 2) if steps else None,
        "train_s": round(train_s, 1),
        "examples_per_s": round(first["examples"] / train_s, 3),
        "supervised_tok_per_s": round(first["supervised_tokens"] / train_s, 1),
        "padded_tokens": first["padded_tokens"],
        "real_tokens": first["real_tokens"],
        "supervised_tokens": first["supervised_tokens"],
        "supervised_share": round(first["supervised_tokens"] / max(first["padded_tokens"], 1), 3),
        "peak_rss_gb": round(max(r["peak_rss_gb"] for r in runs), 2),
        "executed_gflops": round(flops / train_s / 1e9, 1),
        "six_n_gflops": round(six_n_bound(params, first["padded_tokens"]) / train_s / 1e9, 1),
        "train_loss": first.get("train_loss"),
    }
    if peak_flops:
        row["pct_of_matmul_peak"] = round(100 * flops / train_s / peak_flops, 1)
    return row


def plot(rows: list[dict], path: Path) -> None:
    from .charts import bar_panels

    bar_panels([r["recipe"] for r in rows], {title: [r.get(key) or 0 for r in rows] for key, title in
                                             (("examples_per_s", "examples / s"), ("s_per_step", "s / optimizer step"),
                                              ("peak_rss_gb", "peak RSS (GB)"))}, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL), help="local HF model folder (default: the 0.5B)")
    parser.add_argument("--train", default=None, help="train.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--examples", type=int, default=64, help="first N training documents")
    parser.add_argument("--max-steps", type=int, default=-1, help="optimizer steps per run (default: one epoch)")
    parser.add_argument("--repeats", type=int, default=2, help="runs per recipe, alternating")
    parser.add_argument("--recipes", default="tutorial,nerft")
    parser.add_argument("--nerft-config", default=str(NERFT_CPU_CONFIG), help="nerft's recipe YAML")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak-gflops", type=float, default=None, help="skip measuring the matmul peak")
    parser.add_argument("--out-name", default="b1_train")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK), help="scratch folder (splits, adapters, predictions)")
    args = parser.parse_args(argv)

    model = str(require(Path(args.model), "build it with ../shared/bin/get-qwen2.5-coder-0.5b"))
    train_file = args.train or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "train.jsonl")
    config = json.loads((Path(model) / "config.json").read_text())
    params = linear_params(config)
    dtype = "float32"  # both recipes train in fp32 on CPU (bf16 matmuls are slower here)
    if args.peak_gflops:
        peak = args.peak_gflops * 1e9
    else:
        from .matmul_peak import matmul_flops

        peak = matmul_flops(2048, dtype, args.threads, 3.0)["flops"]
    log(f"matmul peak ({dtype}, {args.threads} threads): {peak / 1e9:.1f} GFLOP/s")
    nerft_config = args.nerft_config if Path(args.nerft_config).is_file() else None
    if nerft_config is None:
        log(f"{args.nerft_config} not found: nerft's built-in defaults stand in for its CPU recipe")

    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    runs: dict[str, list[dict]] = {r: [] for r in recipes}
    start = time.perf_counter()
    total = len(recipes) * args.repeats
    for i in range(args.repeats):
        for recipe in recipes:
            n = i * len(recipes) + recipes.index(recipe) + 1
            log(f"run {n}/{total}: {recipe} (elapsed {time.perf_counter() - start:.0f}s)")
            out_dir = str(Path(args.work) / "b1" / f"{recipe}-{i}")
            if recipe == "tutorial":
                epochs = 1
                r = run_in_child(run_tutorial, threads=args.threads, model=model, train_file=train_file,
                                 limit=args.examples, max_steps=args.max_steps, out_dir=out_dir, epochs=epochs)
            else:
                r = run_in_child(run_nerft, threads=args.threads, model=model, train_file=train_file,
                                 limit=args.examples, max_steps=args.max_steps, out_dir=out_dir,
                                 config_path=nerft_config)
            log(f"  {recipe}: {r['optimizer_steps']} steps, {r['examples']} examples in {r['train_s']}s, "
                f"peak RSS {r['peak_rss_gb']} GB")
            runs[recipe].append(r)
            if n < total:
                done = time.perf_counter() - start
                log(f"  ETA {done / n * (total - n):.0f}s")

    rows = [summarise(runs[r], params, peak) for r in recipes]
    ratio = None
    if {"tutorial", "nerft"} <= set(runs):
        t, n = rows[recipes.index("tutorial")], rows[recipes.index("nerft")]
        ratio = {
            "examples_per_s": round(n["examples_per_s"] / t["examples_per_s"], 2),
            "supervised_tok_per_s": round(n["supervised_tok_per_s"] / t["supervised_tok_per_s"], 2),
            "padded_tokens": round(n["padded_tokens"] / t["padded_tokens"], 3),
            "peak_rss": round(n["peak_rss_gb"] / t["peak_rss_gb"], 2),
        }
    payload = {
        "benchmark": "B1 training throughput",
        "model": model, "train_file": train_file, "examples": args.examples, "max_steps": args.max_steps,
        "repeats": args.repeats, "dtype": dtype, "nerft_config": nerft_config,
        "matmul_peak_flops": peak, "linear_params": params,
        "rows": rows, "ratio_nerft_over_tutorial": ratio, "runs": runs,
        "flops_formula": "executed = padded_tokens x N_body x (4, or 6 with gradient checkpointing) + "
                         "lm_head_positions x V x H x 4; 6N bound = 6 x (N_body + V x H) x padded_tokens",
    }
    cols = ["recipe", "runs", "examples", "steps", "s_per_step", "examples_per_s", "supervised_tok_per_s",
            "padded_tokens", "real_tokens", "supervised_tokens", "peak_rss_gb", "executed_gflops",
            "pct_of_matmul_peak", "six_n_gflops"]
    md = [f"## B1 training throughput ({Path(model).name}, first {args.examples} documents of train.jsonl, "
          f"{'one epoch' if args.max_steps <= 0 else f'{args.max_steps} optimizer steps'} per run, fp32)\n",
          markdown_table(rows, cols)]
    if ratio:
        md.append("\nnerft / tutorial: " + ", ".join(f"{k} x{v}" for k, v in ratio.items()))
    md.append(f"\nMatmul peak measured in this run: {peak / 1e9:.1f} GFLOP/s fp32 (2048x2048, {args.threads} "
              "threads). executed FLOPs = padded tokens x N_body x (4, 6 with gradient checkpointing) + lm_head "
              "positions x 4 x V x H (tutorial: every position; nerft: supervised positions only); "
              f"N_body = {params['body'] / 1e6:.0f}M, V x H = {params['lm_head'] / 1e6:.0f}M. The 6N column is "
              "the full-fine-tuning estimate over all matmul weights, an upper bound. s_per_step is the median "
              "after each run's first step.")
    results = Path(args.results)
    write_results(args.out_name, payload, "\n".join(md), results)
    plot(rows, results / f"{args.out_name}.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
