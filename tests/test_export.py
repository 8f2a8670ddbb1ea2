import json

import pytest
from helpers_models import shared_run_dir

from nerft import cli
from nerft.export import export_merged
from nerft.inference.loading import load_model_and_tokenizer, load_predictor
from nerft.inference.options import LoadOptions, PredictOptions
from nerft.inference.transformers_backend import TransformersPredictor
from nerft.rundir import RunInfo
from nerft.schema import NerftError

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错"]


def test_export_round_trip(tiny_tokenizer, tmp_path):
    run = shared_run_dir(tiny_tokenizer)
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

    plain = AutoModelForCausalLM.from_pretrained(out)
    assert type(plain).__name__ == "Qwen2ForCausalLM" and not hasattr(plain, "peft_config")
    merged = load_predictor(out, max_new_tokens=10)
    loaded = load_model_and_tokenizer(LoadOptions(model=str(run)), merge=False)  # a live PeftModel, LoRA unmerged
    adapted = TransformersPredictor(loaded.model, loaded.tokenizer, loaded.labels, loaded.prompt,
                                    PredictOptions(max_new_tokens=10))
    assert type(loaded.model).__name__.startswith("Peft")
    assert merged.predict_detailed(TEXTS) == adapted.predict_detailed(TEXTS)
    # a plain transformers generate over the exported folder writes the same answer as nerft's own loop
    from nerft.generation import prompt_ids

    ids = prompt_ids(loaded.tokenizer, loaded.prompt, TEXTS[0])
    import torch

    generated = plain.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False)[0, len(ids):].tolist()
    stops = set(plain.generation_config.eos_token_id)
    tok = loaded.tokenizer  # the exported generation config stops where nerft does: <|im_end|> and <|endoftext|>
    assert stops == {tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")}
    cut = next((k for k, t in enumerate(generated) if t in stops), len(generated))
    assert loaded.tokenizer.decode(generated[:cut], skip_special_tokens=True) == \
        merged.predict_detailed(TEXTS[:1])[0].answers[0]

    with pytest.raises(NerftError, match="exists"):
        export_merged(run, out)
    with pytest.raises(NerftError, match="already a merged folder"):
        export_merged(out, tmp_path / "again")


@pytest.mark.parametrize("fmt", ["hf", "ct2", "gguf"])
@pytest.mark.parametrize("where", ["run", "parent", "inside", "base"])
def test_an_export_onto_its_own_inputs_is_refused_and_deletes_nothing(tiny_tokenizer, tmp_path, capsys, fmt, where):
    from helpers_models import build_run_dir

    run = build_run_dir(tmp_path / "w", tiny_tokenizer)
    out = {"run": run, "parent": run.parent, "inside": run / "export", "base": run.parent / "base"}[where]
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    code = cli.main(["export", "--model", str(run), "--output-format", fmt, "--out", str(out), "--overwrite"])
    assert code == 2
    message = capsys.readouterr().err
    assert "apart from every input" in message and str(out) in message
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # the run and its base intact
