"""B4 GPU: a Qwen2-1.5B-Instruct-shaped model with random weights, tutorial recipe vs nerft recipe, on one GPU.

    python -m benchmarks.bench_gpu                      # one H100, under 8 minutes
    python -m benchmarks.bench_gpu --tiny --steps 1     # scaled down: runs on CPU in seconds (smoke test)

Needs no tokenizer, data or download: the model is built from its config (hidden 1536, 28 layers, 12 heads / 2 KV
heads, FFN 8960, vocab 151936, tied embeddings, rope theta 1e6) in bf16, and examples are random token ids with the
prompt/answer lengths of 512 real CCFBDCI documents under each recipe (benchmarks/b4_lengths.json).

Training (per recipe: 1 warm-up step, then --steps timed optimizer steps):
- tutorial: HF Trainer, batch 4 x accumulation 4, gradient checkpointing, DataCollatorForSeq2Seq, LoRA r 8 on 7
  projections, bf16 weights (no autocast, as the tutorial), its prompt/answer lengths;
- nerft: nerft's training pieces (``nerft.train``: length-grouped batches or packing, ``collate``, the loss with
  the lm_head at supervised positions only, AdamW), settings from configs/qwen2-1.5b-ccfbdci.yaml when present,
  nerft's prompt and compact-answer lengths.
Reported: tokens/s (padded and real), examples/s, peak GPU memory, MFU = model FLOPs (4 x N_body per token + 4 x V
x H per lm_head position; recompute not counted) / time / 989 TFLOP/s (H100 bf16 dense).

Generation (``--gen-texts`` prompts, answer lengths fixed to each document's real answer length, greedy):
tutorial-style one text at a time; nerft-style batched with left padding; vLLM batched when installed.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from .bench_train import executed_flops, linear_params
from .common import REPO, RESULTS, log, markdown_table, write_results

LENGTHS = Path(__file__).with_name("b4_lengths.json")
NERFT_GPU_CONFIG = REPO / "configs" / "qwen2-1.5b-ccfbdci.yaml"
H100_BF16_PEAK = 989e12

QWEN2_15B = dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12,
                 num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True, rope_theta=1e6,
                 max_position_embeddings=32768, rms_norm_eps=1e-6, bos_token_id=151643, eos_token_id=151645,
                 pad_token_id=151643)
# the smoke-test shape: also a small vocabulary (the lm_head over 151,936 entries would dominate a CPU run)
TINY = dict(QWEN2_15B, hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=4096, bos_token_id=4094, eos_token_id=4095, pad_token_id=4094)


def build_model(shape: dict[str, Any], dtype, device):
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(**shape)
    config._attn_implementation = "sdpa"
    with torch.device(device):
        model = Qwen2ForCausalLM(config)
    return model.to(dtype).eval()


def synthetic_examples(kind: str, n: int, seed: int = 0, vocab: int = 151936) -> list[tuple[list[int], list[int]]]:
    """(input_ids, labels) with the real prompt/answer lengths of ``kind`` (tutorial or nerft_compact)."""
    lengths = json.loads(LENGTHS.read_text(encoding="utf-8"))[kind]
    rng = random.Random(seed)
    out = []
    for i in range(n):
        p, a = lengths[i % len(lengths)]
        ids = [rng.randrange(100, min(150000, vocab - 8)) for _ in range(p + a)]
        out.append((ids, [-100] * p + ids[p:]))
    return out


def pad_like_seq2seq_collator(pad_id: int):
    """What ``DataCollatorForSeq2Seq(tokenizer, padding=True)`` does to pre-tokenised examples (right padding with
    the pad id, labels padded with -100, attention mask 0), without needing a tokenizer."""
    import torch

    def collate(features: list[dict]) -> dict:
        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), -100, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n], labels[i, :n], mask[i, :n] = torch.tensor(f["input_ids"]), torch.tensor(f["labels"]), 1
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}

    return collate


def _sync(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def _reset_memory(device) -> None:
    import torch

    if str(device).startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _peak_memory_gb(device) -> float | None:
    import torch

    return round(torch.cuda.max_memory_allocated() / 1e9, 2) if str(device).startswith("cuda") else None


# ---------------------------------------------------------------------------------------------------------------
# Training


def train_tutorial(shape, dtype, device, steps: int, out_dir: str) -> dict:
    from datasets import Dataset
    from transformers import Trainer

    from .tutorial_baseline import (
        CountingCollator,
        _timing_callback,
        add_lora,
        count_forwards,
        training_arguments,
    )

    model = add_lora(build_model(shape, dtype, device))
    forwards = count_forwards(model)
    n = 16 * (steps + 1)
    ds = Dataset.from_list([{"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels}
                            for ids, labels in synthetic_examples("tutorial", n, vocab=shape["vocab_size"])])
    collator = CountingCollator(None, inner=pad_like_seq2seq_collator(shape["pad_token_id"]))
    timing = _timing_callback(None, log_every=0)
    args = training_arguments(out_dir, max_steps=steps + 1, save_strategy="no", logging_steps=1000)
    _reset_memory(device)
    trainer = Trainer(model=model, args=args, train_dataset=ds, data_collator=collator, callbacks=[timing])
    counts_after_warmup: dict[str, int] = {}

    from transformers import TrainerCallback

    class AfterWarmup(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 1:
                _sync(device)
                counts_after_warmup.update(collator.counts(forwards[0]))
                counts_after_warmup["t"] = time.perf_counter()

    trainer.add_callback(AfterWarmup())
    trainer.train()
    _sync(device)
    seconds = timing.step_ends[-1] - counts_after_warmup["t"]
    counts = {k: v - counts_after_warmup.get(k, 0) for k, v in collator.counts(forwards[0]).items()}
    return {"recipe": "tutorial", "seconds": seconds, "steps": steps, **counts,
            "head_positions": counts["padded_tokens"], "checkpointing": True,
            "peak_gpu_memory_gb": _peak_memory_gb(device), "batch": "4x4, padded, gradient checkpointing"}


def nerft_settings(config_path: Path | None) -> dict[str, Any]:
    """nerft's GPU recipe: the shipped YAML when present, else TrainConfig's defaults."""
    from nerft.config import build_config
    from nerft.train import TrainConfig

    cfg = build_config(TrainConfig, {}, config_path=str(config_path) if config_path else None)
    return {"batch_size": cfg.optim.batch_size, "grad_accum": cfg.optim.grad_accum, "packing": cfg.data.packing,
            "group_by_length": cfg.data.group_by_length, "checkpointing": cfg.optim.gradient_checkpointing,
            "lr": cfg.optim.lr, "lora": cfg.lora, "output_format": cfg.data.output_format}


def train_nerft(shape, dtype, device, steps: int, settings: dict[str, Any]) -> dict:
    """nerft's own training step (``nerft.train.step.train_step``, what ``nerft train`` runs) on synthetic data."""
    import torch

    from nerft.modeling import add_lora
    from nerft.train import Example, StepStats, SupervisedLoss, collate, epoch_batches, train_step

    model = add_lora(build_model(shape, dtype, device), settings["lora"], settings["checkpointing"])
    model.train()
    loss_module = SupervisedLoss(model)
    per_step = settings["batch_size"] * settings["grad_accum"]
    examples = [Example(ids, labels) for ids, labels in synthetic_examples("nerft_compact", per_step * (steps + 1),
                                                                         vocab=shape["vocab_size"])]
    batches = epoch_batches([len(e.input_ids) for e in examples], settings["batch_size"], 42, 0,
                            settings["group_by_length"])
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=settings["lr"])
    totals = StepStats()
    _reset_memory(device)
    t_start = None
    for step in range(steps + 1):
        if step == 1:  # the first step warms up kernels and allocators; it is not timed or counted
            _sync(device)
            t_start = time.perf_counter()
            totals = StepStats()
        micro = [collate([examples[i] for i in b], shape["pad_token_id"], settings["packing"])
                 for b in batches[step * settings["grad_accum"]:(step + 1) * settings["grad_accum"]]]
        stats = train_step(loss_module, micro, optimizer, params=params, max_grad_norm=1.0, device=device)
        for key in ("supervised_tokens", "real_tokens", "padded_tokens", "examples"):
            setattr(totals, key, getattr(totals, key) + getattr(stats, key))
    _sync(device)
    seconds = time.perf_counter() - t_start
    counts = {"examples": totals.examples, "padded_tokens": totals.padded_tokens, "real_tokens": totals.real_tokens,
              "supervised_tokens": totals.supervised_tokens}
    return {"recipe": "nerft", "seconds": seconds, "steps": steps, **counts,
            "head_positions": counts["supervised_tokens"], "checkpointing": settings["checkpointing"],
            "peak_gpu_memory_gb": _peak_memory_gb(device),
            "batch": f"{settings['batch_size']}x{settings['grad_accum']}, "
                     f"{'packed' if settings['packing'] else 'length-grouped' if settings['group_by_length'] else 'padded'}"
                     f"{', gradient checkpointing' if settings['checkpointing'] else ''}"}


# ---------------------------------------------------------------------------------------------------------------
# Generation


def generate_transformers(model, device, kind: str, n_texts: int, batch_size: int) -> dict:
    """Greedy generation with transformers; each text generates exactly its real answer length."""
    import torch

    pad = model.config.pad_token_id
    examples = synthetic_examples(kind, n_texts, seed=1, vocab=model.config.vocab_size)
    prompts = [(ids[:sum(1 for x in labels if x == -100)], len(ids) - sum(1 for x in labels if x == -100))
               for ids, labels in examples]
    order = sorted(range(n_texts), key=lambda i: -len(prompts[i][0]))
    generated = 0
    _sync(device)
    start = time.perf_counter()
    for s in range(0, n_texts, batch_size):
        chunk = [prompts[i] for i in order[s:s + batch_size]]
        width = max(len(p) for p, _ in chunk)
        new = max(a for _, a in chunk)  # a batch runs until its longest answer
        ids = torch.full((len(chunk), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for i, (p, _) in enumerate(chunk):
            ids[i, width - len(p):] = torch.tensor(p)
            mask[i, width - len(p):] = 1
        with torch.inference_mode():
            model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=new,
                           min_new_tokens=new, do_sample=False, pad_token_id=pad)
        generated += sum(a for _, a in chunk)
    _sync(device)
    seconds = time.perf_counter() - start
    return {"texts": n_texts, "seconds": seconds, "texts_per_s": n_texts / seconds,
            "answer_tokens_per_s": generated / seconds}


def generate_vllm(model, n_texts: int, kind: str = "nerft_compact") -> dict | str:
    """vLLM on the same random weights (saved to a temp folder), prompts as token ids; a string when unavailable."""
    try:
        from vllm import LLM, SamplingParams
    except ImportError:
        return "vllm not installed"
    examples = synthetic_examples(kind, n_texts, seed=1, vocab=model.config.vocab_size)
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        try:
            llm = LLM(model=tmp, skip_tokenizer_init=True, dtype="bfloat16", gpu_memory_utilization=0.5,
                      enforce_eager=True, max_model_len=1024)
        except Exception as exc:  # noqa: BLE001 - report, do not fail the benchmark
            return f"vllm failed to start: {type(exc).__name__}: {exc}"[:300]
        prompts, params = [], []
        for ids, labels in examples:
            n_prompt = sum(1 for x in labels if x == -100)
            prompts.append({"prompt_token_ids": ids[:n_prompt]})
            n_new = len(ids) - n_prompt
            params.append(SamplingParams(temperature=0, max_tokens=n_new, min_tokens=n_new, ignore_eos=True))
        llm.generate(prompts[:4], params[:4])  # warm-up
        start = time.perf_counter()
        llm.generate(prompts, params)
        seconds = time.perf_counter() - start
    generated = sum(p.max_tokens for p in params)
    return {"texts": n_texts, "seconds": seconds, "texts_per_s": n_texts / seconds,
            "answer_tokens_per_s": generated / seconds}


# ---------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    import torch

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="a 2-layer, 64-wide model (CPU smoke test)")
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps per recipe (after 1 warm-up)")
    parser.add_argument("--gen-texts", type=int, default=64, help="prompts per generation row")
    parser.add_argument("--gen-batch", type=int, default=32, help="nerft-style generation batch")
    parser.add_argument("--no-vllm", action="store_true")
    parser.add_argument("--nerft-config", default=str(NERFT_GPU_CONFIG))
    parser.add_argument("--peak-tflops", type=float, default=H100_BF16_PEAK / 1e12, help="for MFU")
    parser.add_argument("--out-name", default="b4_gpu")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    shape = TINY if args.tiny else QWEN2_15B
    dtype = torch.bfloat16 if device == "cuda" else torch.float32  # bf16 matmuls are slow on most CPUs
    if device == "cpu" and not args.tiny:
        log("no GPU: this runs the full-size model on CPU (slow); pass --tiny for a smoke test")
    params = linear_params(shape)
    params["lm_head"] = shape["vocab_size"] * shape["hidden_size"]
    config_path = Path(args.nerft_config) if Path(args.nerft_config).is_file() else None
    settings = nerft_settings(config_path)
    t0 = time.perf_counter()
    train_rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for recipe in ("tutorial", "nerft"):
            log(f"train {recipe}: {args.steps} timed steps (elapsed {time.perf_counter() - t0:.0f}s)")
            if recipe == "tutorial":
                r = train_tutorial(shape, dtype, device, args.steps, tmp)
            else:
                r = train_nerft(shape, dtype, device, args.steps, settings)
            flops = executed_flops(params, r["padded_tokens"], r["head_positions"], checkpointing=False)
            r.update({"tokens_per_s": round(r["padded_tokens"] / r["seconds"], 1),
                      "real_tokens_per_s": round(r["real_tokens"] / r["seconds"], 1),
                      "examples_per_s": round(r["examples"] / r["seconds"], 2),
                      "s_per_step": round(r["seconds"] / max(r["steps"], 1), 3),
                      "mfu_pct": round(100 * flops / r["seconds"] / (args.peak_tflops * 1e12), 2)})
            train_rows.append(r)
            log(f"  {recipe}: {r['examples_per_s']} examples/s, {r['tokens_per_s']} tokens/s, "
                f"peak {r['peak_gpu_memory_gb']} GB, MFU {r['mfu_pct']}%")
            if device == "cuda":
                torch.cuda.empty_cache()

    gen_rows: list[dict[str, Any]] = []
    model = build_model(shape, dtype, device)
    for name, kind, bs in (("tutorial predict() style, batch 1", "tutorial", 1),
                           (f"transformers batched x{args.gen_batch} (nerft prompt)", "nerft_compact", args.gen_batch)):
        log(f"generate: {name} (elapsed {time.perf_counter() - t0:.0f}s)")
        n = min(args.gen_texts, 16) if bs == 1 and not args.tiny else args.gen_texts  # batch 1 is slow: fewer
        gen_rows.append({"row": name, **generate_transformers(model, device, kind, n, bs)})
    vllm_note = None
    if not args.no_vllm and device == "cuda":
        log(f"generate: vLLM (elapsed {time.perf_counter() - t0:.0f}s)")
        res = generate_vllm(model, args.gen_texts)
        if isinstance(res, dict):
            gen_rows.append({"row": "vLLM (nerft prompt)", **res})
        else:
            vllm_note = res
            log(res)
    for r in gen_rows:
        r["texts_per_s"] = round(r["texts_per_s"], 2)
        r["answer_tokens_per_s"] = round(r["answer_tokens_per_s"], 1)
        r["seconds"] = round(r["seconds"], 2)

    payload = {"benchmark": "B4 GPU", "device": device, "shape": shape, "tiny": args.tiny, "steps": args.steps,
               "nerft_config": str(config_path) if config_path else None, "peak_tflops": args.peak_tflops,
               "train": train_rows, "generate": gen_rows, "vllm": vllm_note,
               "total_s": round(time.perf_counter() - t0, 1)}
    md = (f"## B4 {'tiny (smoke) ' if args.tiny else ''}Qwen2-1.5B-shaped random model, "
          f"{str(dtype).replace('torch.', '')}, {device}\n\n"
          + markdown_table(train_rows, ["recipe", "batch", "steps", "s_per_step", "examples_per_s", "tokens_per_s",
                                        "real_tokens_per_s", "peak_gpu_memory_gb", "mfu_pct"])
          + "\n\n" + markdown_table(gen_rows, ["row", "texts", "seconds", "texts_per_s", "answer_tokens_per_s"])
          + f"\n\nMFU: model FLOPs (4 x N_body per padded token + 4 x V x H per lm_head position, recompute not "
          f"counted) / time / {args.peak_tflops:g} TFLOP/s. Examples: random ids with the real prompt/answer "
          "lengths of each recipe; answers generated to their real length." + (f" vLLM: {vllm_note}." if vllm_note
                                                                                  else ""))
    write_results(args.out_name, payload, md, Path(args.results))
    log(f"done in {time.perf_counter() - t0:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
