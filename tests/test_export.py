import json

import pytest
from helpers_models import shared_run_dir

from nerft import cli
from nerft.export import export_merged
from nerft.predict import TransformersPredictor, load_model_and_tokenizer, load_predictor
from nerft.rundir import RunInfo
from nerft.schema import NerftError

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错"]


def test_export_round_trip(qwen2_tokenizer, tmp_path):
    run = shared_run_dir(qwen2_tokenizer)
    out = tmp_path / "merged"
    assert cli.main(["export", "--model", str(run), "--output", str(out)]) == 0
    names = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "generation_config.json", "tokenizer.json", "nerft.json"} <= names
    assert not any(n.startswith(".") for n in (p.name for p in tmp_path.iterdir()))  # no temp folder left
    info = RunInfo.load(out)
    assert info.merged and info.base_model is None and info.prompt == RunInfo.load(run).prompt
    config = json.loads((out / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForCausalLM"]

    # plain transformers loads it, and it predicts exactly what base + adapter predicts
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(out) is not None
    merged = load_predictor(out, max_new_tokens=10)
    lm, tok, labels, prompt, _ = load_model_and_tokenizer(run, merge=False)  # a live PeftModel, LoRA unmerged
    adapted = TransformersPredictor.from_model(lm, tok, labels, prompt, max_new_tokens=10)
    assert type(lm).__name__.startswith("Peft")
    assert merged.predict(TEXTS) == adapted.predict(TEXTS)
    assert merged.last_raw == adapted.last_raw

    with pytest.raises(NerftError, match="exists"):
        export_merged(run, out)
    with pytest.raises(NerftError, match="already a merged folder"):
        export_merged(out, tmp_path / "again")
