"""Base models beyond Qwen2: Qwen3 (per-head q/k norms, a head size that is not hidden / heads) and Llama (its
rotary layout differs in llama.cpp), tiny and random, built here. Each trains through nerft's own loop (the
generative task and the tagger), predicts, and reaches the engines: CTranslate2's export gives the transformers
answers; the GGUF export reads back (transformers' GGUF loader) into the merged model's logits, and llama.cpp
itself answers as the transformers backend does. Engines not installed skip, saying which extra to install."""

from __future__ import annotations

import importlib.util
import json

import pytest
from helpers_engines import build_answering_run
from nerft_helpers import save_base_model, tiny_recipe, write_splits
from test_engines import TEXTS, assert_same, export

from nerft import config as cfglib
from nerft.inference.loading import load_predictor

ARCHS = ["qwen3", "llama"]


@pytest.fixture(scope="module", params=ARCHS)
def answering(request, tmp_path_factory, tiny_tokenizer):
    """(arch, a run of that base that answers with entities, the transformers backend's predictions of TEXTS)."""
    run = build_answering_run(tmp_path_factory.mktemp(f"answering-{request.param}"), tiny_tokenizer,
                              arch=request.param)
    return request.param, run, load_predictor(run, batch_size=2).predict_detailed(TEXTS)


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("task", ["generate", "tag"])
def test_nerft_train_runs_on_the_base_and_its_run_predicts(arch, task, tmp_path, tiny_tokenizer):
    from nerft.train import TrainConfig, train

    base = save_base_model(tmp_path / "base", tiny_tokenizer, arch=arch)
    recipe = tiny_recipe(base, write_splits(tmp_path / "data"), tmp_path / "run", optim__max_steps=2,
                         eval__every=2)
    recipe["task"] = task
    if task == "tag":
        recipe["tagger"] = {"max_length": 32}
    run = train(cfglib.from_dict(TrainConfig, recipe))
    assert json.loads((run / "metrics.json").read_text())["train"]["steps"] == 2
    assert json.loads((base / "config.json").read_text())["model_type"] == arch
    texts = ["张三在北京工作。", "今天天气很好。"]
    found = load_predictor(run, max_new_tokens=8).predict(texts)  # random weights: any grounded entities
    assert len(found) == 2 and all(text[e.start:e.end] == e.text for text, ents in zip(texts, found, strict=True)
                                   for e in ents)


def test_the_answering_runs_answer(answering):
    """The engine comparisons below are not vacuous: each base's run writes grounded entities."""
    _, _, reference = answering
    assert [[e.text for e in p.entities] for p in reference] == [["张三", "北京"], ["张三", "北京"], [], ["北京"]]


def test_ct2_gives_the_transformers_answers(answering, tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is not installed (pip install 'nerft[ct2]')")
    arch, run, reference = answering
    folder = export(run, tmp_path_factory, "ct2", "float32")
    assert_same(load_predictor(folder, backend="ct2", batch_size=2).predict_detailed(TEXTS), reference, 1e-4)


def test_gguf_reads_back_into_the_merged_logits_and_llama_cpp_answers_the_same(answering, tmp_path_factory,
                                                                                tiny_tokenizer):
    gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'nerft[gguf]')")
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nerft.export import export_model
    from nerft.inference.options import LoadOptions

    arch, run, reference = answering
    folder = export(run, tmp_path_factory, "gguf", "f32")
    fields = {k: f.contents() for k, f in gguf.GGUFReader(folder / "model-f32.gguf").fields.items()}
    assert fields["general.architecture"] == arch and fields["tokenizer.ggml.pre"] == "qwen2"
    merged = export_model(LoadOptions(model=str(run)), tmp_path_factory.mktemp(f"hf-{arch}") / "merged")
    config = AutoConfig.from_pretrained(merged)
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    assert fields[f"{arch}.attention.key_length"] == head == fields[f"{arch}.rope.dimension_count"]
    ids = torch.tensor([tiny_tokenizer.encode("张三在北京工作。")])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        # the merged config given: transformers' GGUF reader derives Qwen3's head size from hidden / heads (the
        # GGUF's key_length, which llama.cpp reads, is checked above); tensors, names and Llama's permutation
        # are what this compares
        got = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model-f32.gguf", config=config)(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed (pip install 'nerft[llamacpp]'): the GGUF was read back, "
                    "not run")
    f16 = export(run, tmp_path_factory, "gguf", "f16")
    assert_same(load_predictor(f16, backend="llamacpp").predict_detailed(TEXTS), reference, 2e-2)


def test_a_llama_tokenizer_split_is_written_as_llama_bpe():
    """llama.cpp pre-tokenises by name: a tokenizer that splits as Llama 3's (digits in threes) is ``llama-bpe``,
    Qwen2's split (one digit a piece) and nerft's own ``qwen2``."""
    from tiny_tokenizer import QWEN2_SPLIT, build_tiny_qwen2_tokenizer
    from tokenizers import Regex, pre_tokenizers

    from nerft.export.gguf_file import LLAMA3_SPLIT, _pipeline, _pre_tokenizer

    tok = build_tiny_qwen2_tokenizer()
    assert _pre_tokenizer(_pipeline(tok)) == "qwen2" and LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}") == QWEN2_SPLIT
    tok.backend_tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_SPLIT), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)])
    assert _pre_tokenizer(_pipeline(tok)) == "llama-bpe"


def test_rope_scaling_nerft_does_not_write_is_refused_in_one_line(tmp_path):
    import json

    from nerft.export.gguf_file import write_gguf
    from nerft.schema import NerftError

    pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'nerft[gguf]')")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "rope_scaling": {
        "rope_type": "llama3", "factor": 32.0}}))
    with pytest.raises(NerftError, match="'llama3' rope scaling"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gemma"}))
    with pytest.raises(NerftError, match="writes qwen2, qwen3, llama models"):
        write_gguf(tmp_path, tmp_path / "x.gguf")
