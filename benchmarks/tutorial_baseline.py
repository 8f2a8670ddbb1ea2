"""The Qwen2-NER tutorial's published script, re-implemented faithfully as the benchmarks' baseline.

The tutorial (SwanLab's "Qwen2-1.5B-Instruct NER fine-tuning" on CCFBDCI) does, in one script:
``dataset_jsonl_transfer`` (raw CCFBDCI -> instruction/input/output records), ``process_func`` (ChatML string,
MAX_LENGTH 384, labels -100 on the prompt, the answer ended by the pad token, silent truncation), LoRA r 8 /
alpha 32 / dropout 0.1 on the 7 projections, HF ``Trainer`` (batch 4 x accumulation 4, 2 epochs, lr 1e-4,
gradient checkpointing, ``DataCollatorForSeq2Seq``) and ``predict()`` (one text at a time, max_new_tokens 512).

Only what a benchmark must change is parametrised: model path, data (a nerft-prepared split converted back to the
raw CCFBDCI layout, so both recipes see the same documents), max_steps / a wall-clock budget, output folder,
dtype (fp32 on CPU, the tutorial's bf16 on GPU), SwanLab off. This module is never imported by nerft.

    python -m benchmarks.tutorial_baseline train --model MODEL --data benchmarks/work/ccfbdci/train.jsonl \
        --limit 64 --max-steps 4 --output benchmarks/work/tutorial-run
    python -m benchmarks.tutorial_baseline predict --model MODEL [--adapter DIR] \
        --data benchmarks/work/ccfbdci/test.jsonl --limit 64 --output preds.jsonl
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

# Verbatim from the tutorial (copied, not imported from nerft, so that the baseline stays independent).
SYSTEM_PROMPT = (
    "你是一个文本实体识别领域的专家，你需要从给定的句子中提取 地点; 人名; 地理实体; 组织 实体. "
    '以 json 格式输出, 如 {"entity_text": "南京", "entity_label": "地理实体"} '
    '注意: 1. 输出的每一行都必须是正确的 json 字符串. 2. 找不到任何实体时, 输出"没有找到任何实体". '
)
MATCH_NAMES = ["地点", "人名", "地理实体", "组织"]
MAX_LENGTH = 384
LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
# CCFBDCI's entity_names per label, exactly as in ../shared/data/ccfbdci/ccfbdci.jsonl: lets a nerft-prepared
# document (which keeps only the label code) be turned back into the raw record the tutorial reads.
CCFBDCI_ENTITY_NAMES = {
    "GPE": ["地缘政治实体", "政治实体", "地理实体", "社会实体"],
    "PER": ["人名", "姓名"],
    "ORG": ["组织", "团体", "机构"],
    "LOC": ["地址", "地点", "地名"],
}


# ---------------------------------------------------------------------------------------------------------------
# Data: the tutorial's conversion and tokenisation


def raw_record(doc: dict) -> dict:
    """A document in nerft's canonical format (or already raw CCFBDCI) -> the raw CCFBDCI record."""
    if all("entity_names" in e for e in doc["entities"]):
        return doc
    return {
        "text": doc["text"],
        "entities": [
            {"start_idx": e["start"], "end_idx": e["end"], "entity_text": e["text"], "entity_label": e["label"],
             "entity_names": CCFBDCI_ENTITY_NAMES[e["label"]]}
            for e in sorted(doc["entities"], key=lambda e: (e["start"], e["end"]))
        ],
    }


def transfer_record(data: dict) -> dict:
    """One line of the tutorial's ``dataset_jsonl_transfer``."""
    input_text = data["text"]
    entities = data["entities"]
    entity_sentence = ""
    entity_label = None
    for entity in entities:
        entity_json = dict(entity)
        entity_text = entity_json["entity_text"]
        entity_names = entity_json["entity_names"]
        for name in entity_names:
            if name in MATCH_NAMES:
                entity_label = name
                break
        entity_sentence += f"""{{"entity_text": "{entity_text}", "entity_label": "{entity_label}"}}"""
    if entity_sentence == "":
        entity_sentence = "没有找到任何实体"
    return {"instruction": SYSTEM_PROMPT, "input": f"文本:{input_text}", "output": entity_sentence}


def dataset_jsonl_transfer(origin_path: str | Path, new_path: str | Path, limit: int | None = None) -> None:
    """The tutorial's conversion; also accepts nerft-prepared JSONL (converted back to the raw layout first)."""
    messages = []
    with open(origin_path, encoding="utf-8") as file:
        for line in file:
            if not line.strip():
                continue
            messages.append(transfer_record(raw_record(json.loads(line))))
            if limit is not None and len(messages) >= limit:
                break
    with open(new_path, "w", encoding="utf-8") as file:
        for message in messages:
            file.write(json.dumps(message, ensure_ascii=False) + "\n")


def process_func(example: dict, tokenizer) -> dict:
    """The tutorial's tokenisation: prompt masked with -100, answer + pad token supervised, cut at 384."""
    instruction = tokenizer(
        f"<|im_start|>system\n{example['instruction']}<|im_end|>\n<|im_start|>user\n{example['input']}<|im_end|>\n"
        "<|im_start|>assistant\n",
        add_special_tokens=False,
    )
    response = tokenizer(f"{example['output']}", add_special_tokens=False)
    input_ids = instruction["input_ids"] + response["input_ids"] + [tokenizer.pad_token_id]
    attention_mask = instruction["attention_mask"] + response["attention_mask"] + [1]
    labels = [-100] * len(instruction["input_ids"]) + response["input_ids"] + [tokenizer.pad_token_id]
    if len(input_ids) > MAX_LENGTH:  # the tutorial truncates silently, answer included
        input_ids = input_ids[:MAX_LENGTH]
        attention_mask = attention_mask[:MAX_LENGTH]
        labels = labels[:MAX_LENGTH]
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def load_records(path: str | Path, limit: int | None = None) -> list[dict]:
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                records.append(transfer_record(raw_record(json.loads(line))))
                if limit is not None and len(records) >= limit:
                    break
    return records


# ---------------------------------------------------------------------------------------------------------------
# Model, LoRA, Trainer


def default_dtype():
    import torch

    return torch.bfloat16 if torch.cuda.is_available() else torch.float32


def load_model(model_path: str | Path, dtype=None, use_fast_tokenizer: bool = False):
    """The tutorial's loading (``use_fast=False``; ``device_map="auto"`` on GPU); fp32 on CPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_path, use_fast=use_fast_tokenizer, trust_remote_code=True)
    kwargs: dict[str, Any] = {"dtype": dtype or default_dtype()}
    if torch.cuda.is_available():
        kwargs["device_map"] = "auto"
    model = AutoModelForCausalLM.from_pretrained(model_path, **kwargs)
    return model, tokenizer


def lora_config():
    from peft import LoraConfig, TaskType

    return LoraConfig(task_type=TaskType.CAUSAL_LM, target_modules=LORA_TARGETS, inference_mode=False,
                      r=8, lora_alpha=32, lora_dropout=0.1)


def add_lora(model):
    from peft import get_peft_model

    model.enable_input_require_grads()  # needed with gradient checkpointing (the tutorial's comment)
    return get_peft_model(model, lora_config())


def training_arguments(output_dir: str | Path, max_steps: int = -1, num_train_epochs: float = 2, bf16: bool = False,
                       **overrides: Any):
    from transformers import TrainingArguments

    kwargs: dict[str, Any] = dict(
        output_dir=str(output_dir),
        per_device_train_batch_size=4,
        per_device_eval_batch_size=4,
        gradient_accumulation_steps=4,
        logging_steps=10,
        num_train_epochs=num_train_epochs,
        save_steps=100,
        learning_rate=1e-4,
        save_on_each_node=True,
        gradient_checkpointing=True,
        report_to="none",
        max_steps=max_steps,
        bf16=bf16,
        use_cpu=not _cuda(),
        disable_tqdm=True,
    )
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


class CountingCollator:
    """``DataCollatorForSeq2Seq(tokenizer, padding=True)`` that also counts what each batch costs.

    accelerate's dataloader collates one batch ahead, so ``counts(consumed)`` sums only the first ``consumed``
    batches (the ones the model actually trained on; see ``count_forwards``).
    """

    def __init__(self, tokenizer, inner=None):
        from transformers import DataCollatorForSeq2Seq

        self.inner = inner or DataCollatorForSeq2Seq(tokenizer=tokenizer, padding=True)
        self.batches: list[dict[str, int]] = []

    def __call__(self, features):
        batch = self.inner(features)
        self.batches.append({
            "examples": batch["input_ids"].shape[0],
            "padded_tokens": batch["input_ids"].numel(),
            "real_tokens": int(batch["attention_mask"].sum()),
            # the shift: a position is trained when its *next* label is not -100
            "supervised_tokens": int((batch["labels"][:, 1:] != -100).sum()),
        })
        return batch

    def counts(self, consumed: int | None = None) -> dict[str, int]:
        used = self.batches if consumed is None else self.batches[:consumed]
        keys = ("examples", "padded_tokens", "real_tokens", "supervised_tokens")
        return {k: sum(b[k] for b in used) for k in keys}


def count_forwards(model) -> list[int]:
    """A one-element counter of the model's top-level training forwards (= micro-batches trained on)."""
    calls = [0]

    def hook(module, args, kwargs):
        if module.training:
            calls[0] += 1

    model.register_forward_pre_hook(hook, with_kwargs=True)
    return calls


def _timing_callback(max_seconds: float | None, log_every: int = 1):
    from transformers import TrainerCallback

    class Timing(TrainerCallback):
        """Per-optimizer-step wall times; stops training at a step boundary once the budget is spent."""

        def __init__(self):
            self.start = None
            self.step_ends: list[float] = []
            self.losses: list[dict] = []

        def on_train_begin(self, args, state, control, **kw):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            now = time.perf_counter()
            self.step_ends.append(now)
            elapsed = now - self.start
            total = state.max_steps or 0
            if log_every and state.global_step % log_every == 0:
                per = elapsed / state.global_step
                eta = per * (total - state.global_step)
                print(f"[tutorial] step {state.global_step}/{total} {per:.1f}s/step elapsed {elapsed:.0f}s "
                      f"ETA {eta:.0f}s", file=sys.stderr, flush=True)
            if max_seconds is not None and elapsed >= max_seconds:
                control.should_training_stop = True

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                self.losses.append({"step": state.global_step, "loss": logs["loss"]})

    return Timing()


def _InOrderTrainer():  # noqa: N802 - a class factory (transformers is imported lazily)
    from torch.utils.data import SequentialSampler
    from transformers import Trainer

    class InOrderTrainer(Trainer):
        def _get_train_sampler(self, *args, **kwargs):
            return SequentialSampler(self.train_dataset)

    return InOrderTrainer


def train(model_path: str | Path, data: str | Path, output_dir: str | Path, limit: int | None = None,
          max_steps: int = -1, max_seconds: float | None = None, dtype: str | None = None,
          use_fast_tokenizer: bool = False, swanlab: bool = False, model=None, tokenizer=None,
          save: bool = True, in_order: bool = False, seed: int | None = None, **arg_overrides: Any) -> dict:
    """Train with the tutorial's recipe; returns timings and token counts (and saves the adapter to OUTPUT/final).

    ``max_seconds`` stops at the first optimizer-step boundary after that much training time (equal-time runs);
    with neither it nor ``max_steps`` it runs the tutorial's 2 epochs. ``in_order`` (benchmarks only) reads the
    data in file order instead of the Trainer's random sampler, so "the first K examples" is what it trained on.
    ``seed`` draws the LoRA initialisation and the sampler's order; None leaves both as the tutorial has them
    (torch's start-up state for the LoRA, the Trainer's default seed 42 for the sampler), as every recorded run.
    """
    import torch
    from datasets import Dataset
    from transformers import Trainer, set_seed

    t_load = time.perf_counter()
    torch_dtype = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    if model is None:
        model, tokenizer = load_model(model_path, torch_dtype, use_fast_tokenizer)
    load_s = time.perf_counter() - t_load
    records = load_records(data, limit)
    train_ds = Dataset.from_list(records)
    # an explicit fingerprint: hashing the closure would pickle the whole tokenizer (seconds, same result)
    train_dataset = train_ds.map(lambda ex: process_func(ex, tokenizer), remove_columns=train_ds.column_names,
                                 new_fingerprint=f"tutorial-{abs(hash((str(data), limit)))}")
    truncated = sum(1 for r in train_dataset if len(r["input_ids"]) >= MAX_LENGTH)
    if seed is not None:
        set_seed(seed)  # the LoRA A matrices are drawn here, before the Trainer seeds anything
        arg_overrides["seed"] = seed
    model = add_lora(model)
    # With a time budget the LR schedule stays the tutorial's 2-epoch one; the budget ends the loop early.
    epochs_note = "max_steps" if max_steps > 0 else "time budget" if max_seconds is not None else "2 epochs"
    # The tutorial loads the weights in bf16 and sets no bf16/fp16 flag (no autocast); the same here.
    args = training_arguments(output_dir, max_steps=max_steps, **arg_overrides)
    collator = CountingCollator(tokenizer)
    timing = _timing_callback(max_seconds)
    callbacks = [timing]
    if swanlab:
        from swanlab.integration.transformers import SwanLabCallback

        callbacks.append(SwanLabCallback(project="Qwen2-NER-fintune", experiment_name="tutorial-baseline",
                                         mode="local"))
    forwards = count_forwards(model)
    trainer_cls = _InOrderTrainer() if in_order else Trainer
    trainer = trainer_cls(model=model, args=args, train_dataset=train_dataset, data_collator=collator,
                          callbacks=callbacks)
    result = trainer.train()
    train_s = time.perf_counter() - timing.start
    steps = trainer.state.global_step
    final_dir = Path(output_dir) / "final"
    if save:
        trainer.save_model(str(final_dir))
        tokenizer.save_pretrained(str(final_dir))
    step_times = [b - a for a, b in zip([timing.start, *timing.step_ends[:-1]], timing.step_ends, strict=True)]
    counts = collator.counts(forwards[0])
    return {
        "recipe": "tutorial",
        "seed": seed,
        "stop": epochs_note,
        "load_s": round(load_s, 2),
        "train_s": round(train_s, 2),
        "optimizer_steps": steps,
        "step_s": [round(s, 3) for s in step_times],
        "examples_available": len(train_dataset),
        "truncated_examples": truncated,
        **counts,
        "train_loss": float(result.training_loss),
        "losses": timing.losses,
        "adapter": str(final_dir) if save else None,
        "dtype": str(model.dtype).replace("torch.", ""),
        "device": str(model.device),
    }


# ---------------------------------------------------------------------------------------------------------------
# Inference


def predict(messages, model, tokenizer, stats: dict | None = None) -> str:
    """The tutorial's ``predict``: one conversation, greedy ``generate`` with max_new_tokens 512.

    ``stats`` (not in the tutorial) receives the number of generated tokens.
    """
    device = model.device
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    model_inputs = tokenizer([text], return_tensors="pt").to(device)
    generated_ids = model.generate(model_inputs.input_ids, max_new_tokens=512)
    generated_ids = [output_ids[len(input_ids):] for input_ids, output_ids in zip(model_inputs.input_ids,
                                                                                  generated_ids, strict=True)]
    response = tokenizer.batch_decode(generated_ids, skip_special_tokens=True)[0]
    if stats is not None:
        stats["generated_tokens"] = stats.get("generated_tokens", 0) + int(generated_ids[0].numel())
    return response


def load_for_inference(model_path: str | Path, adapter: str | Path | None = None, dtype=None,
                       use_fast_tokenizer: bool = False):
    model, tokenizer = load_model(model_path, dtype, use_fast_tokenizer)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    return model.eval(), tokenizer


def predict_texts(texts: list[str], model, tokenizer, progress=None) -> tuple[list[str], list[int]]:
    """Run the tutorial's predict() on each text (with its system prompt and 文本: prefix)."""
    import torch

    answers, generated = [], []
    for text in texts:
        messages = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": f"文本:{text}"}]
        stats: dict[str, int] = {}
        with torch.no_grad():
            answers.append(predict(messages, model, tokenizer, stats))
        generated.append(stats["generated_tokens"])
        if progress is not None:
            progress.step()
    return answers, generated


# ---------------------------------------------------------------------------------------------------------------
# CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    tr = sub.add_parser("train", help="train with the tutorial's recipe")
    tr.add_argument("--model", required=True, help="local HF model folder")
    tr.add_argument("--data", required=True, help="nerft-prepared train.jsonl (or raw CCFBDCI jsonl)")
    tr.add_argument("--output", required=True)
    tr.add_argument("--limit", type=int, default=None, help="first N documents only")
    tr.add_argument("--max-steps", type=int, default=-1, help="optimizer steps (default: the tutorial's 2 epochs)")
    tr.add_argument("--max-seconds", type=float, default=None, help="stop after this much training time")
    tr.add_argument("--dtype", default=None, help="float32 (CPU default) or bfloat16 (GPU default)")
    tr.add_argument("--swanlab", action="store_true", help="log to SwanLab in local mode, as the tutorial does")
    pr = sub.add_parser("predict", help="the tutorial's predict(), one text at a time")
    pr.add_argument("--model", required=True)
    pr.add_argument("--adapter", default=None)
    pr.add_argument("--data", required=True, help="JSONL with a text field")
    pr.add_argument("--limit", type=int, default=None)
    pr.add_argument("--output", required=True, help="JSONL: id, text, answer, generated_tokens")
    pr.add_argument("--dtype", default=None)
    args = parser.parse_args(argv)
    if args.cmd == "train":
        result = train(args.model, args.data, args.output, args.limit, args.max_steps, args.max_seconds, args.dtype,
                       swanlab=args.swanlab)
        print(json.dumps({k: v for k, v in result.items() if k not in ("step_s", "losses")}, indent=2))
        return 0
    import torch

    from .common import Progress, read_jsonl

    docs = read_jsonl(args.data, args.limit)
    dtype = getattr(torch, args.dtype) if args.dtype else None
    model, tokenizer = load_for_inference(args.model, args.adapter, dtype)
    answers, generated = predict_texts([d["text"] for d in docs], model, tokenizer, Progress(len(docs), "predict"))
    os.makedirs(Path(args.output).parent, exist_ok=True)
    with open(args.output, "w", encoding="utf-8") as f:
        for doc, answer, n in zip(docs, answers, generated, strict=True):
            f.write(json.dumps({"id": doc.get("id"), "text": doc["text"], "answer": answer, "generated_tokens": n},
                               ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
