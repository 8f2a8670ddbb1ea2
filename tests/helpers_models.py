"""Build tiny model folders for tests: a run directory (base + LoRA adapter + tokenizer + nerft.json), a merged
folder, and a tutorial-style ``checkpoint-N`` adapter. Reusable by any test that needs a real predictor."""

from __future__ import annotations

from pathlib import Path

from conftest import make_tiny_qwen2

from nerft.labels import LabelSet, ccfbdci_labels
from nerft.prompts import Prompt, build_prompt
from nerft.rundir import BaseModelRef, RunInfo, adapter_dir, tokenizer_dir


def make_lora_model(seed: int = 0, save_base_to: Path | None = None, tokenizer=None):
    """A tiny random Qwen2 wrapped in a peft LoRA whose weights are random (so the adapter changes outputs).
    Sized to ``tokenizer`` (the real Qwen2's size without one). ``save_base_to``: also save the plain base model
    (and the tokenizer) there, before LoRA layers go in."""
    import torch
    from peft import LoraConfig, get_peft_model

    base = make_tiny_qwen2(seed=seed, tokenizer=tokenizer)
    if save_base_to is not None:
        base.save_pretrained(save_base_to)
        if tokenizer is not None:
            tokenizer.save_pretrained(save_base_to)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    torch.manual_seed(seed + 1)
    return get_peft_model(base, cfg)


def build_run_dir(root: Path, tokenizer, *, labels: LabelSet | None = None, prompt: Prompt | None = None,
                  seed: int = 0) -> Path:
    """root/base (the base model folder) and root/run (nerft.json, adapter/, tokenizer/). Returns the run dir."""
    labels = labels or ccfbdci_labels()
    prompt = prompt or build_prompt(labels, "compact")
    base_dir, run = root / "base", root / "run"
    peft_model = make_lora_model(seed, save_base_to=base_dir, tokenizer=tokenizer)
    peft_model.save_pretrained(adapter_dir(run))
    tokenizer.save_pretrained(tokenizer_dir(run))
    RunInfo(base_model=BaseModelRef(str(base_dir.resolve())), labels=labels, prompt=prompt).save(run)
    return run


def build_tutorial_checkpoint(root: Path, tokenizer, seed: int = 0) -> tuple[Path, Path]:
    """A base folder and a ``checkpoint-N`` adapter like the tutorial's Trainer writes (no nerft.json)."""
    base_dir, ckpt = root / "base", root / "output" / "checkpoint-62"
    peft_model = make_lora_model(seed, save_base_to=base_dir, tokenizer=tokenizer)
    peft_model.peft_config["default"].base_model_name_or_path = str(base_dir)  # as from_pretrained(path) records
    peft_model.save_pretrained(ckpt)
    return base_dir, ckpt


_SHARED_RUNS: dict[int, Path] = {}
# The seed of the default run: with the tiny tokenizer, its random model + adapter writes an entity for most test
# texts under constrained decoding and a long answer without it (seed 0 ends every answer at once, which would
# leave test_predict's grounding and batching checks with nothing to check).
RUN_SEED = 4


def shared_run_dir(tokenizer) -> Path:
    """One default run directory per test process (read-only use: tests that write put their output elsewhere)."""
    import atexit
    import shutil
    import tempfile

    if id(tokenizer) not in _SHARED_RUNS:
        root = Path(tempfile.mkdtemp(prefix="nerft-run-"))
        atexit.register(shutil.rmtree, root, True)
        _SHARED_RUNS[id(tokenizer)] = build_run_dir(root, tokenizer, seed=RUN_SEED)
    return _SHARED_RUNS[id(tokenizer)]
