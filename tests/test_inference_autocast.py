"""bf16 autocast at prediction time (``--autocast``): the transformer blocks run in bf16, the lm_head and the answer
scores stay fp32, ``auto`` follows the CPU's measured bf16 speed and leaves tiny models alone."""

from __future__ import annotations

import json

import pytest
import torch
from helpers_engines import build_answering_run

from nerft.cli import main
from nerft.inference.loading import inference_autocast, open_predictor
from nerft.inference.location import decoding_options
from nerft.inference.options import LoadOptions
from nerft.inference.transformers_backend import FullPrecisionHead

TEXTS = ["张三在北京工作。", "今天天气很好。", "我和张三明天去北京。"]


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_tokenizer):
    return build_answering_run(tmp_path_factory.mktemp("autocast"), tiny_tokenizer)


def _open(run, autocast: str):
    load = LoadOptions(model=str(run), device="cpu", autocast=autocast)  # type: ignore[arg-type]
    return open_predictor(load, decoding_options(load, {"batch_size": 2}))


def test_bf16_runs_the_blocks_in_bf16_and_the_head_in_fp32(run):
    predictor = _open(run, "bf16")
    assert predictor.autocast == torch.bfloat16
    head = predictor.model.get_output_embeddings()
    assert isinstance(head, FullPrecisionHead)
    seen: dict[str, torch.dtype] = {}

    def watch(name):
        def hook(module, args, out):
            seen.setdefault(name, out.dtype)  # returns None: the output is left as it is
        return hook

    hooks = [predictor.model.model.layers[0].mlp.register_forward_hook(watch("block")),
             head.register_forward_hook(watch("head"))]
    try:
        bf16 = predictor.predict_detailed(TEXTS)
    finally:
        for h in hooks:
            h.remove()
    assert seen == {"block": torch.bfloat16, "head": torch.float32}
    fp32 = _open(run, "off").predict_detailed(TEXTS)
    assert [p.entities for p in bf16] == [p.entities for p in fp32]  # the answering run says the same either way
    assert any(p.entities for p in fp32)


def test_off_leaves_the_model_as_loaded(run):
    predictor = _open(run, "off")
    assert predictor.autocast is None
    assert not isinstance(predictor.model.get_output_embeddings(), FullPrecisionHead)


def test_auto_follows_the_measured_speedup_and_skips_tiny_models(run):
    model = _open(run, "off").model
    assert inference_autocast("auto", model) is None  # tiny: under AUTOCAST_MIN_PARAMETERS, never measured
    assert inference_autocast("auto", model, speedup=lambda: 2.0, min_parameters=0) == torch.bfloat16
    assert inference_autocast("auto", model, speedup=lambda: 1.1, min_parameters=0) is None
    assert inference_autocast("off", model, speedup=lambda: 2.0, min_parameters=0) is None
    assert inference_autocast("bf16", model) == torch.bfloat16


def test_predict_cli_takes_autocast(run, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"id": str(i), "text": t}, ensure_ascii=False) + "\n"
                           for i, t in enumerate(TEXTS)), encoding="utf-8")
    outs = {}
    for setting in ("bf16", "off"):
        out = tmp_path / f"{setting}.jsonl"
        assert main(["predict", "--model", str(run), "--input", str(src), "--output", str(out), "--device", "cpu",
                     "--autocast", setting]) == 0
        outs[setting] = [[(e["start"], e["end"], e["label"]) for e in json.loads(line)["entities"]]
                         for line in out.read_text(encoding="utf-8").splitlines()]
    assert outs["bf16"] == outs["off"] and any(outs["off"])  # the same entities; scores differ in the last digits
    with pytest.raises(SystemExit):
        main(["predict", "--model", str(run), "--input", str(src), "--output", str(tmp_path / "x.jsonl"),
              "--autocast", "fp8"])


def test_linear_weights_are_stored_in_bf16_once_and_answer_as_casting_each_call(run):
    """A frozen predictor under autocast keeps its blocks' linear weights in bf16 (autocast would recast fp32
    weights at every call); the head and the embeddings stay fp32, and the logits are bit for bit autocast's."""
    from nerft.generation import prompt_ids

    predictor = _open(run, "bf16")
    model = predictor.model
    assert model.model.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert model.model.layers[0].self_attn.q_proj.bias.dtype == torch.bfloat16
    assert model.get_output_embeddings().weight.dtype == torch.float32
    assert model.get_input_embeddings().weight.dtype == torch.float32
    plain = _open(run, "off").model  # fp32 weights, cast by autocast at each call
    ids = torch.tensor([prompt_ids(predictor.tokenizer, predictor.prompt, TEXTS[0])])
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        stored = model(input_ids=ids).logits
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        plain.set_output_embeddings(FullPrecisionHead(plain.get_output_embeddings()))
        cast_each_call = plain(input_ids=ids).logits
    assert torch.equal(stored, cast_each_call)


def test_continuous_decoding_under_autocast_answers_as_predict(run):
    predictor = _open(run, "bf16")
    bulk = predictor.predict_detailed(TEXTS)
    decoder = predictor.continuous(max_rows=2, max_positions=100_000)
    got = {i: p for _, i, p in decoder.admit("caller", list(TEXTS), None)}
    while decoder.busy:
        got.update((i, p) for _, i, p in decoder.step())
    assert [got[i].answers for i in range(len(TEXTS))] == [p.answers for p in bulk]
    assert any(p.entities for p in bulk)
