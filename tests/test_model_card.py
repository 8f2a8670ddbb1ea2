"""``nerft export`` writes a model card (README.md) that says what the model is and how to run it, and whose
transformers example, run as printed, writes the answer nerft's predictor writes; ``--push-to-hub`` fails with one
line when the hub cannot be reached (offline, no token, no network)."""

import json
import re
import shutil
import socket

import pytest
import yaml
from helpers_models import shared_run_dir

from nerft import cli
from nerft.config import to_dict
from nerft.export.model_card import model_card, push_to_hub
from nerft.inference.loading import load_predictor
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.rundir import RunInfo
from nerft.schema import NerftError
from nerft.train.config import TrainConfig

TEXT = "张三在上海工作，他喜欢华为公司。"
METRICS = {"train": {"steps": 6, "total_steps": 6, "examples": 120, "supervised_tokens": 4321, "seconds": 95.0,
                     "finished": True, "world_size": 1, "train_seconds": 90.0, "stopped_by": "steps"},
           "dev": {"best_f1": 58.25, "best_step": 4},
           "test": {"precision": 70.1, "recall": 55.2, "f1": 61.77, "parse_failures": 0, "hallucinated": 2,
                    "docs": 300}}


def code_blocks(card: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", card, flags=re.S)


def front_matter(card: str) -> dict:
    return yaml.safe_load(card.split("---\n")[1])


@pytest.fixture
def run_with_records(tiny_tokenizer, tmp_path):
    """A copy of the tiny run directory with the config.yaml and metrics.json that train writes."""
    run = tmp_path / "run"
    shutil.copytree(shared_run_dir(tiny_tokenizer), run)
    cfg = TrainConfig()
    cfg.data.train, cfg.data.dev, cfg.data.test = "/data/ccfbdci/train.jsonl", "/data/ccfbdci/dev.jsonl", \
        "/data/ccfbdci/test.jsonl"
    cfg.lora.r, cfg.lora.alpha, cfg.lora.target_modules = 4, 8, ["q_proj", "v_proj"]
    cfg.optim.max_steps, cfg.optim.lr = 6, 2e-4
    (run / "config.yaml").write_text(yaml.safe_dump(to_dict(cfg), allow_unicode=True), encoding="utf-8")
    (run / "metrics.json").write_text(json.dumps(METRICS), encoding="utf-8")
    return run


def test_export_writes_a_card_whose_examples_run(run_with_records, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "exported"
    code = cli.main(["export", "--model", str(run_with_records), "--output", str(out), "--push-to-hub",
                     "someone/tiny-ner", "--private"])
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith("nerft export:")]
    assert code == 2 and errors == [err.rstrip().splitlines()[-1]] and "HF_HUB_OFFLINE" in errors[0]  # one line ...
    assert "Traceback" not in err
    card = (out / "README.md").read_text(encoding="utf-8")  # ... after the folder is complete

    info = RunInfo.load(run_with_records)
    base = info.base_model.name_or_path
    assert front_matter(card)["library_name"] == "transformers"
    assert "base_model" not in front_matter(card)  # a local folder is no hub id ...
    assert base not in card and "a local model folder `base`" in card  # ... and its path is not published
    for lab in info.labels.labels:
        assert f"| {lab.code} | {lab.name} |" in card
    assert info.prompt.system in code_blocks(card, "text")[0]
    assert "the text itself" in card and "`compact`" in card
    assert "人名:<mention>" in code_blocks(card, "text")[1]  # an example answer in the model's format
    assert "train `train.jsonl`, dev `dev.jsonl`, test `test.jsonl`" in card
    assert "120 training examples, 6 optimizer steps, 4,321 supervised tokens, 1.5 minutes" in card
    assert "LoRA r=4, alpha=8" in card and "learning rate 0.0002" in card and "6 steps" in card
    assert "| test | 70.10 | 55.20 | 61.77 | 300 |" in card and "| dev (best, step 4) | | | 58.25 | |" in card
    assert "huggingface-cli download someone/tiny-ner --local-dir ner-model" in card
    assert "vllm serve someone/tiny-ner --served-model-name ner" in card

    # the transformers example, run as printed on the exported folder, writes the answer nerft's predictor writes
    [transformers_code, vllm_code] = code_blocks(card, "python")
    compile(vllm_code, "vllm example", "exec")
    runnable = transformers_code.replace('model_id = "someone/tiny-ner"', f"model_id = {json.dumps(str(out))}") \
        .replace('text = "……"', f"text = {json.dumps(TEXT, ensure_ascii=False)}")
    assert runnable.count(str(out)) == 1 and TEXT in runnable
    namespace: dict = {}
    exec(runnable, namespace)
    [prediction] = load_predictor(out, device="cpu").predict_detailed([TEXT])
    assert len(prediction.answers[0]) > 5
    assert namespace["answer"].startswith(prediction.answers[0].rstrip("\ufffd"))  # nerft may stop earlier


def test_card_of_a_run_without_records_names_the_hub_base():
    labels = ccfbdci_labels()
    card = model_card(labels, build_prompt(labels, "tutorial", "tutorial"), model_id="someone/ner",
                      merged_from={"base_model": "Qwen/Qwen2-1.5B-Instruct", "revision": "abc123", "adapter": "/x"})
    assert front_matter(card)["base_model"] == "Qwen/Qwen2-1.5B-Instruct"
    assert "`Qwen/Qwen2-1.5B-Instruct` (revision `abc123`)" in card
    assert "Not recorded" in card and "## Scores" not in card
    assert "`文本:` followed by the text" in card and "`没有找到任何实体`" in card
    assert '"content": "文本:" + text' in code_blocks(card, "python")[0]


def test_push_without_a_token_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"))
    with pytest.raises(NerftError, match="needs a Hugging Face token with write access: set HF_TOKEN") as err:
        push_to_hub(tmp_path, "someone/ner")
    assert "\n" not in str(err.value)


def test_push_to_an_unreachable_hub_is_one_line(monkeypatch, tmp_path):
    import huggingface_hub.constants

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", f"http://127.0.0.1:{port}")
    (tmp_path / "README.md").write_text("card")
    with pytest.raises(NerftError, match="as someone/ner failed: .*retry with `huggingface-cli upload") as err:
        push_to_hub(tmp_path, "someone/ner")
    assert "\n" not in str(err.value)
