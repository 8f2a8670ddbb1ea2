"""Training: label masking, overlong handling, batching, the supervised-only loss, packing isolation, the run
directory, resume and Ctrl-C. A tiny random Qwen2 with the project's char tokenizer or the tiny byte-level BPE
one (and the real Qwen2 tokenizer where ../shared is present)."""

from __future__ import annotations

import json
import logging
import math
import os
import signal
import warnings
from pathlib import Path

import pytest
import torch
from conftest import make_tiny_qwen2
from nerft_helpers import char_tokenizer, sample_docs, save_base_model, tiny_recipe, write_splits

from nerft import config as cfglib
from nerft import train as train_mod
from nerft.formats import FORMATS, get_format
from nerft.generation import end_of_turn_id, prompt_ids
from nerft.jsonl import read_documents, write_jsonl
from nerft.labels import ccfbdci_labels
from nerft.lexicon import Lexicon
from nerft.modeling import LoraSettings, add_lora
from nerft.prompts import build_prompt
from nerft.rundir import RunInfo
from nerft.schema import Document, Entity, NerftError
from nerft.train import (
    IGNORE,
    OptimConfig,
    SupervisedLoss,
    TrainConfig,
    TrainingInterrupted,
    answer_end_id,
    build_schedule,
    collate,
    encode_document,
    encode_documents,
    epoch_batches,
    train,
)
from nerft.train.data import load_training_documents

LABELS = ccfbdci_labels()
PRESETS = [(name, "nerft", "eot") for name in FORMATS if name != "tutorial"] + [("tutorial", "tutorial", "pad")]


@pytest.fixture(scope="module")
def char_tok():
    return char_tokenizer()


@pytest.fixture(params=["char", "tiny", pytest.param("qwen2", marks=pytest.mark.shared)])
def any_tokenizer(request, char_tok):
    """The char tokenizer (the demo's), the tiny byte-level BPE one, and the real Qwen2 one (with ../shared)."""
    return char_tok if request.param == "char" else request.getfixturevalue(f"{request.param}_tokenizer")


@pytest.mark.parametrize(("fmt_name", "style", "end"), PRESETS)
def test_label_masking_is_exact(any_tokenizer, fmt_name, style, end):
    tok = any_tokenizer
    prompt = build_prompt(LABELS, fmt_name, style)
    fmt = get_format(fmt_name)
    end_id = answer_end_id(tok, end)
    expected_end = tok.pad_token_id if end == "pad" else end_of_turn_id(tok)
    assert tok.convert_ids_to_tokens(expected_end) == ("<|endoftext|>" if end == "pad" else "<|im_end|>")
    for doc in sample_docs(6) + [Document("empty", "今天天气很好。")]:
        ex = encode_document(doc, tok, prompt, fmt, LABELS, end_id)
        p = prompt_ids(tok, prompt, doc.text)
        assert ex.input_ids[:len(p)] == p
        assert ex.labels[:len(p)] == [IGNORE] * len(p)  # every prompt token masked
        assert ex.labels[len(p):] == ex.input_ids[len(p):]  # every answer token and the end token supervised
        assert ex.input_ids[-1] == expected_end
        assert tok.decode(ex.input_ids[len(p):-1]) == fmt.render(doc.entities, LABELS)
        assert len(ex.input_ids) == len(ex.labels)


def test_tutorial_preset_prompt_is_the_tutorials(char_tok):
    prompt = build_prompt(LABELS, "tutorial", "tutorial")
    text = char_tok.decode(prompt_ids(char_tok, prompt, "张三在北京。"))
    assert text.endswith("<|im_start|>user\n文本:张三在北京。<|im_end|>\n<|im_start|>assistant\n")


def test_overlong_examples_are_counted_and_handled(char_tok):
    docs = sample_docs(30)
    prompt, fmt = build_prompt(LABELS, "compact"), get_format("compact")
    end = end_of_turn_id(char_tok)
    lengths = [len(encode_document(d, char_tok, prompt, fmt, LABELS, end).input_ids) for d in docs]
    limit = sorted(lengths)[len(lengths) // 2]
    n_over = sum(n > limit for n in lengths)
    assert n_over > 0
    dropped = encode_documents(docs, char_tok, prompt, fmt, LABELS, end, limit, "drop")
    kept = encode_documents(docs, char_tok, prompt, fmt, LABELS, end, limit, "keep")
    cut = encode_documents(docs, char_tok, prompt, fmt, LABELS, end, limit, "truncate")
    assert dropped.overlong == kept.overlong == cut.overlong == n_over
    assert len(dropped.examples) == len(docs) - n_over
    assert len(kept.examples) == len(cut.examples) == len(docs)
    assert max(len(e.input_ids) for e in cut.examples) == limit
    assert max(len(e.input_ids) for e in kept.examples) == max(lengths)


def test_epoch_batches_are_deterministic_grouped_and_complete():
    lengths = [(i * 37) % 101 + 5 for i in range(200)]
    a = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True, mega_batches=5)
    assert a == epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=True, mega_batches=5)
    assert a != epoch_batches(lengths, 8, seed=1, epoch=1, group_by_length=True, mega_batches=5)
    assert sorted(i for b in a for i in b) == list(range(200))
    plain = epoch_batches(lengths, 8, seed=1, epoch=0, group_by_length=False)

    def padding(batches):
        return sum(len(b) * max(lengths[i] for i in b) - sum(lengths[i] for i in b) for b in batches)

    assert padding(a) < padding(plain) / 3


def _two_examples(tok):
    prompt, fmt = build_prompt(LABELS, "compact"), get_format("compact")
    docs = sample_docs(4)
    return [encode_document(d, tok, prompt, fmt, LABELS, end_of_turn_id(tok)) for d in docs[:3]]


def test_supervised_loss_equals_full_lm_head_loss(char_tok):
    model = add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(r=4, dropout=0.0))
    batch = collate(_two_examples(char_tok), char_tok.pad_token_id, packing=False)
    loss_sum, n = SupervisedLoss(model)(**batch)
    reference = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                      labels=batch["labels"]).loss
    assert int(n) == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert torch.allclose(loss_sum / n, reference, atol=1e-5)


def test_top_layers_adapts_only_the_upper_layers_and_backward_stops_below_them(char_tok):
    model = add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(r=4, dropout=0.0, top_layers=1))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(".layers.1." in n and "lora_" in n for n in trainable)
    layers = model.get_base_model().model.layers
    needs_grad = {}
    for i, layer in enumerate(layers):
        layer.register_forward_hook(lambda mod, args, out, i=i: needs_grad.__setitem__(
            i, (out[0] if isinstance(out, tuple) else out).requires_grad))
    loss_sum, n = SupervisedLoss(model)(**collate(_two_examples(char_tok), char_tok.pad_token_id, packing=False))
    (loss_sum / n).backward()
    # layer 0 runs outside the autograd graph (nothing below the adapters is differentiated); layer 1 inside it
    assert needs_grad == {0: False, 1: True}
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    with pytest.raises(NerftError, match="the model has 2 layers"):
        add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(top_layers=3))


def test_bf16_autocast_runs_the_matmuls_in_bf16_and_keeps_the_loss_close(char_tok):
    model = add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(r=4, dropout=0.0))
    batch = collate(_two_examples(char_tok), char_tok.pad_token_id, packing=False)
    seen = []
    proj = model.get_base_model().model.layers[0].mlp.down_proj
    proj.register_forward_hook(lambda mod, args, out: seen.append(out.dtype))
    full_sum, n = SupervisedLoss(model)(**batch)
    mixed_sum, _ = SupervisedLoss(model, torch.bfloat16)(**batch)
    assert seen == [torch.float32, torch.bfloat16]
    assert mixed_sum.dtype == torch.float32 and math.isclose(float(mixed_sum / n), float(full_sum / n), rel_tol=0.02)
    (mixed_sum / n).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and g.dtype == torch.float32 and torch.isfinite(g).all() for g in grads)


def test_packed_examples_do_not_attend_to_each_other(char_tok):
    """Packing relies on transformers building a block-diagonal mask from restarting position ids."""
    model = add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(r=4, dropout=0.0)).eval()
    examples = _two_examples(char_tok)
    packed = collate(examples, char_tok.pad_token_id, packing=True)
    padded = collate(examples, char_tok.pad_token_id, packing=False)
    assert packed["input_ids"].shape[0] == 1 and "attention_mask" not in packed
    body = model.get_base_model().model
    with torch.no_grad():
        # use_cache=False as in training: with a cache transformers does not look for packed sequences
        h_packed = body(input_ids=packed["input_ids"], position_ids=packed["position_ids"],
                        use_cache=False).last_hidden_state[0]
        h_padded = body(input_ids=padded["input_ids"], attention_mask=padded["attention_mask"],
                        use_cache=False).last_hidden_state
        loss_packed, n_packed = SupervisedLoss(model)(**packed)
        loss_padded, n_padded = SupervisedLoss(model)(**padded)
    start = 0
    for i, ex in enumerate(examples):
        n = len(ex.input_ids)
        assert torch.allclose(h_packed[start:start + n], h_padded[i, :n], atol=1e-5)
        start += n
    assert int(n_packed) == int(n_padded)
    assert torch.allclose(loss_packed, loss_padded, atol=1e-3)


def test_loss_falls_when_one_batch_is_repeated(char_tok):
    torch.manual_seed(0)
    model = add_lora(make_tiny_qwen2(vocab_size=len(char_tok)), LoraSettings(r=8, alpha=16, dropout=0.0))
    loss_fn = SupervisedLoss(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    batch = collate(_two_examples(char_tok), char_tok.pad_token_id, packing=False)
    losses = []
    for _ in range(25):
        loss_sum, n = loss_fn(**batch)
        (loss_sum / n).backward()
        opt.step()
        opt.zero_grad()
        losses.append(float(loss_sum.detach() / n))
    # A random model with frozen 0.02-scale embeddings cannot get confident fast; a clear, steady fall is enough.
    assert losses[-1] < losses[0] - 0.3
    assert losses[-1] == min(losses) or losses[-1] < losses[len(losses) // 2]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, char_tok):
    return save_base_model(tmp_path_factory.mktemp("base"), char_tok)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("data"))


def _cfg(recipe: dict) -> TrainConfig:
    return cfglib.from_dict(TrainConfig, recipe)


def test_the_lexicon_counts_the_documents_empty_share_leaves_out(tmp_path):
    docs = [Document("a", "北京很大。", [Entity(0, 2, "GPE", "北京")]), Document("b", "北京和中国。", [])]
    write_jsonl(tmp_path / "train.jsonl", docs)
    cfg = _cfg({"data": {"train": str(tmp_path / "train.jsonl"), "empty_share": 0.0}})
    train_docs, _, lexicon = load_training_documents(cfg, main=False)
    assert [d.id for d in train_docs] == ["a"]  # the entity-less document is not trained on...
    assert lexicon.entries["北京"].occurrences == 2  # ...but says that 北京 is annotated in 1 of its 2 occurrences


def test_a_short_run_writes_the_documented_run_directory(base_model, splits, tmp_path):
    out = tmp_path / "run"
    recipe = tiny_recipe(base_model, {**splits, "test": splits["dev"]}, out, output__save_every=2,
                         data__max_length=112)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert train(_cfg(recipe)) == out
    metrics = json.loads((out / "metrics.json").read_text())
    n_over = metrics["train"]["overlong"]
    assert n_over > 0 and metrics["train"]["examples"] == 24 - n_over
    assert any(f"{n_over} of 24 training examples" in str(w.message) for w in caught)
    for name in ("nerft.json", "config.yaml", "labels.json", "lexicon.json", "metrics.json", "train_log.jsonl",
                 "curves.png", "adapter/adapter_model.safetensors", "adapter/adapter_config.json", "tokenizer/tokenizer.json",
                 "tokenizer/chat_template.jinja", "checkpoints/step-4/trainer_state.json",
                 "checkpoints/step-4/trainer_state.safetensors",
                 "checkpoints/step-4/adapter/adapter_model.safetensors"):
        assert (out / name).is_file(), name
    info = RunInfo.load(out)
    assert info.base_model.name_or_path == str(Path(base_model).resolve()) and info.prompt.output_format == "compact"
    assert Lexicon.load(out).to_dict() == Lexicon.from_documents(read_documents(splits["train"])).to_dict()
    assert metrics["train"]["steps"] == 4 and metrics["dev"]["best_step"] in (2, 4)
    assert set(metrics["test"]) >= {"precision", "recall", "f1", "parse_failures", "hallucinated"}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log if "loss" in r] == [1, 2, 3, 4]
    assert sum("dev/f1" in r for r in log) == 2 and all(r["tokens_per_s"] > 0 for r in log if "loss" in r)
    assert not list(out.glob("**/.*.tmp"))  # atomic writes leave no temporaries
    with pytest.raises(NerftError, match="already holds a run"):
        train(_cfg(recipe))


@pytest.mark.parametrize("which", ["tiny", pytest.param("qwen2", marks=pytest.mark.shared)])
def test_train_with_a_byte_level_bpe_tokenizer(which, splits, tmp_path, request):
    """The tutorial preset end to end with a Qwen2-like tokenizer, and SwanLab offline (no account needed)."""
    tokenizer = request.getfixturevalue(f"{which}_tokenizer")
    base = save_base_model(tmp_path / "base", tokenizer)
    out = train(_cfg(tiny_recipe(base, splits, tmp_path / "run", optim__max_steps=2, eval__every=2,
                                 data__output_format="tutorial", data__prompt_style="tutorial",
                                 data__end_token="pad", tracking__backend="swanlab")))
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert list((out / "swanlog").glob("run-*"))  # SwanLab offline: a local run, no account needed
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    # a random model's mean cross-entropy per supervised token: about ln(vocabulary), uniform guessing
    vocab = json.loads((base / "config.json").read_text())["vocab_size"]
    assert losses == pytest.approx([math.log(vocab)] * 2, rel=0.05)
    from transformers import AutoTokenizer

    saved = AutoTokenizer.from_pretrained(out / "tokenizer")
    assert saved.get_vocab() == tokenizer.get_vocab() and saved.chat_template == tokenizer.chat_template


# Per-step losses of the tiny char-tokenizer model under a fixed recipe, as measured when this test was written
# (torch 2.13 CPU, fp32, one thread). A change to data order, masking, the loss, LoRA or the optimizer moves them;
# a deliberate change re-pins them (run the test, copy the new values, say why in the commit).
# Re-pinned (12 steps) when the demo tokenizer became a byte-level BPE (issue 43.4): its larger vocabulary starts
# higher (about ln 800) and learns more slowly, so 8 steps no longer cleared the 0.1 drop below.
PINNED_LOSSES = [6.68785, 6.70613, 6.67622, 6.61118, 6.61677, 6.62351, 6.60599, 6.5921, 6.54815, 6.56281, 6.56153,
                 6.55519]


def test_the_tiny_recipe_reproduces_its_pinned_losses(base_model, splits, tmp_path):
    recipe = tiny_recipe(base_model, splits, tmp_path / "run", eval__every=0, data__dev=None,
                         data__empty_share=0.5, optim__autocast="off", optim__lr=3e-2, optim__max_steps=12)
    out = train(_cfg(recipe))
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    losses = [r["loss"] for r in log if "loss" in r]
    assert losses == pytest.approx(PINNED_LOSSES, abs=2e-4)
    assert losses[-1] < losses[0] - 0.1  # the pinned run learns: a recipe that stopped updating would not match

def _adapter(run_dir):
    from safetensors.torch import load_file

    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


def test_resume_continues_at_the_right_step_with_the_same_result(base_model, splits, tmp_path):
    common = {"optim__max_steps": 6, "eval__every": 0, "data__dev": None, "tracking__log_every": 1}
    straight = train(_cfg(tiny_recipe(base_model, splits, tmp_path / "a", **common)))
    b = tmp_path / "b"
    train(_cfg(tiny_recipe(base_model, splits, b, **common) | {"stop_after_steps": 4}))
    assert not (b / "metrics.json").read_text().count('"finished": true')
    assert (b / "checkpoints" / "step-4" / "trainer_state.json").is_file()
    train(_cfg(tiny_recipe(base_model, splits, b, **common) | {"resume": "latest"}))
    metrics = json.loads((b / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 6 and metrics["train"]["finished"]
    steps = [json.loads(line)["step"] for line in (b / "train_log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]
    a_weights, b_weights = _adapter(straight), _adapter(b)
    assert a_weights.keys() == b_weights.keys()
    for k in a_weights:
        assert torch.allclose(a_weights[k], b_weights[k], atol=1e-6), k


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_stop_signal_saves_a_checkpoint_that_resumes_exactly(base_model, splits, tmp_path, monkeypatch, signum):
    import nerft.train.data as loop  # the generative task's collation, looked up at each step

    calls = {"n": 0}
    real_collate = loop.collate

    def signalling_collate(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:  # during step 3 (2 micro-batches per step): a real signal to this process
            os.kill(os.getpid(), signum)
        return real_collate(*args, **kwargs)

    monkeypatch.setattr(loop, "collate", signalling_collate)
    out = tmp_path / "run"
    with pytest.raises(TrainingInterrupted) as stopped:
        train(_cfg(tiny_recipe(base_model, splits, out, eval__every=0, data__dev=None, tracking__log_every=1)))
    assert stopped.value.signum == signum
    state = json.loads((out / "checkpoints" / "step-2" / "trainer_state.json").read_text())
    assert state["step"] == 2 and state["step_in_epoch"] == 2
    monkeypatch.setattr(loop, "collate", real_collate)
    recipe = tiny_recipe(base_model, splits, out, eval__every=0, data__dev=None)
    train(_cfg(recipe | {"resume": "latest"}))
    straight = train(_cfg(tiny_recipe(base_model, splits, tmp_path / "straight", eval__every=0, data__dev=None)))
    for k, v in _adapter(straight).items():
        assert torch.allclose(v, _adapter(out)[k], atol=1e-6), k


def _lr_curve(cfg: OptimConfig, total_steps: int, spent_per_step: list[float]) -> list[float]:
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.lr)
    seconds = {"now": 0.0}
    scheduler = build_schedule(optimizer, cfg, total_steps, lambda: seconds["now"])
    lrs = []
    for s in spent_per_step:
        optimizer.step()
        seconds["now"] = s
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def test_time_budget_schedule_follows_the_clock_or_the_step_cap():
    cfg = OptimConfig(lr=1.0, max_minutes=1.0, warmup_ratio=0.1, schedule="cosine")
    # 60 s budget: 3 s spent = half the warmup; 33 s = halfway through the decay; 60 s = the end
    assert _lr_curve(cfg, 1000, [3.0, 33.0, 60.0]) == pytest.approx([0.5, 0.5, 0.0], abs=1e-9)
    # a slow clock does not stretch the run past its step cap: at step 10 of 10 the decay is over
    assert _lr_curve(cfg, 10, [0.0] * 10)[-1] == pytest.approx(0.0, abs=1e-9)
    linear = OptimConfig(lr=2.0, max_minutes=1.0, warmup_steps=0, schedule="linear")
    assert _lr_curve(linear, 1000, [15.0, 45.0]) == pytest.approx([1.5, 0.5])


def test_time_budget_ends_the_run_as_finished(base_model, splits, tmp_path, caplog):
    out = tmp_path / "run"
    # a budget of 60 microseconds: spent by any first optimizer step; max_steps 50 is only the cap
    recipe = tiny_recipe(base_model, {**splits, "test": splits["dev"]}, out, optim__max_steps=50,
                         optim__max_minutes=1e-6, optim__warmup_steps=None, eval__every=0)
    with caplog.at_level(logging.INFO, logger="nerft.train"):
        train(_cfg(recipe))
    shown = [r.getMessage() for r in caplog.records if "steps)" in r.getMessage()]
    assert shown[-1].startswith("100% (1/1 steps)")  # the progress counts the steps the budget allows, not max_steps
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train"]["stopped_by"] == "time budget" and metrics["train"]["finished"]
    assert metrics["train"]["steps"] == 1 and metrics["train"]["train_seconds"] > 0
    assert metrics["dev"]["best_step"] == 1 and "f1" in metrics["test"]  # the last state is scored, then test
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["lr"] for r in log if "loss" in r] == [pytest.approx(0.0, abs=1e-12)]  # the decay ran its course
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    assert [p.name for p in (out / "checkpoints").iterdir()] == ["step-1"]  # the last step, for --resume


def test_missing_training_data_is_a_user_error(tmp_path):
    with pytest.raises(NerftError, match="--train"):
        train(TrainConfig())


def test_cli_shortcuts_and_dotted_flags_build_the_config(tmp_path):
    import argparse

    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers()
    train_mod.register(sub, "train", "")
    args = parser.parse_args(["train", "--config", "configs/qwen2.5-0.5b-cpu.yaml", "--train", "t.jsonl",
                              "--max-steps", "7", "--optim.lr", "0.001", "--resume", "--no-data.group-by-length"])
    cfg = cfglib.build_config(TrainConfig, args, config_path=args.config)
    assert cfg.data.train == "t.jsonl" and cfg.optim.max_steps == 7 and cfg.optim.lr == 0.001
    assert cfg.resume == "latest" and cfg.data.group_by_length is False and cfg.model.dtype == "fp32"


def test_tracker_tensorboard_and_jsonl(tmp_path):
    from nerft.tracking import Tracker, TrackingConfig

    tracker = Tracker(TrackingConfig(backend="tensorboard"), tmp_path, {"optim": {"lr": 1e-4}})
    tracker.log({"loss": 1.5, "lr": 1e-4, "note": "text is kept in the jsonl only"}, step=3)
    tracker.log_samples([{"text": "张三在北京", "gold": "PER:张三", "predicted": "-"}], step=3)
    tracker.finish()
    assert json.loads((tmp_path / "train_log.jsonl").read_text()) == {
        "step": 3, "loss": 1.5, "lr": 1e-4, "note": "text is kept in the jsonl only"}
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))


def test_swanlab_cloud_needs_the_key_from_the_environment(tmp_path, monkeypatch):
    from nerft.tracking import Tracker, TrackingConfig

    monkeypatch.delenv("SWANLAB_API_KEY", raising=False)
    with pytest.raises(NerftError, match="SWANLAB_API_KEY"):
        Tracker(TrackingConfig(backend="swanlab", mode="cloud"), tmp_path, {})
    # the key goes from the environment to SwanLab's login, unsaved, and is not echoed when the login fails
    import swanlab

    calls = []

    def failing_login(api_key, save):
        calls.append((api_key, save))
        raise RuntimeError("401 unauthorised")

    monkeypatch.setattr(swanlab, "login", failing_login)
    monkeypatch.setenv("SWANLAB_API_KEY", "sk-secret-123")
    with pytest.raises(NerftError, match="login failed") as failed:
        Tracker(TrackingConfig(backend="swanlab", mode="cloud"), tmp_path, {})
    assert calls == [("sk-secret-123", False)] and "sk-secret-123" not in str(failed.value)
    # no recipe can carry it (so config.yaml never holds it): a tracking.key is an unknown key
    with pytest.raises(cfglib.ConfigError, match="unknown config key.*tracking.key"):
        cfglib.from_dict(TrainConfig, {"tracking": {"key": "sk-secret-123"}})


def test_limit_empty_documents_caps_the_share_of_entity_less_documents_and_keeps_order():
    from nerft.schema import Document, Entity
    from nerft.train import limit_empty_documents

    docs = [Document(str(i), f"文本{i}", [Entity(0, 2, "PER", "文本")] if i % 4 == 0 else []) for i in range(100)]
    kept = limit_empty_documents(docs, 0.5, seed=1)
    empty = [d for d in kept if not d.entities]
    assert sum(1 for d in kept if d.entities) == 25  # every document with entities stays
    assert len(empty) == 25  # 25 / (25 + 25) = 0.5
    assert [int(d.id) for d in kept] == sorted(int(d.id) for d in kept)
    assert limit_empty_documents(docs, 0.5, seed=1) == kept  # seeded
    assert limit_empty_documents(docs, 0.9, seed=1) == docs  # already under the cap: unchanged
    assert all(d.entities for d in limit_empty_documents(docs, 0.0, seed=1))


def test_lexicon_hints_reach_the_training_examples_and_the_saved_runs_predictor(base_model, splits, tmp_path,
                                                                                char_tok):
    from nerft.generation import Generated
    from nerft.inference.loading import load_predictor
    from nerft.train.data import encode_documents

    out = tmp_path / "run"
    assert train(_cfg(tiny_recipe(base_model, splits, out, data__lexicon_hints=3, optim__max_steps=2))) == out
    info, lexicon, docs = RunInfo.load(out), Lexicon.load(out), read_documents(splits["train"])
    assert info.prompt.hints == 3
    # each training example reads the hint of the other documents' counts (its own left out)
    hints = [lexicon.hint(d.text, 3, LABELS.name_of, own=d) for d in docs]
    assert sum(bool(h) for h in hints) >= 5  # the demo corpus repeats some of its names
    end = end_of_turn_id(char_tok)
    data = encode_documents(docs, char_tok, info.prompt, get_format("compact"), LABELS, end, 10**6, "keep", lexicon)
    assert [ex.input_ids[:len(prompt_ids(char_tok, info.prompt, d.text, h))] for d, h, ex in
            zip(docs, hints, data.examples, strict=True)] == [prompt_ids(char_tok, info.prompt, d.text, h)
                                                               for d, h in zip(docs, hints, strict=True)]
    with pytest.raises(NerftError, match="no lexicon was given"):
        encode_documents(docs, char_tok, info.prompt, get_format("compact"), LABELS, end, 10**6, "keep")
    # the saved run's predictor writes the same hint (full counts: a new text) into every prompt
    predictor = load_predictor(out, max_new_tokens=4)
    text = docs[0].text
    assert predictor.plan.hint(text) == lexicon.hint(text, 3, LABELS.name_of) != ""
    sent: list[list[int]] = []
    predictor.plan.run([text], None, lambda texts, ids, limits, names: sent.extend(ids) or [Generated("")])
    assert sent == [prompt_ids(predictor.tokenizer, info.prompt, text, predictor.plan.hint(text))]
    (out / "lexicon.json").unlink()
    with pytest.raises(NerftError, match="trained with lexicon hints"):
        load_predictor(out)


def test_a_run_directory_on_its_own_inputs_is_refused(tiny_tokenizer, tmp_path):
    """--out may not be, hold or lie inside what train reads (it writes labels.json, nerft.json, lexicon.json
    there, which would replace prepare's own files or mix with the base model's)."""
    splits = write_splits(tmp_path / "data", n_train=4, n_dev=2)
    base = save_base_model(tmp_path / "base", tiny_tokenizer)
    labels_before = (tmp_path / "data" / "labels.json").read_bytes()
    for out, how in ((tmp_path / "data", "contains"), (base, "is"), (base / "run", "is inside")):
        recipe = tiny_recipe(base, splits, out, output__overwrite=True)
        with pytest.raises(NerftError, match=f"--out {out} {how} the input"):
            train(cfglib.from_dict(TrainConfig, recipe))
    assert (tmp_path / "data" / "labels.json").read_bytes() == labels_before and not (base / "run").exists()
