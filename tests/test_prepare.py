"""``nerft prepare`` end to end: splits, reproducibility, duplicates, conflicts, labels, files, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import shared_path
from hypothesis import given, settings
from hypothesis import strategies as st

from nerft.cli import main
from nerft.config import ConfigError
from nerft.jsonl import read_documents
from nerft.prepare import PLOT_FILE, PrepareConfig, PrepareReport, prepare, split_documents
from nerft.schema import Document, Entity, NerftError

OUTPUTS = ["train.jsonl", "dev.jsonl", "test.jsonl", "labels.json", "stats.json", "stats.md"]


def sft_row(text: str, *entities: tuple[int, int, str]) -> str:
    ents = [{"start_idx": s, "end_idx": e, "entity_text": text[s:e], "entity_label": lab} for s, e, lab in entities]
    return json.dumps({"text": text, "entities": ents}, ensure_ascii=False) + "\n"


@pytest.fixture
def sft_file(tmp_path) -> Path:
    """200 documents: 180 unique texts with a PER entity, "嗯。" five times, and one text annotated two ways."""
    lines = [sft_row(f"张三说第{i}句话", (0, 2, "PER")) for i in range(180)]
    lines += [sft_row("嗯。")] * 5
    lines += [sft_row("李四在北京", (0, 2, "PER"), (3, 5, "GPE")), sft_row("李四在北京", (0, 2, "PER"))]
    lines += [sft_row(f"王五去上海{i}", (0, 2, "PER"), (3, 5, "GPE")) for i in range(13)]
    path = tmp_path / "data.jsonl"
    path.write_text("".join(lines), encoding="utf-8")
    return path


def run(tmp_path: Path, input_path, name: str = "out", **options) -> tuple[PrepareReport, Path]:
    out = tmp_path / name
    report = prepare(PrepareConfig(input=str(input_path), out=str(out), **options))
    return report, out


def texts(path: Path) -> list[str]:
    return [d.text for d in read_documents(path)]


def test_prepare_writes_every_file_with_seeded_split_sizes(tmp_path, sft_file):
    report, out = run(tmp_path, sft_file)
    assert sorted(p.name for p in out.iterdir()) == sorted([*OUTPUTS, PLOT_FILE])
    assert (out / PLOT_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert report.split_sizes == {"train": 170, "dev": 10, "test": 20}
    assert sum(len(texts(out / f"{s}.jsonl")) for s in ("train", "dev", "test")) == 200
    assert json.loads((out / "labels.json").read_text())["labels"][0]["code"] == "LOC"  # built-in ccfbdci
    assert report.label_source == "built-in: ccfbdci"
    stats = json.loads((out / "stats.json").read_text())
    assert stats["all"]["entities_per_label"] == {"LOC": 0, "PER": 195, "GPE": 14, "ORG": 0}
    assert stats["all"]["empty_docs"] == 5 and stats["all"]["empty_share"] == 0.025
    assert stats["all"]["text_length"]["min"] == 2 and stats["all"]["text_length"]["max"] == 9
    assert stats["duplicate_texts"] == 5  # four extra "嗯。" and the second "李四在北京"
    assert stats["split_mode"] == "random" and stats["seed"] == 42
    assert "| documents | 170 | 10 | 20 | 200 |" in (out / "stats.md").read_text()
    summary = report.summary()
    assert "train" in summary and "170" in summary and "conflicting annotations 1" in summary


def test_same_seed_same_files_other_seed_other_split(tmp_path, sft_file):
    _, a = run(tmp_path, sft_file, "a", plot=False)
    _, b = run(tmp_path, sft_file, "b", plot=False)
    _, c = run(tmp_path, sft_file, "c", plot=False, seed=7)
    for name in ("train.jsonl", "dev.jsonl", "test.jsonl", "stats.json"):
        if name != "stats.json":
            assert (a / name).read_bytes() == (b / name).read_bytes()
    assert texts(a / "test.jsonl") != texts(c / "test.jsonl")


def test_duplicates_share_a_split_and_conflicts_are_listed(tmp_path, sft_file):
    for seed in range(5):
        _, out = run(tmp_path, sft_file, f"s{seed}", plot=False, seed=seed)
        where = {s: set(texts(out / f"{s}.jsonl")) for s in ("train", "dev", "test")}
        assert not (where["train"] & where["dev"] or where["train"] & where["test"] or where["dev"] & where["test"])
        stats = json.loads((out / "stats.json").read_text())
        assert stats["texts_in_several_splits"] == 0
        [conflict] = stats["conflicts"]
        assert conflict["text"] == "李四在北京"
        assert sorted(len(v["entities"]) for v in conflict["variants"]) == [1, 2]
        assert "## Conflicting annotations (1)" in (out / "stats.md").read_text()


@settings(max_examples=40, deadline=None)
@given(
    texts_=st.lists(st.sampled_from("abcdefghij"), min_size=1, max_size=60),
    seed=st.integers(0, 1000),
    dev=st.floats(0, 0.4),
    test=st.floats(0, 0.4),
)
def test_split_documents_properties(texts_, seed, dev, test):
    docs = [Document(str(i), t) for i, t in enumerate(texts_)]
    splits = split_documents(docs, seed, dev, test)
    assert sorted(d.id for s in splits.values() for d in s) == sorted(d.id for d in docs)
    owner = {}
    for name, members in splits.items():
        for d in members:
            assert owner.setdefault(d.text, name) == name
        assert [int(d.id) for d in members] == sorted(int(d.id) for d in members)  # input order kept
    assert len(splits["test"]) <= round(test * len(docs)) and len(splits["dev"]) <= round(dev * len(docs))
    assert split_documents(docs, seed, dev, test) == splits


def test_very_frequent_texts_stay_in_train():
    docs = [Document(f"f{i}", "嗯。") for i in range(50)] + [Document(str(i), f"句{i}") for i in range(950)]
    for seed in range(5):
        splits = split_documents(docs, seed, 0.05, 0.1)
        assert all(d.text != "嗯。" for s in ("dev", "test") for d in splits[s])
        assert (len(splits["dev"]), len(splits["test"])) == (50, 100)


# ------------------------------------------------------------------------------------------------- predefined


def write_nerft(path: Path, docs: list[Document]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(d.to_dict(), ensure_ascii=False) + "\n" for d in docs), encoding="utf-8")


def split_dir(root: Path, with_test: bool = True) -> Path:
    def docs(split: str, n: int) -> list[Document]:
        return [Document(f"{split}{i}", f"{split}张三{i}", [Entity(len(split), len(split) + 2, "name", "张三")])
                for i in range(n)]

    write_nerft(root / "train.jsonl", docs("train", 40))
    write_nerft(root / "dev.jsonl", docs("dev", 6))
    if with_test:
        write_nerft(root / "test.jsonl", docs("test", 7))
    return root


def test_split_directory_is_kept(tmp_path):
    source = split_dir(tmp_path / "src")
    for keep in (False, True):  # a directory implies --keep-split
        report, out = run(tmp_path, source, f"k{keep}", plot=False, keep_split=keep)
        assert report.split_sizes == {"train": 40, "dev": 6, "test": 7}
        assert texts(out / "dev.jsonl") == [f"dev张三{i}" for i in range(6)]
        assert report.stats["split_mode"] == "predefined"
        assert report.label_source == "built-in: cluener"


def test_missing_split_file_is_carved_from_train(tmp_path):
    report, out = run(tmp_path, split_dir(tmp_path / "src", with_test=False), plot=False, test=0.25)
    assert report.split_sizes == {"train": 30, "dev": 6, "test": 10}
    assert all(t.startswith("train") for t in texts(out / "test.jsonl"))
    assert "no test file" in report.stats["notes"][0] and "no test file" in report.summary()


def test_keep_split_needs_a_directory(tmp_path, sft_file):
    with pytest.raises(NerftError, match="--keep-split needs a directory"):
        run(tmp_path, sft_file, keep_split=True)


# ---------------------------------------------------------------------------------------------------- labels


def test_given_labels_map_names_and_reject_or_drop_unknown_labels(tmp_path):
    source = tmp_path / "d.jsonl"
    write_nerft(source, [Document("1", "张三在北京", [Entity(0, 2, "人名", "张三"), Entity(3, 5, "CITY", "北京")]),
                         Document("2", "李四", [Entity(0, 2, "PER", "李四")])])
    with pytest.raises(NerftError, match=r"'CITY' \(1\).*--unknown-labels drop"):
        run(tmp_path, source, labels="ccfbdci")
    report, out = run(tmp_path, source, labels="ccfbdci", unknown_labels="drop", plot=False, dev=0, test=0)
    assert report.stats["dropped_entities"] == {"CITY": 1}
    labels = [e.label for d in read_documents(out / "train.jsonl") for e in d.entities]
    assert labels == ["PER", "PER"]  # the display name 人名 became the code PER


def test_labels_are_inferred_when_no_builtin_covers_them(tmp_path):
    source = tmp_path / "d.jsonl"
    # (PER.NAM/PER.NOM alone would be the built-in weibo set's)
    write_nerft(source, [Document("1", "张三", [Entity(0, 2, "PER.NAM", "张三")]),
                         Document("2", "老师", [Entity(0, 2, "TITLE.NOM", "老师")])])
    report, out = run(tmp_path, source, plot=False, dev=0, test=0)
    assert report.label_source == "inferred from the data"
    assert [lab["code"] for lab in json.loads((out / "labels.json").read_text())["labels"]] == ["PER.NAM", "TITLE.NOM"]


def test_label_file(tmp_path, sft_file):
    labels = tmp_path / "labels.yaml"
    labels.write_text("labels:\n  - {code: PER, name: 人物}\n  - {code: GPE, name: 地区}\n", encoding="utf-8")
    report, out = run(tmp_path, sft_file, labels=str(labels), plot=False)
    assert report.labels.codes == ["PER", "GPE"]
    assert json.loads((out / "labels.json").read_text())["labels"][0]["name"] == "人物"


def test_config_validation(tmp_path):
    with pytest.raises(ConfigError, match="dev \\+ test"):
        PrepareConfig(input="x", out="y", dev=0.5, test=0.5)
    with pytest.raises(ConfigError, match="'test' must be in"):
        PrepareConfig(test=-0.1)
    with pytest.raises(ConfigError, match="missing --input"):
        prepare(PrepareConfig(out=str(tmp_path)))


# ------------------------------------------------------------------------------------------------------- CLI


def test_cli_prepare_prints_a_summary(tmp_path, sft_file, capsys):
    out = tmp_path / "cli"
    code = main(["prepare", "--input", str(sft_file), "--out", str(out), "--seed", "3", "--dev", "0.1",
                 "--no-plot", "--format", "chinese_ner_sft"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "split" in printed and "labels (built-in: ccfbdci)" in printed
    assert len(texts(out / "dev.jsonl")) == 20 and not (out / PLOT_FILE).exists()
    assert json.loads((out / "stats.json").read_text())["seed"] == 3


def test_cli_config_file_and_flag_precedence(tmp_path, sft_file, capsys):
    config = tmp_path / "prepare.yaml"
    config.write_text(f"input: {sft_file}\nout: {tmp_path / 'cfg'}\nseed: 5\ntest: 0.2\nplot: false\n")
    assert main(["prepare", "--config", str(config), "--test", "0.05"]) == 0
    stats = json.loads((tmp_path / "cfg" / "stats.json").read_text())
    assert stats["seed"] == 5 and stats["splits"]["test"]["docs"] == 10  # the flag beat the file's 0.2
    config.write_text("inptu: x\n")
    assert main(["prepare", "--config", str(config)]) == 2
    assert "unknown config key(s) inptu" in capsys.readouterr().err


def test_cli_reports_bad_input_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(sft_row("好") + '{"text": "坏", "entities": [{"start_idx": 0, "end_idx": 5, '
                                   '"entity_text": "坏", "entity_label": "PER"}]}\n', encoding="utf-8")
    assert main(["prepare", "--input", str(bad), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert f"{bad}, line 2:" in err and "outside the text" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()  # nothing half-written
    assert main(["prepare", "--input", str(bad), "--out", str(tmp_path / "o"), "--skip-invalid", "--no-plot",
                 "--dev", "0", "--test", "0", "--labels", "ccfbdci"]) == 0
    assert "skipped 1" in capsys.readouterr().out


def test_cli_prepare_from_a_hub_layout_folder(tmp_path, monkeypatch, capsys):
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    data = tmp_path / "chinese_ner_sft" / "data"
    data.mkdir(parents=True)
    (data / "ccfbdci.jsonl").write_text("".join(sft_row(f"张三去北京{i}", (0, 2, "PER"), (3, 5, "GPE"))
                                                for i in range(20)), encoding="utf-8")
    out = tmp_path / "hub-out"
    assert main(["prepare", "--input", f"hub:{data.parent}:CCFBDCI", "--out", str(out), "--no-plot"]) == 0
    assert "(chinese_ner_sft)" in capsys.readouterr().out
    docs = read_documents(out / "train.jsonl")
    assert len(docs) == 17 and docs[0].id.startswith("ccfbdci-train-")


# ------------------------------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_prepare_ccfbdci(tmp_path):
    source = shared_path("data", "ccfbdci", "ccfbdci.jsonl")
    report, out = run(tmp_path, source, plot=False)
    assert report.split_sizes == {"train": 13366, "dev": 786, "test": 1572}
    stats = report.stats
    assert stats["all"]["entities"] == 12581 and stats["duplicate_texts"] == 1237
    assert len(stats["conflicts"]) == 4 and stats["texts_in_several_splits"] == 0
    assert stats["all"]["text_length"]["min"] == 1 and stats["all"]["text_length"]["max"] == 409
    # shuffled: the test set's empty share is near the whole file's (the file's first 10% is 25% empty)
    assert abs(stats["splits"]["test"]["empty_share"] - stats["all"]["empty_share"]) < 0.08


@pytest.mark.shared
def test_prepare_weibo_directory(tmp_path):
    report, _ = run(tmp_path, shared_path("data", "weibo"), plot=False)
    assert report.split_sizes == {"train": 1350, "dev": 270, "test": 270}
    assert report.read.repaired_tags == 14 and len(report.labels) == 8
