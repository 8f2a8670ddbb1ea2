"""Every run reopens: trained from a hub id (served from a local HF cache, offline), from a ``~`` path, from a
relative path and opened from another folder, by predict, export and serve, without --base. Plus the README's
real-recipe block run command by command with a tiny model in place of the 1.5B one, and --help of every command."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from nerft_helpers import sample_docs, save_base_model, tiny_recipe, write_splits

from nerft import cli
from nerft import config as cfglib
from nerft.inference.loading import load_predictor
from nerft.inference.location import locate_model
from nerft.inference.options import LoadOptions
from nerft.modeling import canonical_dtype
from nerft.rundir import BaseModelRef, RunInfo
from nerft.schema import NerftError
from nerft.train import TrainConfig, train

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["张三在北京工作。", "李四去了上海"]
HUB_ID = "nerft-test/tiny-qwen2"
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _quick_run(base: str, splits: dict[str, str], out: Path, **over) -> Path:
    recipe = tiny_recipe(base, splits, out, optim__max_steps=1, eval__every=0, data__dev=None, **over)
    return train(cfglib.from_dict(TrainConfig, recipe))


@pytest.fixture(scope="module")
def splits(tmp_path_factory):
    return write_splits(tmp_path_factory.mktemp("data"), n_train=8, n_dev=2)


def _answers(run: Path) -> list[list[tuple]]:
    p = load_predictor(run, device="cpu", max_new_tokens=4)
    return [[(e.start, e.end, e.label) for e in ents] for ents in p.predict(TEXTS)]


def test_a_run_from_a_tilde_path_records_the_absolute_path_and_reopens_anywhere(tiny_tokenizer, splits, tmp_path,
                                                                               monkeypatch):
    home = tmp_path / "home"
    save_base_model(home / "models" / "base", tiny_tokenizer)
    monkeypatch.setenv("HOME", str(home))
    run = _quick_run("~/models/base", splits, tmp_path / "run")
    assert RunInfo.load(run).base_model == BaseModelRef(str((home / "models" / "base").resolve()))
    before = _answers(run)
    monkeypatch.setenv("HOME", str(tmp_path / "elsewhere"))  # ~ now means something else: the run does not care
    monkeypatch.chdir(tmp_path)
    assert _answers(run) == before


def test_a_run_from_a_relative_path_reopens_from_another_folder(tiny_tokenizer, splits, tmp_path, monkeypatch):
    project = tmp_path / "project"
    save_base_model(project / "base", tiny_tokenizer)
    monkeypatch.chdir(project)
    run = _quick_run("base", splits, Path("runs/r"))
    assert RunInfo.load(run).base_model.name_or_path == str((project / "base").resolve())
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    run = project / "runs" / "r"
    assert _answers(run)  # predict
    assert cli.main(["export", "--model", str(run), "--output", "merged"]) == 0  # export
    assert RunInfo.load(elsewhere / "merged").merged
    # serve opens its predictor through open_predictor from the same LoadOptions
    from nerft.inference.loading import open_predictor
    from nerft.inference.options import PredictOptions

    served = open_predictor(LoadOptions(model=str(run), device="cpu"), PredictOptions(max_new_tokens=4))
    assert [[(e.start, e.end, e.label) for e in ents] for ents in served.predict(TEXTS)] == _answers(run)


def test_a_run_written_with_a_relative_base_string_still_reopens(tiny_tokenizer, splits, tmp_path, monkeypatch):
    """Runs from before nerft recorded absolute paths store the base as the path given to train."""
    project = tmp_path / "project"
    save_base_model(project / "runs" / "demo" / "base-model", tiny_tokenizer)
    monkeypatch.chdir(project)
    run = _quick_run("runs/demo/base-model", splits, Path("runs/demo/run"))
    info = json.loads((run / "nerft.json").read_text())
    info["base_model"] = "runs/demo/base-model"  # the old layout: a plain relative string
    (run / "nerft.json").write_text(json.dumps(info))
    monkeypatch.chdir(tmp_path)
    where = locate_model(LoadOptions(model=str(project / run)))
    assert Path(where.weights.name_or_path).resolve() == (project / "runs" / "demo" / "base-model").resolve()


def _hub_cache(root: Path, tokenizer) -> Path:
    """A Hugging Face cache holding HUB_ID at COMMIT (what a first online download leaves behind)."""
    repo = root / "hub" / ("models--" + HUB_ID.replace("/", "--"))
    snapshot = repo / "snapshots" / COMMIT
    save_base_model(snapshot, tokenizer)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    return root


def _nerft(args: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nerft", *args], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


@pytest.mark.integration
def test_a_run_from_a_hub_id_reopens_offline_from_the_cache(tiny_tokenizer, splits, tmp_path):
    hf_home = _hub_cache(tmp_path / "hf", tiny_tokenizer)
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trained = _nerft(["train", "--model", HUB_ID, "--train", splits["train"], "--labels", splits["labels"],
                      "--out", "run", "--max-steps", "1", "--optim.batch-size", "4", "--optim.grad-accum", "1",
                      "--tracking.backend", "none", "--model.device", "cpu"], tmp_path / "a", env)
    assert trained.returncode == 0, trained.stderr[-2000:]
    run = tmp_path / "a" / "run"
    base = json.loads((run / "nerft.json").read_text())["base_model"]
    assert base == {"name_or_path": HUB_ID, "revision": COMMIT, "gguf_file": None}
    predicted = _nerft(["predict", "--model", str(run), "--json", "--max-new-tokens", "4", *TEXTS], tmp_path / "b", env)
    assert predicted.returncode == 0, predicted.stderr[-2000:]
    assert [json.loads(x)["text"] for x in predicted.stdout.splitlines()] == TEXTS
    exported = _nerft(["export", "--model", str(run), "--out", "merged"], tmp_path / "b", env)
    assert exported.returncode == 0, exported.stderr[-2000:]
    assert RunInfo.load(tmp_path / "b" / "merged").merged_from["base_model"] == HUB_ID
    # without the cache the same run fails in one line, naming the model, not with a traceback
    gone = _nerft(["predict", "--model", str(run), "x"], tmp_path / "b", {**env, "HF_HOME": str(tmp_path / "empty")})
    assert gone.returncode == 2 and gone.stderr.startswith("nerft predict: error:") and HUB_ID in gone.stderr
    assert "Traceback" not in gone.stderr


def test_base_overrides_the_recorded_model(tiny_tokenizer, splits, tmp_path):
    save_base_model(tmp_path / "base", tiny_tokenizer)
    run = _quick_run(str(tmp_path / "base"), splits, tmp_path / "run")
    moved = tmp_path / "moved"
    (tmp_path / "base").rename(moved)
    with pytest.raises(NerftError, match="does not exist"):
        load_predictor(run, device="cpu")
    assert len(load_predictor(run, base=moved, device="cpu", max_new_tokens=2).predict(["张三"])) == 1


@pytest.mark.parametrize("spelling, canonical", [("auto", "auto"), ("fp32", "fp32"), ("float32", "fp32"),
                                                 ("torch.float32", "fp32"), ("bf16", "bf16"), ("bfloat16", "bf16"),
                                                 ("FP16", "fp16"), ("float16", "fp16"), ("half", "fp16")])
def test_one_dtype_vocabulary(spelling, canonical):
    assert canonical_dtype(spelling) == canonical


def test_dtype_flags_everywhere(tiny_tokenizer, splits, tmp_path, capsys):
    save_base_model(tmp_path / "base", tiny_tokenizer)
    run = _quick_run(str(tmp_path / "base"), splits, tmp_path / "run")
    assert cli.main(["predict", "--model", str(run), "--dtype", "bf16", "--max-new-tokens", "2", "--json", "x"]) == 0
    assert cli.main(["predict", "--model", str(run), "--dtype", "float32", "--max-new-tokens", "2", "x"]) == 0
    capsys.readouterr()
    assert cli.main(["predict", "--model", str(run), "--dtype", "fp8", "x"]) == 2
    assert capsys.readouterr().err.startswith("nerft predict: error: unknown dtype 'fp8'")


@pytest.mark.parametrize("command", list(cli.COMMANDS))
def test_every_command_answers_help(command, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert "usage: nerft " + command in capsys.readouterr().out


def _readme_block() -> list[list[str]]:
    text = (REPO / "README.md").read_text(encoding="utf-8")
    block = re.search(r"The real recipe is the same pipeline.*?```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line.split("  #")[0]) for line in block.splitlines() if line.startswith("nerft ")]


@pytest.mark.integration
def test_the_readme_real_recipe_runs_as_written(tiny_tokenizer, tmp_path, monkeypatch, capsys):
    """Each command of the README's block through the CLI, in a fresh folder, with two substitutions: a small
    generated corpus (in the chinese_ner_sft layout of ../shared's CCFBDCI) and a tiny model (flags appended)."""
    commands = _readme_block()
    assert [c[1] for c in commands] == ["prepare", "train", "evaluate", "predict"]
    corpus = tmp_path / "ccfbdci.jsonl"
    corpus.write_text("".join(json.dumps({"text": d.text, "data_source": "CCFBDCI", "entities": [
        {"start_idx": e.start, "end_idx": e.end, "entity_text": e.text, "entity_label": e.label}
        for e in d.entities]}, ensure_ascii=False) + "\n" for d in sample_docs(60)), encoding="utf-8")
    base = save_base_model(tmp_path / "tiny-base", tiny_tokenizer)
    tiny = ["--model", str(base), "--model.dtype", "fp32", "--model.device", "cpu", "--max-steps", "2",
            "--optim.batch-size", "4", "--optim.grad-accum", "1", "--no-optim.gradient-checkpointing",
            "--eval.every", "2", "--eval.dev-docs", "4", "--eval.max-new-tokens", "8", "--tracking.backend", "none",
            "--output.save-every", "0"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    for argv in commands:
        args = [str(corpus) if a == "../shared/data/ccfbdci/ccfbdci.jsonl" else a for a in argv[1:]]
        if args[0] == "train":
            args += tiny
        if args[0] == "predict":
            args += ["--max-new-tokens", "8"]
        assert cli.main(args) == 0, (args, capsys.readouterr().err[-2000:])
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert "菲律宾总统" in capsys.readouterr().out  # predict printed its table
