"""A tiny run directory whose model answers with entities, for the engine backends' tests (llama.cpp, CTranslate2):
a random tiny model answers garbage, which would leave "same entities as the transformers backend" with nothing to
compare. This one is trained in a few seconds to answer every text with the same two mentions, so a text that
contains them gets grounded entities with offsets and scores, and one that does not gets them dropped."""

from __future__ import annotations

from pathlib import Path

from conftest import make_tiny_qwen2

from nerft.formats import get_format
from nerft.generation import end_of_turn_id, prompt_ids
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.rundir import BaseModelRef, RunInfo, adapter_dir, tokenizer_dir
from nerft.schema import Entity

ANSWER = [Entity(0, 2, "PER", "张三"), Entity(3, 5, "LOC", "北京")]
TRAIN_TEXTS = ["张三在北京工作。", "昨天张三去了北京。", "北京的张三说话了", "他们在公园散步。"]


def _fit(model, params, rows, steps: int, lr: float) -> None:
    import torch

    opt = torch.optim.AdamW(params, lr=lr)
    model.train()
    for step in range(steps):
        prompt, answer = rows[step % len(rows)]
        x = torch.tensor([prompt + answer])
        loss = model(input_ids=x, labels=torch.tensor([[-100] * len(prompt) + answer])).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def build_answering_run(root: Path, tokenizer, seed: int = 4, arch: str = "qwen2") -> Path:
    """root/base (a tiny ``arch`` model trained to answer ``ANSWER``) and root/run (nerft.json, a random LoRA
    adapter trained to keep that answer, the tokenizer). Returns the run directory."""
    import torch
    from peft import LoraConfig, get_peft_model

    labels = ccfbdci_labels()
    prompt = build_prompt(labels, "compact")
    answer = get_format("compact").render(ANSWER, labels)
    target = tokenizer.encode(answer, add_special_tokens=False) + [end_of_turn_id(tokenizer)]
    rows = [(prompt_ids(tokenizer, prompt, t), target) for t in TRAIN_TEXTS]
    base = make_tiny_qwen2(seed=seed, tokenizer=tokenizer, arch=arch)
    _fit(base, list(base.parameters()), rows, 80, 1e-2)
    base_dir, run = root / "base", root / "run"
    base.save_pretrained(base_dir)
    tokenizer.save_pretrained(base_dir)
    torch.manual_seed(seed + 1)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 init_lora_weights=False))
    _fit(peft_model, [p for p in peft_model.parameters() if p.requires_grad], rows, 20, 1e-2)
    peft_model.save_pretrained(adapter_dir(run))
    tokenizer.save_pretrained(tokenizer_dir(run))
    RunInfo(base_model=BaseModelRef(str(base_dir.resolve())), labels=labels, prompt=prompt).save(run)
    return run
