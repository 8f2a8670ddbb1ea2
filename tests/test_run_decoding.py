"""The decoding ``nerft train`` chooses on dev at its end (RUN/decoding.yaml): recorded, used by default by predict,
evaluate --score-with and export, overridden by --config and flags, ignored with --no-run-decoding, re-chosen on
--resume, skipped with --no-tune. The tiny run's own answers hold no entity, so its lexicon is what the choice adds:
the default path and the as-answered path really differ."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from nerft_helpers import char_tokenizer, save_base_model, tiny_recipe, write_splits

from nerft import cli
from nerft import config as cfglib
from nerft.inference.location import decoding_options, locate_model, read_decoding
from nerft.inference.options import LoadOptions
from nerft.jsonl import iter_jsonl
from nerft.lexicon import LEXICON_FILE
from nerft.rundir import DECODING_FILE, RunInfo
from nerft.schema import NerftError
from nerft.train import TrainConfig, train


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("decoding")
    base = save_base_model(root / "base", char_tokenizer())
    return base, write_splits(root / "data", n_train=24, n_dev=8), root


def recipe(data, out: Path, **over) -> dict:
    base, splits, _ = data
    return tiny_recipe(base, {**splits, "test": splits["dev"]}, out, **over)


@pytest.fixture(scope="module")
def run(data):
    return train(cfglib.from_dict(TrainConfig, recipe(data, data[2] / "run")))


def predict(model: Path, dev: str, out: Path, *flags: str) -> list:
    assert cli.main(["predict", "--model", str(model), "--input", dev, "--output", str(out), "--no-progress",
                     *flags]) == 0
    return [obj["entities"] for _, obj in iter_jsonl(out)]


def test_the_run_decoding_is_recorded_and_is_what_predict_and_evaluate_use_by_default(run, data, tmp_path,
                                                                                        capsys):
    dev = data[1]["dev"]
    chosen = yaml.safe_load((run / DECODING_FILE).read_text(encoding="utf-8"))
    record = RunInfo.load(run).decoding
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert chosen["lexicon"] == LEXICON_FILE  # named from the run folder: it reopens from anywhere
    assert record["options"] == chosen == metrics["decoding"]["options"]
    assert record["dev"]["chosen"]["f1"] > record["dev"]["answered"]["f1"]
    assert (run / "tune" / "tune.md").is_file()

    default = predict(run, dev, tmp_path / "default.jsonl")
    from_file = predict(run, dev, tmp_path / "file.jsonl", "--no-run-decoding", "--config", str(run / DECODING_FILE))
    flags = ["--min-score", str(chosen["min_score"]), "--lexicon", str(run / LEXICON_FILE),
             "--lexicon-min-rate", str(chosen["lexicon_min_rate"])]
    explicit = predict(run, dev, tmp_path / "explicit.jsonl", "--no-run-decoding", *flags)
    answered = predict(run, dev, tmp_path / "answered.jsonl", "--no-run-decoding")
    assert default == from_file == explicit
    assert default != answered and any(default)

    # evaluate --score-with scores exactly what train recorded on dev, with the run decoding and without it, and
    # with the decoding given as a file (--decoding, what nerft tune writes) in place of the run's
    for i, (extra, key) in enumerate((([], "chosen"), (["--no-run-decoding"], "answered"),
                                      (["--no-run-decoding", "--decoding", str(run / DECODING_FILE)], "chosen"))):
        out = tmp_path / f"eval-{i}"
        assert cli.main(["evaluate", "--gold", dev, "--score-with", str(run), "--out", str(out), *extra]) == 0
        scored = json.loads((out / "metrics.json").read_text(encoding="utf-8"))["strict"]["micro"]["f1"]
        assert scored == pytest.approx(record["dev"][key]["f1"])
    assert cli.main(["evaluate", "--gold", dev, "--pred", dev, "--decoding", str(run / DECODING_FILE)]) == 2
    assert "--decoding sets how --score-with" in capsys.readouterr().err
    # test split (the dev file here): its predictions and scores are the run decoding's, as answered beside
    assert metrics["test"]["f1"] == pytest.approx(100 * record["dev"]["chosen"]["f1"], abs=0.01)
    assert metrics["test"]["as_answered"]["f1"] == pytest.approx(100 * record["dev"]["answered"]["f1"], abs=0.01)


def test_config_files_and_flags_override_the_run_decoding_field_by_field(run, data, tmp_path, caplog):
    where = locate_model(LoadOptions(model=str(run)))
    assert where.decoding["lexicon"] == str((run / LEXICON_FILE).resolve())
    assert locate_model(LoadOptions(model=str(run), run_decoding=False)).decoding is None
    load = LoadOptions(model=str(run))
    flagged = decoding_options(load, {"lexicon_min_rate": 1.0})
    assert flagged.lexicon == where.decoding["lexicon"] and flagged.lexicon_min_rate == 1.0
    (tmp_path / "mine.yaml").write_text("min_score: 0.5\n", encoding="utf-8")
    filed = decoding_options(load, {}, config_path=str(tmp_path / "mine.yaml"))
    assert filed.min_score == 0.5 and filed.lexicon == where.decoding["lexicon"]
    assert decoding_options(load, {"min_score": 0.7}, config_path=str(tmp_path / "mine.yaml")).min_score == 0.7
    assert decoding_options(LoadOptions(model=str(run), run_decoding=False), {}).lexicon is None
    # chosen with constrained decoding, which only the transformers backend does: the other backends decode freely
    # with the run's thresholds and say so; asking for --constrained on them is an error
    constrained = shutil.copytree(run, tmp_path / "constrained")
    with (constrained / DECODING_FILE).open("a", encoding="utf-8") as f:
        f.write("constrained: true\n")
    assert decoding_options(LoadOptions(model=str(constrained)), {}).constrained
    with caplog.at_level("WARNING", logger="nerft.inference"):
        free = decoding_options(LoadOptions(model=str(constrained), backend="vllm"), {})
    assert not free.constrained  # and the rest of the run's decoding as it is:
    assert dataclasses.replace(free, constrained=True) == decoding_options(LoadOptions(model=str(constrained)), {})
    assert "decoding freely with its thresholds" in caplog.text
    with pytest.raises(NerftError, match="cannot constrain"):
        decoding_options(LoadOptions(model=str(constrained), backend="ct2"), {"constrained": True})
    assert not decoding_options(LoadOptions(model=str(constrained), backend="vllm"), {"constrained": False}).constrained

    dev = data[1]["dev"]
    rate = str(where.decoding["lexicon_min_rate"])
    overridden = predict(run, dev, tmp_path / "a.jsonl", "--lexicon-min-count", "1000")  # the lexicon adds nothing
    spelled_out = predict(run, dev, tmp_path / "b.jsonl", "--no-run-decoding", "--lexicon", str(run / LEXICON_FILE),
                          "--lexicon-min-rate", rate, "--lexicon-min-count", "1000")
    assert overridden == spelled_out != predict(run, dev, tmp_path / "c.jsonl")
    min_score = str(where.decoding["min_score"])
    assert predict(run, dev, tmp_path / "d.jsonl", "--lexicon", "") == \
        predict(run, dev, tmp_path / "e.jsonl", "--no-run-decoding", "--min-score", min_score)  # the lexicon off


def test_the_run_decoding_travels_with_a_copied_run_and_its_export(run, data, tmp_path, monkeypatch):
    dev = str(Path(data[1]["dev"]).resolve())
    expected = predict(run, dev, tmp_path / "run.jsonl")
    copy = shutil.copytree(run, tmp_path / "moved" / "run")
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert read_decoding(copy / DECODING_FILE)["lexicon"] == str((copy / LEXICON_FILE).resolve())
    assert predict(copy, dev, tmp_path / "copy.jsonl") == expected

    assert cli.main(["export", "--model", str(run), "--output", str(tmp_path / "merged")]) == 0
    merged = tmp_path / "merged"
    assert yaml.safe_load((merged / DECODING_FILE).read_text(encoding="utf-8")) == \
        yaml.safe_load((run / DECODING_FILE).read_text(encoding="utf-8"))
    assert (merged / LEXICON_FILE).is_file()
    assert RunInfo.load(merged).decoding == RunInfo.load(run).decoding
    card = (merged / "README.md").read_text(encoding="utf-8")
    assert "## Decoding" in card and RunInfo.load(run).decoding["setting"] in card
    assert predict(merged, dev, tmp_path / "merged.jsonl") == expected
    assert cli.main(["export", "--model", str(run), "--output", str(tmp_path / "plain"), "--no-run-decoding"]) == 0
    assert not (tmp_path / "plain" / DECODING_FILE).exists() and RunInfo.load(tmp_path / "plain").decoding is None
    assert "## Decoding" not in (tmp_path / "plain" / "README.md").read_text(encoding="utf-8")


def test_no_tune_writes_no_decoding(data, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(recipe(data, tmp_path / "run")), encoding="utf-8")
    assert cli.main(["train", "--config", str(config), "--no-tune"]) == 0
    out = tmp_path / "run"
    assert not (out / DECODING_FILE).exists() and not (out / "tune").exists()
    assert RunInfo.load(out).decoding is None and "decoding" not in json.loads((out / "metrics.json").read_text())
    assert locate_model(LoadOptions(model=str(out))).decoding is None  # a folder without one: the defaults


def test_resume_chooses_the_decoding_when_training_finishes_or_had_finished(data, tmp_path):
    out = tmp_path / "run"
    train(cfglib.from_dict(TrainConfig, recipe(data, out) | {"stop_after_steps": 2}))
    assert not (out / DECODING_FILE).exists()  # not finished: nothing chosen yet
    train(cfglib.from_dict(TrainConfig, recipe(data, out) | {"resume": "latest"}))
    chosen = (out / DECODING_FILE).read_text(encoding="utf-8")
    assert RunInfo.load(out).decoding is not None

    # the choice lost (say, interrupted): a resume of the finished run trains no step and chooses it again
    (out / DECODING_FILE).unlink()
    log = (out / "train_log.jsonl").read_text(encoding="utf-8")
    train(cfglib.from_dict(TrainConfig, recipe(data, out) | {"resume": "latest"}))
    assert (out / DECODING_FILE).read_text(encoding="utf-8") == chosen
    assert [json.loads(line).get("step") for line in (out / "train_log.jsonl").read_text().splitlines()
            if "loss" in json.loads(line)] == [json.loads(line).get("step") for line in log.splitlines()
                                                if "loss" in json.loads(line)]


def test_by_default_a_short_run_keeps_half_its_training_documents_without_entities(tmp_path):
    """data.empty_share's default (0.5): with all of them, a short run learns to answer "no entity" to all."""
    from nerft.jsonl import write_jsonl
    from nerft.schema import Document, Entity
    from nerft.train.data import load_training_documents

    docs = [Document(f"e{k}", "今天天气很好。", []) for k in range(30)]
    docs += [Document(f"x{k}", "北京很大。", [Entity(0, 2, "GPE", "北京")]) for k in range(10)]
    write_jsonl(tmp_path / "train.jsonl", docs)
    cfg = cfglib.from_dict(TrainConfig, {"data": {"train": str(tmp_path / "train.jsonl")}})
    kept, _, _ = load_training_documents(cfg, main=False)
    assert len(kept) == 20 and sum(not d.entities for d in kept) == 10
    assert cfg.tune.enabled  # and the decoding is chosen on dev at the end (the tests above)


def test_tune_and_serve_start_from_the_run_decoding(run, data, tmp_path, monkeypatch):
    import uvicorn

    import nerft.inference.loading

    # nerft tune tries the run's lexicon again unless told not to
    dev = data[1]["dev"]
    for flags, lexicon_rows in (([], True), (["--no-run-decoding"], False)):
        out = tmp_path / f"tune{len(flags)}"
        assert cli.main(["tune", "--model", str(run), "--dev", dev, "--out", str(out), "--no-progress", *flags]) == 0
        grid = json.loads((out / "tune.json").read_text(encoding="utf-8"))["grid"]
        assert any(r["lexicon_min_rate"] is not None for r in grid) == lexicon_rows
    # nerft serve: the run's decoding under the flags (the loader and uvicorn stand in; the options are real)
    opened: list = []
    monkeypatch.setattr(nerft.inference.loading, "open_predictor",
                        lambda load, options: opened.append(options) or SimpleNamespace(name="run",
                                                                                         predict=lambda texts: [[]]))
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: None)
    monkeypatch.setattr("nerft.serve.app.create_app", lambda predictor, settings, routers=(), connections=None: None)
    chosen = RunInfo.load(run).decoding["options"]
    for flags in ([], ["--lexicon-min-count", "7"], ["--no-run-decoding"]):
        assert cli.main(["serve", "--model", str(run), *flags]) == 0
    assert [(o.lexicon, o.lexicon_min_rate, o.lexicon_min_count) for o in opened] == [
        (str((run / LEXICON_FILE).resolve()), chosen["lexicon_min_rate"], 1),
        (str((run / LEXICON_FILE).resolve()), chosen["lexicon_min_rate"], 7), (None, 0.3, 1)]
