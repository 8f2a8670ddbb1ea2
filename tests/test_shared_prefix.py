"""Shared-prefix training (``data.shared_prefix``): the system prompt runs once per micro-batch and its KV cache
serves every row. Proven equal to plain padded batches (loss and every LoRA gradient) on a tiny random Qwen2 whose
LoRA weights are all non-zero, with rows of different lengths; shown not to be vacuous (the gradient really flows
back through the one prefix forward); then ``train()`` with it on. Also the rich prompt's pieces: worked examples
in the system prompt and the LOC/GPE definitions file."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import REPO, make_tiny_qwen2
from nerft_helpers import char_tokenizer, sample_docs, save_base_model, tiny_recipe, write_splits

from nerft import config as cfglib
from nerft.formats import get_format
from nerft.generation import end_of_turn_id, prompt_ids, shared_prefix_ids
from nerft.labels import LabelSet, ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import Document, Entity, NerftError
from nerft.train import IGNORE, SupervisedLoss, TrainConfig, collate, encode_document, train
from nerft.train.data import (
    build_training_prompt,
    check_shared_prefix,
    few_shot_documents,
    mark_shared_prefix,
)
from nerft.train.step import accumulate_gradients, count_batch, rows_after_prefix

LABELS = ccfbdci_labels()
ALL_PROJECTIONS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@pytest.fixture(scope="module")
def char_tok():
    return char_tokenizer()


@pytest.fixture(params=["char", "tiny", pytest.param("qwen2", marks=pytest.mark.shared)])
def tok(request, char_tok):
    return char_tok if request.param == "char" else request.getfixturevalue(f"{request.param}_tokenizer")


def _lora_model(tok, seed: int = 0):
    """A tiny random Qwen2 with LoRA on every projection, every LoRA weight random (B too: with B = 0 the A
    gradients would be zero in both layouts and prove nothing), no dropout."""
    from peft import LoraConfig, get_peft_model

    base = make_tiny_qwen2(seed=seed, tokenizer=tok)
    torch.manual_seed(seed + 1)
    cfg = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=ALL_PROJECTIONS, init_lora_weights=False)
    return get_peft_model(base, cfg).train()


PROMPTS = {"short": ("compact", "nerft", False), "described": ("compact", "nerft", True),
           "tutorial": ("tutorial", "tutorial", False)}


def _examples(tok, n: int = 5, which: str = "short"):
    fmt, style, describe = PROMPTS[which]
    prompt = build_prompt(LABELS, fmt, style, describe_labels=describe)
    docs = sample_docs(n + 3)[3:]  # different lengths, with and without entities
    examples = [encode_document(d, tok, prompt, get_format(fmt), LABELS, end_of_turn_id(tok)) for d in docs]
    n_prefix = mark_shared_prefix(examples, shared_prefix_ids(tok, prompt))
    return examples, examples[0].input_ids[:n_prefix]


def _grads(model, micro_batches) -> tuple[float, dict[str, torch.Tensor]]:
    model.zero_grad(set_to_none=True)
    stats = accumulate_gradients(SupervisedLoss(model), micro_batches, device="cpu")
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    return stats.loss_sum, grads


def test_examples_record_the_shared_prefix(tok):
    examples, prefix = _examples(tok)
    assert prefix == shared_prefix_ids(tok, build_prompt(LABELS, "compact"))  # system turn + user header
    for ex in examples:
        assert ex.prefix_len == len(prefix) and ex.input_ids[:len(prefix)] == prefix
        assert ex.labels[:len(prefix) + 1] == [IGNORE] * (len(prefix) + 1)  # the prefix predicts no answer token
    assert len({len(ex.input_ids) for ex in examples}) > 2  # rows of different lengths: padding is exercised


def test_shared_prefix_batch_layout(char_tok):
    examples, prefix = _examples(char_tok, 3)
    n = len(prefix)
    plain = collate(examples, char_tok.pad_token_id, packing=False)
    shared = collate(examples, char_tok.pad_token_id, packing=False, shared_prefix=True)
    assert shared["prefix_ids"].tolist() == [prefix]
    assert shared["input_ids"].shape == (3, plain["input_ids"].shape[1] - n)
    assert shared["attention_mask"].shape == plain["attention_mask"].shape
    assert torch.equal(shared["attention_mask"], plain["attention_mask"])  # prefix ones, then each row's own
    assert torch.equal(shared["labels"], plain["labels"][:, n:])
    assert shared["position_ids"][0].tolist() == list(range(n, plain["input_ids"].shape[1]))
    a, b = count_batch(plain), count_batch(shared)
    assert a.supervised_tokens == b.supervised_tokens and a.examples == b.examples == 3
    assert b.real_tokens == a.real_tokens - 2 * n and b.padded_tokens == a.padded_tokens - 2 * n  # prefix once
    # an example that does not start with the prefix sends its micro-batch down the plain path
    odd = [examples[0], type(examples[1])(examples[1].input_ids, examples[1].labels, 0)]
    assert "prefix_ids" not in collate(odd, char_tok.pad_token_id, packing=False, shared_prefix=True)


def test_the_prefix_stops_where_a_text_merges_with_the_prompt(tiny_tokenizer):
    """The tutorial's user prefix 文本: ends in a colon that BPE can merge with a text's first letters: the prefix
    then ends before it, and every example still shares it."""
    prompt = build_prompt(LABELS, "tutorial", "tutorial")
    probe = shared_prefix_ids(tiny_tokenizer, prompt)
    docs = sample_docs(12)
    examples = [encode_document(d, tiny_tokenizer, prompt, get_format("tutorial"), LABELS, 0) for d in docs]
    assert sum(ex.input_ids[:len(probe)] == probe for ex in examples) < len(examples)  # the case is real here
    n = mark_shared_prefix(examples, probe)
    assert 0 < n < len(probe) and all(ex.prefix_len == n and ex.input_ids[:n] == probe[:n] for ex in examples)


@pytest.mark.parametrize("which", list(PROMPTS))
def test_loss_and_lora_gradients_equal_the_padded_batch(tok, which):
    """Two micro-batches (3 and 2 rows of different lengths, right-padded) through accumulate_gradients."""
    examples, _ = _examples(tok, 5, which)
    model = _lora_model(tok)
    pad = tok.pad_token_id
    plain = [collate(examples[:3], pad, False), collate(examples[3:], pad, False)]
    shared = [collate(examples[:3], pad, False, True), collate(examples[3:], pad, False, True)]
    assert all("prefix_ids" in b for b in shared)
    loss_plain, grads_plain = _grads(model, plain)
    loss_shared, grads_shared = _grads(model, shared)
    assert loss_shared == pytest.approx(loss_plain, abs=1e-5 * max(1.0, abs(loss_plain)))
    assert len(grads_plain) == 2 * 2 * len(ALL_PROJECTIONS)  # A and B of every projection in both layers
    for name, g in grads_plain.items():
        assert g.abs().max() > 0, name
        assert torch.allclose(grads_shared[name], g, atol=1e-5, rtol=1e-4), name


def test_the_gradient_really_flows_back_through_the_shared_prefix(char_tok):
    """Not vacuous: with the prefix's KV detached, the k/v-projection LoRA gradients of the layers change."""
    examples, _ = _examples(char_tok, 3)
    model = _lora_model(char_tok)
    batch = collate(examples, char_tok.pad_token_id, False, True)
    _, exact = _grads(model, [batch])
    body = model.get_base_model().model
    with torch.no_grad():
        cache = body(input_ids=batch["prefix_ids"], use_cache=True).past_key_values
    cache.batch_repeat_interleave(len(examples))
    model.zero_grad(set_to_none=True)
    hidden = body(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                  position_ids=batch["position_ids"], past_key_values=cache, use_cache=True).last_hidden_state
    targets = batch["labels"][:, 1:]
    keep = targets != IGNORE
    logits = model.get_base_model().lm_head(hidden[:, :-1][keep])
    (torch.nn.functional.cross_entropy(logits, targets[keep], reduction="sum") / keep.sum()).backward()
    detached = {n: p.grad for n, p in model.named_parameters() if p.requires_grad}
    name = next(n for n in exact if "layers.0" in n and "k_proj.lora_A" in n)
    assert not torch.allclose(detached[name], exact[name], atol=1e-5)
    # and the rows' own positions matter: one position off changes the hidden states
    with torch.no_grad():
        right = rows_after_prefix(body, batch["prefix_ids"], batch["input_ids"], batch["attention_mask"],
                                  batch["position_ids"])
        off = rows_after_prefix(body, batch["prefix_ids"], batch["input_ids"], batch["attention_mask"],
                                batch["position_ids"] + 1)
    assert not torch.allclose(right, off, atol=1e-4)


def test_shared_prefix_refuses_packing_and_checkpointing():
    for over in ({"data": {"packing": True}}, {"optim": {"gradient_checkpointing": True}}):
        cfg = cfglib.from_dict(TrainConfig, {"data": {"shared_prefix": True, **over.get("data", {})},
                                             "optim": over.get("optim", {})})
        with pytest.raises(NerftError, match="shared_prefix"):
            check_shared_prefix(cfg)
    check_shared_prefix(cfglib.from_dict(TrainConfig, {"data": {"shared_prefix": True}}))


@pytest.fixture(scope="module")
def base_model(tmp_path_factory, char_tok):
    return save_base_model(tmp_path_factory.mktemp("base"), char_tok)


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("data"))


def _run(base_model, splits, out: Path, **over) -> list[dict]:
    recipe = tiny_recipe(base_model, {**splits, "dev": None}, out, optim__max_steps=2, lora__dropout=0.0, **over)
    train(cfglib.from_dict(TrainConfig, recipe))
    return [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]


def test_train_with_shared_prefix_matches_the_plain_run(base_model, splits, tmp_path):
    plain = _run(base_model, splits, tmp_path / "plain")
    shared = _run(base_model, splits, tmp_path / "shared", data__shared_prefix=True, data__examples_in_prompt=2)
    shared_plain_prompt = _run(base_model, splits, tmp_path / "shared0", data__shared_prefix=True)
    steps = [r for r in plain if "loss" in r]
    same = [r for r in shared_plain_prompt if "loss" in r]
    assert [r["step"] for r in same] == [1, 2]
    for a, b in zip(steps, same, strict=True):
        assert b["loss"] == pytest.approx(a["loss"], rel=1e-3)
        assert b["examples"] == a["examples"] and b["supervised_tokens"] == a["supervised_tokens"]
        assert b["padded_tokens"] < a["padded_tokens"]  # the prefix is computed once per micro-batch
    assert all(r["loss"] > 0 for r in shared if "loss" in r)
    info = json.loads((tmp_path / "shared" / "nerft.json").read_text())
    assert "示例：" in info["prompt"]["system"]  # predict/serve get the worked examples too


# ---------------------------------------------------------------------------------------------------------------
# The rich prompt: worked examples and the LOC/GPE definitions


def _doc(i: int, text: str, *ents: tuple[int, int, str]) -> Document:
    return Document(f"d{i}", text, [Entity(s, e, lab, text[s:e]) for s, e, lab in ents])


def test_few_shot_documents_cover_every_label_first_and_are_deterministic():
    docs = [_doc(0, "今天天气很好。"), _doc(1, "张三去了北京。", (0, 2, "PER"), (4, 6, "GPE")),
            _doc(2, "李四在上海。", (0, 2, "PER"), (3, 5, "GPE")), _doc(3, "联合国开会。", (0, 3, "ORG")),
            _doc(4, "长江很长。", (0, 2, "LOC")), _doc(5, "王" * 80, (0, 1, "PER"))]
    shots = few_shot_documents(docs, 3, LABELS)
    assert [d.id for d in shots] == ["d1", "d3", "d4"]  # LOC, PER(+GPE), ORG covered; kept in data order
    assert few_shot_documents(docs, 3, LABELS) == shots
    assert [d.id for d in few_shot_documents(docs, 5, LABELS)] == ["d1", "d2", "d3", "d4"]  # no empty, no long
    assert few_shot_documents(docs[:1], 2, LABELS) == []


def test_examples_in_prompt_go_into_the_system_prompt_and_the_default_is_unchanged(char_tok):
    docs = sample_docs(40)
    cfg = cfglib.from_dict(TrainConfig, {"data": {"examples_in_prompt": 3}})
    default = build_training_prompt(cfglib.from_dict(TrainConfig, {}), LABELS, docs)
    assert default == build_prompt(LABELS, "compact", "nerft")
    rich = build_training_prompt(cfg, LABELS, docs)
    shots = few_shot_documents(docs, 3, LABELS)
    assert rich.system.startswith(default.system) and len(shots) == 3
    for d in shots:
        assert f"输入：{d.text}\n输出：\n{get_format('compact').render(d.entities, LABELS)}" in rich.system
    prefix = shared_prefix_ids(char_tok, rich)
    system_only = prompt_ids(char_tok, rich, "x")
    assert len(prefix) > len(shared_prefix_ids(char_tok, default)) and system_only[:len(prefix)] == prefix
    with pytest.raises(NerftError, match="examples_in_prompt"):
        build_training_prompt(cfg, LABELS, [])


def test_the_loc_gpe_definitions_file_is_ccfbdci_with_sharper_descriptions():
    defined = LabelSet.from_file(REPO / "configs" / "labels" / "ccfbdci-defined.yaml")
    assert defined.codes == LABELS.codes and defined.names == LABELS.names
    by_code = {lab.code: lab.description for lab in defined.labels}
    assert "山" in by_code["LOC"] and "河" in by_code["LOC"] and "地区" in by_code["LOC"]
    assert "国家" in by_code["GPE"] and "城市" in by_code["GPE"] and "政" in by_code["GPE"]
    described = build_prompt(defined, "compact", describe_labels=True).system
    assert by_code["LOC"] in described and by_code["GPE"] in described


def test_shared_prefix_speed_benchmark_runs(base_model, splits, tmp_path, monkeypatch):
    sys.path.insert(0, str(REPO))
    from benchmarks import common
    from experiments import shared_prefix_speed

    monkeypatch.setattr(common, "IN_PROCESS", True)
    shared_prefix_speed.main(["--model", str(base_model), "--train", splits["train"], "--prompts", "short,defined+4",
                              "--examples", "8", "--max-steps", "2", "--threads", "1", "--results", str(tmp_path),
                              "--work", str(tmp_path / "work")])
    rows = json.loads((tmp_path / "shared_prefix_speed.json").read_text())["rows"]
    assert [(r["prompt"], r["shared_prefix"]) for r in rows] == [("short", False), ("short", True),
                                                                ("defined+4", False), ("defined+4", True)]
    for off, on in (rows[:2], rows[2:]):
        assert on["first_loss"] == pytest.approx(off["first_loss"], rel=1e-4)  # LoRA B = 0: dropout plays no part
        assert on["tokens_per_step"] < off["tokens_per_step"]
        assert on["speedup"] == round(off["s_per_step"] / max(on["s_per_step"], 1e-9), 2)  # off over on, same run
    assert rows[2]["tokens_per_step"] > rows[0]["tokens_per_step"]  # the worked examples are in the prompt


def test_shared_prefix_slice_timing_runs():
    sys.path.insert(0, str(REPO))
    from experiments import shared_prefix_speed

    rows = shared_prefix_speed.slice_timings(1, repeats=2, hidden=56, intermediate=64, prefixes=(10,))
    assert rows[0]["tokens_shared"] == 10 + rows[0]["tokens_plain"] - 8 * 10


def test_shared_prefix_token_counts(splits, tiny_tokenizer, tmp_path):
    sys.path.insert(0, str(REPO))
    from experiments import shared_prefix_speed

    tiny_tokenizer.save_pretrained(tmp_path / "tok")
    rows = {r["prompt"]: r for r in shared_prefix_speed.token_counts(splits["train"], 12, tmp_path / "tok")}
    assert list(rows) == ["short", "defined", "defined+4", "defined+8", "tutorial"]
    for r in rows.values():
        assert r["examples"] == 12 and r["shared_prefix"] > 0 and r["fewer_tokens"] > 1
        assert r["tokens_per_example"] == pytest.approx(r["shared_prefix"] + r["own_tokens"], abs=0.11)
    assert rows["short"]["shared_prefix"] < rows["defined"]["shared_prefix"] < rows["defined+4"]["shared_prefix"]
