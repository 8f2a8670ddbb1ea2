"""Training speed with and without ``data.shared_prefix``, for prompts of growing length (nerft's CPU recipe).

    python -m experiments.shared_prefix_speed                           # 4 prompts x off/on, 8 steps each
    python -m experiments.shared_prefix_speed --prompts short,defined+8 --max-steps 4
    python -m experiments.shared_prefix_speed --slice                   # no model needed: a 2-layer slice, 1 min
    python -m experiments.shared_prefix_speed --tokens                  # token counts only (the Qwen2 tokenizer)

Each run is nerft's ``train()`` in a fresh process (``bench_train.run_nerft``) on the first ``--examples`` training
documents, no dev evaluation; off and on alternate for each prompt. Prompts:
- ``short``: nerft's default 29-token system prompt (the CCFBDCI preset's labels, no descriptions, no examples);
- ``defined``: + label descriptions from ``configs/labels/ccfbdci-defined.yaml`` (LOC vs GPE);
- ``defined+4``, ``defined+8``: + 4 or 8 worked examples (``data.examples_in_prompt``).
Every run uses ``data.max_length`` ``--max-length`` (768), so the long prompts drop no example as over-long.
Reports s/optimizer step (median after the first), examples/s, tokens computed per step, the first step's loss
(the same with and without: LoRA dropout aside, it is the same computation) and the speed-up.

``--tokens``: no model: tokens per example of each prompt with the real Qwen2 tokenizer on the first ``--examples``
documents of the seeded-shuffled train split (or of ``--train``), the shared prefix, and the tokens a micro-batch of 8 computes per example with it.

``--slice``: no model, tokenizer or data: forward + backward of one micro-batch (8 rows of 26-33 own tokens, 10
supervised) through a 2-layer random slice of Qwen2.5-0.5B's shape (hidden 896, MLP 4,864, 14 heads, 2 KV heads,
vocabulary cut to 1,000, LoRA r 8 on the 7 projections), plain vs shared prefix, for the prefix lengths of the four
prompts with the real tokenizer (37, 113, 234, 379 tokens), alternating, median of 4 after a warm-up.
"""

from __future__ import annotations

import argparse
import statistics
import sys
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

from benchmarks.common import (
    DEFAULT_MODEL,
    REPO,
    WORK,
    log,
    markdown_table,
    prepare_ccfbdci,
    require,
    run_in_child,
    write_results,
)

from . import RESULTS

DEFINED = {"data.labels": str(REPO / "configs" / "labels" / "ccfbdci-defined.yaml"), "data.describe_labels": True}
PROMPTS: dict[str, dict[str, Any]] = {
    "short": {"data.labels": "ccfbdci", "data.describe_labels": False, "data.examples_in_prompt": 0},
    "defined": {**DEFINED, "data.examples_in_prompt": 0},
    "defined+4": {**DEFINED, "data.examples_in_prompt": 4},
    "defined+8": {**DEFINED, "data.examples_in_prompt": 8},
}


def one_run(args: argparse.Namespace, train_file: str, prompt: str, shared: bool) -> dict[str, Any]:
    from benchmarks.bench_train import run_nerft

    extra = {**PROMPTS[prompt], "data.shared_prefix": shared, "data.max_length": args.max_length,
             "output.save_every_minutes": None}
    config = args.nerft_config if Path(args.nerft_config).is_file() else None
    try:
        r = run_in_child(run_nerft, threads=args.threads, model=args.model, train_file=train_file,
                         limit=args.examples, max_steps=args.max_steps,
                         out_dir=str(Path(args.work) / "shared_prefix" / f"{prompt}-{shared}"), config_path=config,
                         extra=extra)
    except BrokenProcessPool:  # the kernel killed the run: on this machine, memory (see dmesg)
        log(f"{prompt}, shared_prefix {shared}: the training process was killed (out of memory)")
        return {"prompt": prompt, "shared_prefix": shared, "s_per_step": None, "note": "killed: out of memory"}
    steps = r["step_s"][1:] or r["step_s"]
    return {"prompt": prompt, "shared_prefix": shared, "steps": r["optimizer_steps"], "examples": r["examples"],
            "s_per_step": round(statistics.median(steps), 3),
            "examples_per_s": round(r["examples"] / max(r["train_s"], 1e-9), 3),
            "tokens_per_step": round(r["padded_tokens"] / max(r["optimizer_steps"], 1)),
            "first_loss": r["losses"][0]["loss"] if r["losses"] else None, "peak_rss_gb": r.get("peak_rss_gb")}


SLICE_PREFIXES = (37, 113, 234, 379)  # shared prefix tokens of short, defined, defined+4, defined+8 (Qwen2)


def slice_timings(threads: int, repeats: int = 5, hidden: int = 896, intermediate: int = 4864,
                  prefixes: tuple[int, ...] = SLICE_PREFIXES) -> list[dict[str, Any]]:
    """The ``--slice`` measurement (see the module docstring); smaller ``hidden``/``intermediate`` for a smoke test."""
    import time

    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from nerft.train import Example, SupervisedLoss, collate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = Qwen2Config(vocab_size=1000, hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
                      num_attention_heads=14, num_key_value_heads=2, max_position_embeddings=2048)
    lora = LoraConfig(r=8, lora_alpha=32, lora_dropout=0.0, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                            "gate_proj", "up_proj", "down_proj"])
    loss_fn = SupervisedLoss(get_peft_model(Qwen2ForCausalLM(cfg), lora).train())
    rows = []
    for n_prefix in prefixes:
        prefix = list(range(5, 5 + n_prefix))
        examples = [Example(prefix + [100 + (i * 7 + j) % 800 for j in range(26 + i)],
                            [-100] * (n_prefix + 16 + i) + [100 + (i * 7 + j) % 800 for j in range(16 + i, 26 + i)],
                            n_prefix) for i in range(8)]
        batches = {False: collate(examples, 0, False), True: collate(examples, 0, False, True)}
        times: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(repeats):
            for shared, batch in batches.items():
                loss_fn.zero_grad(set_to_none=True)
                start = time.perf_counter()
                loss, n = loss_fn(**batch)
                (loss / n).backward()
                times[shared].append(time.perf_counter() - start)
        off, on = statistics.median(times[False][1:]), statistics.median(times[True][1:])
        rows.append({"prefix_tokens": n_prefix, "tokens_plain": batches[False]["input_ids"].numel(),
                     "tokens_shared": n_prefix + batches[True]["input_ids"].numel(), "ms_plain": round(off * 1000),
                     "ms_shared": round(on * 1000), "speedup": round(off / on, 2)})
        log(f"slice, prefix {n_prefix}: {rows[-1]['ms_plain']} -> {rows[-1]['ms_shared']} ms ({rows[-1]['speedup']}x)")
    return rows


def write_slice(args: argparse.Namespace) -> None:
    rows = slice_timings(args.threads)
    md = ("## Shared-prefix speed on a 2-layer slice of Qwen2.5-0.5B's shape (random weights; forward + backward of "
          "one micro-batch of 8 rows, LoRA r 8)\n\n"
          + markdown_table(rows, ["prefix_tokens", "tokens_plain", "tokens_shared", "ms_plain", "ms_shared",
                                  "speedup"])
          + "\n\ntokens_*: tokens computed per micro-batch (padding included). Median of 4 after a warm-up.")
    write_results(args.out_name + "_slice", {"benchmark": "shared prefix speed, 2-layer slice", "rows": rows}, md,
                  Path(args.results))


def token_counts(train_file: str, n_docs: int, tokenizer_dir: str | Path, batch: int = 8) -> list[dict[str, Any]]:
    """The ``--tokens`` table: per prompt, system and shared-prefix tokens, tokens per example (mean, no padding),
    the example's own tokens, and what a micro-batch of ``batch`` computes per example with the prefix once."""
    from transformers import AutoTokenizer

    from nerft.config import build_config
    from nerft.formats import get_format
    from nerft.generation import shared_prefix_ids
    from nerft.jsonl import read_documents
    from nerft.train import TrainConfig, answer_end_id, encode_documents
    from nerft.train.data import build_training_prompt, mark_shared_prefix, resolve_labels

    tok = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    docs = read_documents(train_file)[:n_docs]
    variants = list(PROMPTS.items())  # each names its label set
    variants.append(("tutorial", {"data.labels": "ccfbdci", "data.prompt_style": "tutorial",
                                  "data.output_format": "tutorial", "data.end_token": "pad"}))
    rows = []
    for name, overrides in variants:
        cfg = build_config(TrainConfig, {**overrides, "data.train": train_file})
        labels = resolve_labels(cfg.data, docs)
        prompt = build_training_prompt(cfg, labels, docs)
        data = encode_documents(docs, tok, prompt, get_format(cfg.data.output_format), labels,
                                answer_end_id(tok, cfg.data.end_token), 10**6, "keep")
        n_prefix = mark_shared_prefix(data.examples, shared_prefix_ids(tok, prompt))
        mean = statistics.mean(len(ex.input_ids) for ex in data.examples)
        own = mean - n_prefix
        rows.append({"prompt": name, "system_tokens": len(tok(prompt.system)["input_ids"]),
                     "shared_prefix": n_prefix, "tokens_per_example": round(mean, 1), "own_tokens": round(own, 1),
                     f"computed_at_b{batch}": round(n_prefix / batch + own, 1),
                     "fewer_tokens": round(mean / (n_prefix / batch + own), 2),
                     "examples": len(data.examples)})
    return rows


def write_tokens(args: argparse.Namespace, train_file: str) -> None:
    from benchmarks.common import QWEN2_TOKENIZER

    rows = token_counts(train_file, args.examples, require(QWEN2_TOKENIZER, "the Qwen2 tokenizer lives in ../shared"))
    md = (f"## Tokens per training example by prompt (Qwen2 tokenizer, first {args.examples} documents of "
          f"{Path(train_file).name})\n\n" + markdown_table(rows, list(rows[0]))
          + "\n\ncomputed_at_b8: tokens a micro-batch of 8 computes per example with the shared prefix once "
          "(no padding); fewer_tokens: tokens_per_example / that. shared_prefix: the tokens every example starts with "
          "(train.data.mark_shared_prefix).")
    write_results(args.out_name + "_tokens", {"benchmark": "shared prefix tokens", "rows": rows}, md,
                  Path(args.results))


def main(argv: list[str] | None = None) -> int:
    from benchmarks.bench_train import NERFT_CPU_CONFIG

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(DEFAULT_MODEL))
    parser.add_argument("--train", default=None, help="train.jsonl (default: nerft prepare of ../shared CCFBDCI)")
    parser.add_argument("--prompts", default=",".join(PROMPTS), help=f"any of {', '.join(PROMPTS)}")
    parser.add_argument("--examples", type=int, default=64, help="first N training documents")
    parser.add_argument("--max-steps", type=int, default=8)
    parser.add_argument("--max-length", type=int, default=768)
    parser.add_argument("--nerft-config", default=str(NERFT_CPU_CONFIG))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out-name", default="shared_prefix_speed")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--work", default=str(WORK))
    parser.add_argument("--slice", action="store_true", help="only the 2-layer slice measurement (no model needed)")
    parser.add_argument("--tokens", action="store_true", help="only the token counts (no model needed)")
    args = parser.parse_args(argv)
    if args.slice:
        write_slice(args)
        return 0
    train_file = args.train or str(prepare_ccfbdci(out_dir=Path(args.work) / "ccfbdci") / "train.jsonl")
    if args.tokens:
        from benchmarks.scoring import shuffled_train

        shuffled = Path(args.work) / "shared_prefix" / "train.shuffled.jsonl"
        shuffled.parent.mkdir(parents=True, exist_ok=True)
        write_tokens(args, train_file if args.train else str(shuffled_train(Path(train_file), shuffled)))
        return 0

    args.model = str(require(Path(args.model), "build it with ../shared/bin/get-qwen2.5-coder-0.5b"))
    prompts = [p.strip() for p in args.prompts.split(",") if p.strip()]
    unknown = set(prompts) - set(PROMPTS)
    if unknown:
        raise SystemExit(f"--prompts: unknown {', '.join(sorted(unknown))}; choose from {', '.join(PROMPTS)}")
    rows = []
    for prompt in prompts:
        for shared in (False, True):
            log(f"{prompt}, shared_prefix {shared}: {args.max_steps} steps on {args.examples} documents")
            rows.append(one_run(args, train_file, prompt, shared))
        off, on = rows[-2], rows[-1]
        if off["s_per_step"] and on["s_per_step"]:
            on["speedup"] = round(off["s_per_step"] / max(on["s_per_step"], 1e-9), 2)
        log(f"{prompt}: {off['s_per_step']} -> {on['s_per_step']} s/step ({on.get('speedup', 'n/a')}x)")
    cols = ["prompt", "shared_prefix", "steps", "examples", "s_per_step", "examples_per_s", "tokens_per_step",
            "first_loss", "speedup", "peak_rss_gb", "note"]
    md = (f"## Shared-prefix training speed ({Path(args.model).name}, nerft's CPU recipe, first {args.examples} "
          f"documents, {args.max_steps} steps per run)\n\n" + markdown_table(rows, cols)
          + "\n\ntokens_per_step: tokens computed (padding included; a shared prefix counts once per micro-batch). "
          "s_per_step: median after the first step. first_loss: the first step's loss (equal with and without).")
    write_results(args.out_name, {"benchmark": "shared prefix speed", "model": args.model, "rows": rows}, md,
                  Path(args.results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
