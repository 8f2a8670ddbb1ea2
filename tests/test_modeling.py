"""Model builders: sources, dtype, LoRA config, clear errors."""

from __future__ import annotations

import pytest
import torch
from nerft_helpers import char_tokenizer, save_base_model

from nerft.modeling import (
    TUTORIAL_TARGET_MODULES,
    LoraSettings,
    ModelConfig,
    add_lora,
    build_lora,
    load_model,
    load_tokenizer,
    resolve_autocast,
    resolve_dtype,
    resolve_source,
)
from nerft.schema import NerftError


def test_lora_defaults_are_the_tutorials():
    cfg = build_lora(LoraSettings())
    assert (cfg.r, cfg.lora_alpha, cfg.lora_dropout) == (8, 32, 0.1)
    assert set(cfg.target_modules) == set(TUTORIAL_TARGET_MODULES) and len(TUTORIAL_TARGET_MODULES) == 7
    assert cfg.task_type == "CAUSAL_LM" and not cfg.inference_mode


def test_top_layers_picks_the_last_layers_and_needs_the_layer_count():
    assert build_lora(LoraSettings(top_layers=8), num_layers=24).layers_to_transform == list(range(16, 24))
    assert build_lora(LoraSettings()).layers_to_transform is None
    with pytest.raises(NerftError, match="number of layers"):
        build_lora(LoraSettings(top_layers=8))
    with pytest.raises(NerftError, match="choose 1-24"):
        build_lora(LoraSettings(top_layers=0), num_layers=24)


def test_autocast_auto_follows_the_measured_cpu_speedup():
    cpu = torch.device("cpu")
    assert resolve_autocast("off", cpu, torch.float32)[0] is None
    assert resolve_autocast("bf16", cpu, torch.float32)[0] == torch.bfloat16
    fast, note = resolve_autocast("auto", cpu, torch.float32, speedup=lambda: 2.2)
    assert fast == torch.bfloat16 and "2.20x faster" in note
    slow, note = resolve_autocast("auto", cpu, torch.float32, speedup=lambda: 0.5)
    assert slow is None and "0.50x" in note
    assert resolve_autocast("bf16", cpu, torch.bfloat16) == (None, "off: the weights are already bfloat16")


def test_auto_dtype_is_fp32_on_cpu():
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16
    assert resolve_dtype("fp16", torch.device("cpu")) == torch.float16


def test_sources(tmp_path):
    assert resolve_source(ModelConfig()) == ("Qwen/Qwen2-1.5B-Instruct", None)  # a hub id is left to transformers
    gguf = tmp_path / "qwen.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_source(ModelConfig(name_or_path=str(gguf))) == (str(tmp_path), gguf.name)
    assert resolve_source(ModelConfig(name_or_path=str(tmp_path), gguf_file="x.gguf")) == (str(tmp_path), "x.gguf")
    with pytest.raises(NerftError, match="does not exist"):
        resolve_source(ModelConfig(name_or_path=str(tmp_path / "missing" / "model")))
    with pytest.raises(NerftError, match="does not exist"):
        resolve_source(ModelConfig(name_or_path=str(tmp_path / "missing.gguf")))


def test_modelscope_source_needs_the_extra(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_modelscope(name, *args, **kwargs):
        if name == "modelscope":
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_modelscope)
    with pytest.raises(NerftError, match="nerft\\[modelscope\\]"):
        resolve_source(ModelConfig(name_or_path="modelscope:qwen/Qwen2-1.5B-Instruct"))


def test_load_local_folder_and_wrap_with_lora(tmp_path):
    tok = char_tokenizer()
    folder = save_base_model(tmp_path / "base", tok)
    cfg = ModelConfig(name_or_path=str(folder), device="cpu")
    assert len(load_tokenizer(cfg)) == len(tok)
    model = load_model(cfg)
    assert next(model.parameters()).dtype == torch.float32 and not model.training
    peft_model = add_lora(model, LoraSettings(r=4), gradient_checkpointing=True)
    trainable = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    assert peft_model.get_base_model().is_gradient_checkpointing


def test_qlora_needs_a_gpu(tmp_path):
    folder = save_base_model(tmp_path / "base", char_tokenizer())
    with pytest.raises(NerftError, match="CUDA"):
        load_model(ModelConfig(name_or_path=str(folder), device="cpu", load_in_4bit=True))


def test_missing_cuda_is_a_user_error():
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(NerftError, match="no CUDA"):
        load_model(ModelConfig(device="cuda"))


def test_a_custom_tokenizer_beside_a_qwen2_config_loads_as_itself(tmp_path):
    # transformers 5 maps a qwen2 config.json to Qwen2Tokenizer, which rebuilt the demo's character tokenizer as a
    # byte-level BPE that encoded every text to no tokens at all.
    from nerft.inference.loading import load_model_and_tokenizer
    from nerft.inference.options import LoadOptions

    tok = char_tokenizer()
    folder = save_base_model(tmp_path / "base", tok)
    text = "张三在北京。 a b\nc"
    for loaded in (load_tokenizer(ModelConfig(name_or_path=str(folder))),
                   load_model_and_tokenizer(LoadOptions(base=str(folder), device="cpu")).tokenizer):
        assert loaded.encode(text, add_special_tokens=False) == tok.encode(text, add_special_tokens=False)
        assert len(loaded) == len(tok) and loaded.pad_token == "<|endoftext|>"


def test_the_body_of_an_untied_causal_lm_loads_without_a_report_but_a_missing_weight_is_still_reported(tmp_path):
    """The tagger reads the body only: a checkpoint's own lm_head is left out without transformers' loading report
    naming it (printed at every tagger load before), while a weight the body lacks is still reported."""
    import logging

    from safetensors.torch import load_file, save_file
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    config = Qwen2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, tie_word_embeddings=False)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "untied")
    reports: list[str] = []
    handler = logging.Handler(logging.DEBUG)
    handler.emit = lambda record: reports.append(record.getMessage())
    hf_logger, verbosity = hf_logging.get_logger("transformers"), hf_logging.get_verbosity()
    hf_logger.addHandler(handler)
    hf_logging.set_verbosity_warning()  # as a fresh process has it
    try:
        cfg = ModelConfig(name_or_path=str(tmp_path / "untied"), dtype="fp32", device="cpu")
        body = load_model(cfg, lm_head=False)
        assert type(body).__name__ == "Qwen2Model" and not hasattr(body, "lm_head")
        assert not any("lm_head" in r for r in reports), reports
        weights = load_file(str(tmp_path / "untied" / "model.safetensors"))
        del weights["model.norm.weight"]
        save_file(weights, str(tmp_path / "untied" / "model.safetensors"), metadata={"format": "pt"})
        load_model(cfg, lm_head=False)
        assert any("norm.weight" in r for r in reports) and not any("lm_head" in r for r in reports), reports
    finally:
        hf_logger.removeHandler(handler)
        hf_logging.set_verbosity(verbosity)
