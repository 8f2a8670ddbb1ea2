"""Dataset readers: real shared files (skipped without ../shared) and small hand-made cases for every error path."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import shared_path

from nerft.jsonl import write_jsonl
from nerft.readers import (
    HUB_REPO,
    detect_format,
    find_split_files,
    load_hub_chinese_ner_sft,
    parse_hub_spec,
    read_chinese_ner_sft,
    read_cluener,
    read_conll,
    read_dataset,
    read_nerft,
    read_split_dir,
)
from nerft.schema import Entity, InputError, NerftError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def sft_line(text: str, *entities: tuple[int, int, str], **extra) -> str:
    ents = [{"start_idx": s, "end_idx": e, "entity_text": text[s:e], "entity_label": lab, "entity_names": [lab]}
            for s, e, lab in entities]
    return json.dumps({"text": text, "entities": ents, **extra}, ensure_ascii=False) + "\n"


def spans(doc) -> list[tuple[int, int, str, str]]:
    return [(e.start, e.end, e.label, e.text) for e in doc.entities]


# ------------------------------------------------------------------------------------------------- real files


@pytest.mark.shared
def test_ccfbdci_counts_match_the_data_readme():
    path = shared_path("data", "ccfbdci", "ccfbdci.jsonl")
    assert detect_format(path) == "chinese_ner_sft"
    docs, report = read_dataset(path)
    assert (report.docs, report.entities, report.skipped, report.overlaps) == (15724, 12581, 0, 0)
    labels = Counter(e.label for d in docs for e in d.entities)
    assert labels == {"GPE": 4586, "PER": 3995, "ORG": 3085, "LOC": 915}
    assert sum(1 for d in docs if not d.entities) == 9943
    assert all(d.text[e.start:e.end] == e.text for d in docs for e in d.entities)
    assert docs[0].id == "ccfbdci-1" and len({d.id for d in docs}) == len(docs)


@pytest.mark.shared
def test_cluener_concatenated_pretty_printed_objects():
    path = shared_path("data", "cluener", "train.json")
    assert detect_format(path) == "cluener"
    docs, report = read_dataset(path)
    assert report.docs == 10748 and report.skipped == 0
    first = docs[0]
    assert first.id == "train-0"
    # {"name": {"叶老桂": [[9, 11]]}, "company": {"浙商银行": [[0, 3]]}}: inclusive ends become exclusive
    assert spans(first) == [(0, 4, "company", "浙商银行"), (9, 12, "name", "叶老桂")]
    assert report.overlaps == 2  # kept, but counted and reported
    assert any("line" in w and "overlapping" in w for w in report.warnings)
    with pytest.raises(InputError, match="overlap"):
        read_cluener(path, reject_overlaps=True)


@pytest.mark.shared
def test_cluener_dir_is_a_predefined_split():
    directory = shared_path("data", "cluener")
    splits, report = read_split_dir(directory)
    assert {k: len(v) for k, v in splits.items()} == {"train": 10748, "dev": 1343}
    assert report.format == "cluener"


@pytest.mark.shared
def test_weibo_conll_with_segmentation_digits():
    directory = shared_path("data", "weibo")
    files = find_split_files(directory)
    assert [p.name for p in files.values()] == [f"weiboNER_2nd_conll.{s}" for s in ("train", "dev", "test")]
    assert detect_format(files["train"]) == "conll"
    splits, report = read_split_dir(directory)
    assert {k: len(v) for k, v in splits.items()} == {"train": 1350, "dev": 270, "test": 270}
    # the test file's first sentence ends "...感动了李开复感动" with 李开复 tagged B-/I-/I-PER.NAM
    doc = splits["test"][0]
    assert doc.text == "一节课的时间真心感动了李开复感动" and not any(c.isdigit() for c in doc.text)
    assert spans(doc) == [(11, 14, "PER.NAM", "李开复")]
    assert {e.label for d in splits["train"] for e in d.entities} == {
        f"{t}.{k}" for t in ("PER", "LOC", "ORG", "GPE") for k in ("NAM", "NOM")}
    assert report.repaired_tags == 14  # I- tags without a B- in the published files
    assert len({d.id for s in splits.values() for d in s}) == 1890


# ------------------------------------------------------------------------------------------- chinese_ner_sft


def test_chinese_ner_sft_offsets_are_exclusive_and_ids_are_line_numbers(tmp_path):
    path = write(tmp_path / "mini.jsonl", sft_line("张三在北京", (0, 2, "PER"), (3, 5, "GPE")) + "\n"
                 + sft_line("嗯。"))
    docs, report = read_chinese_ner_sft(path)
    assert [d.id for d in docs] == ["mini-1", "mini-3"]
    assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]
    assert docs[1].entities == [] and report.docs == 2 and report.entities == 2


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ('{"text": "张三", "entities": [\n', "invalid JSON"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": 0, "end_idx": 9, "entity_text": "张三",
                                                 "entity_label": "PER"}]}), "outside the text"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": 0, "end_idx": 2, "entity_text": "李四",
                                                 "entity_label": "PER"}]}), "does not match"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": 1, "end_idx": 1, "entity_text": "",
                                                 "entity_label": "PER"}]}), "empty or negative"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": -1, "end_idx": 1, "entity_text": "张",
                                                 "entity_label": "PER"}]}), "outside the text"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": "0", "end_idx": 2, "entity_label": "PER"}]}),
         "start_idx must be an integer"),
        (json.dumps({"text": "张三", "entities": [{"start_idx": 0, "end_idx": 2}]}), "lacks entity_label"),
        (json.dumps({"entities": []}), "'text'"),
        (json.dumps(["not", "an", "object"]), "expected a JSON object"),
    ],
)
def test_chinese_ner_sft_bad_line_names_file_and_line(tmp_path, line, problem):
    path = write(tmp_path / "bad.jsonl", sft_line("好的") + line.rstrip("\n") + "\n" + sft_line("对。"))
    with pytest.raises(InputError, match=problem) as info:
        read_chinese_ner_sft(path)
    assert info.value.path == str(path) and info.value.line == 2
    assert f"{path}, line 2:" in str(info.value)
    docs, report = read_chinese_ner_sft(path, skip_invalid=True)
    assert [d.text for d in docs] == ["好的", "对。"]
    assert report.skipped == 1 and "line 2" in report.warnings[0]


def test_overlaps_are_counted_and_kept_unless_rejected(tmp_path):
    path = write(tmp_path / "nested.jsonl", sft_line("北京大学在北京", (0, 4, "ORG"), (0, 2, "GPE"), (5, 7, "GPE")))
    docs, report = read_chinese_ner_sft(path)
    assert report.overlaps == 1 and len(docs[0].entities) == 3
    with pytest.raises(InputError, match="overlap"):
        read_chinese_ner_sft(path, reject_overlaps=True)
    docs, report = read_chinese_ner_sft(path, reject_overlaps=True, skip_invalid=True)
    assert docs == [] and report.skipped == 1


def test_exact_duplicate_entities_are_dropped_and_entities_sorted(tmp_path):
    path = write(tmp_path / "dup.jsonl", sft_line("张三在北京", (3, 5, "GPE"), (0, 2, "PER"), (3, 5, "GPE")))
    docs, report = read_chinese_ner_sft(path)
    assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]
    assert report.duplicate_entities == 1


# ---------------------------------------------------------------------------------------------------- CLUENER


def test_cluener_one_object_a_line_and_a_json_array(tmp_path):
    rows = [{"text": "浙商银行叶老桂", "label": {"company": {"浙商银行": [[0, 3]]}, "name": {"叶老桂": [[4, 6]]}}},
            {"text": "没有实体", "id": 7}]
    per_line = write(tmp_path / "a.json", "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
    array = write(tmp_path / "b.json", json.dumps(rows, ensure_ascii=False, indent=2))
    for path in (per_line, array):
        assert detect_format(path) == "cluener"
        docs, _ = read_cluener(path)
        assert spans(docs[0]) == [(0, 4, "company", "浙商银行"), (4, 7, "name", "叶老桂")]
        assert docs[1].id == "7" and docs[1].entities == []


def test_cluener_errors_carry_the_line_where_the_object_starts(tmp_path):
    good = json.dumps({"text": "你好", "label": {}}, indent=2)  # 4 lines
    bad = json.dumps({"text": "叶老桂", "label": {"name": {"叶老桂": [[0, 1]]}}}, indent=2)  # wrong inclusive end
    path = write(tmp_path / "c.json", good + "\n" + bad + "\n" + good + "\n")
    with pytest.raises(InputError, match="does not match") as info:
        read_cluener(path)
    assert info.value.line == 5
    docs, report = read_cluener(path, skip_invalid=True)
    assert len(docs) == 2 and report.skipped == 1


def test_cluener_broken_object_is_reported_and_can_be_skipped(tmp_path):
    path = write(tmp_path / "d.json", '{"text": "好", "label": {}}\n{"text": "坏", "label": \n'
                                      '{"text": "对", "label": {}}\n')
    with pytest.raises(InputError, match="invalid JSON"):
        read_cluener(path)
    docs, report = read_cluener(path, skip_invalid=True)
    assert [d.text for d in docs] == ["好", "对"] and report.skipped == 1


@pytest.mark.parametrize(
    ("label", "problem"),
    [([1, 2], "'label' must map"), ({"name": [[0, 1]]}, "must map mentions"),
     ({"name": {"叶": [0, 0]}}, "not a \\[start, end\\] pair"), ({"name": {"叶": [["0", 0]]}}, "must be an integer")],
)
def test_cluener_malformed_labels(tmp_path, label, problem):
    path = write(tmp_path / "e.json", json.dumps({"text": "叶老桂", "label": label}) + "\n")
    with pytest.raises(InputError, match=problem):
        read_cluener(path)


# ------------------------------------------------------------------------------------------------------ CoNLL


def conll(*sentences: list[str], sep: str = "\t") -> str:
    return "\n\n".join("\n".join(row.replace(" ", sep) for row in s) for s in sentences) + "\n"


def test_conll_bio_tab_and_space_separated(tmp_path):
    rows = ["张 B-PER", "三 I-PER", "在 O", "北 B-LOC", "京 I-LOC"]
    for sep in ("\t", " "):
        path = write(tmp_path / f"bio{len(sep)}.txt", conll(rows, ["好 O"], sep=sep))
        assert detect_format(path) == "conll"
        docs, report = read_conll(path)
        assert [d.text for d in docs] == ["张三在北京", "好"]
        assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "LOC", "北京")]
        assert report.repaired_tags == 0


def test_conll_extra_columns_use_the_last_one_as_tag(tmp_path):
    path = write(tmp_path / "x.conll", "张\tNR\tB-PER\n三\tNR\tI-PER\n说\tVV\tO\n")
    docs, _ = read_conll(path)
    assert spans(docs[0]) == [(0, 2, "PER", "张三")]


@pytest.mark.parametrize("scheme", ["bioes", "bmes"])
def test_conll_bioes_and_bmes(tmp_path, scheme):
    inside = "I" if scheme == "bioes" else "M"
    rows = ["欧 B-ORG", f"洲 {inside}-ORG", f"联 {inside}-ORG", "盟 E-ORG", "和 O", "美 S-GPE", "国 S-GPE"]
    path = write(tmp_path / f"{scheme}.txt", conll(rows))
    for given in ("auto", scheme):
        docs, report = read_conll(path, scheme=given)
        assert spans(docs[0]) == [(0, 4, "ORG", "欧洲联盟"), (5, 6, "GPE", "美"), (6, 7, "GPE", "国")]
        assert report.repaired_tags == 0
    with pytest.raises(InputError, match="outside the tag scheme"):
        read_conll(path, scheme="bio")


def test_conll_inside_tag_without_begin_starts_an_entity_and_is_counted(tmp_path):
    rows = ["说 O", "张 I-PER", "三 I-PER", "李 B-LOC", "四 I-PER", "好 E-PER"]
    path = write(tmp_path / "repair.txt", conll(rows))
    docs, report = read_conll(path)
    assert spans(docs[0]) == [(1, 3, "PER", "张三"), (3, 4, "LOC", "李"), (4, 6, "PER", "四好")]
    assert report.repaired_tags == 2
    assert any("2 I-/M-/E- tag(s)" in w for w in report.warnings)


@pytest.mark.parametrize(
    ("rows", "problem", "line"),
    [(["好 O", "张"], "expected '<char> <tag>'", 2), (["好 O", "张 PER"], "no B-/I-/E-/S-/M- prefix", 2),
     (["好 O", "张 B-"], "no label", 2)],
)
def test_conll_bad_rows(tmp_path, rows, problem, line):
    path = write(tmp_path / "bad.txt", conll(["对 O"], rows))
    with pytest.raises(InputError, match=problem) as info:
        read_conll(path)
    assert info.value.line == line + 2
    docs, report = read_conll(path, skip_invalid=True)
    assert [d.text for d in docs] == ["对"] and report.skipped == 1


def test_weibo_style_tokens_are_detected_and_stripped(tmp_path):
    # <char><position>: multi-digit positions and a digit character ("33" is the char "3" at position 3)
    rows = ["李0 B-PER.NAM", "开1 I-PER.NAM", "复2 I-PER.NAM", "33 O", "e12 O"]
    path = write(tmp_path / "weibo.train", conll(rows))
    docs, report = read_conll(path)
    assert docs[0].text == "李开复3e"
    assert spans(docs[0]) == [(0, 3, "PER.NAM", "李开复")]
    assert docs[0].id == "weibo.train-0"
    docs, _ = read_conll(path, segmented_tokens=False)
    assert docs[0].text == "李0开1复233e12"
    # an ordinary character file with digit characters is not mistaken for the Weibo layout
    plain = write(tmp_path / "plain.txt", conll(["1 O", "2 O", "年 O"]))
    assert read_conll(plain)[0][0].text == "12年"


# ------------------------------------------------------------------------------------------- nerft, detection


def test_nerft_jsonl_round_trip_and_validation(tmp_path):
    from nerft.schema import Document

    good = Document("a", "张三在北京", [Entity(0, 2, "PER", "张三")])
    path = tmp_path / "docs.jsonl"
    write_jsonl(path, [good, Document("b", "嗯。")])
    assert detect_format(path) == "nerft"
    docs, report = read_nerft(path)
    assert docs[0] == good and report.docs == 2
    write(path, json.dumps({"id": "a", "text": "张三", "entities": [{"start": 0, "end": 2, "label": "PER",
                                                                   "text": "李四"}]}) + "\n")
    with pytest.raises(InputError, match="does not match"):
        read_nerft(path)
    write(path, '{"id": "a", "text": "x"}\n{"id": "a", "text": "y"}\n')
    with pytest.raises(InputError, match="repeats the id of line 1"):
        read_nerft(path)


def test_detect_format_errors(tmp_path):
    with pytest.raises(NerftError, match="empty"):
        detect_format(write(tmp_path / "empty.txt", "\n\n"))
    with pytest.raises(NerftError, match="cannot detect"):
        detect_format(write(tmp_path / "prose.txt", "justoneword\n"))
    with pytest.raises(NerftError, match="no 'text'"):
        detect_format(write(tmp_path / "other.jsonl", '{"sentence": "x"}\n'))
    assert detect_format(write(tmp_path / "textonly.json", '{"text": "x"}\n')) == "cluener"
    assert detect_format(write(tmp_path / "textonly.jsonl", '{"text": "x"}\n')) == "nerft"
    # the first record has no entity: a later one decides
    later = write(tmp_path / "later.jsonl", '{"text": "x", "entities": []}\n' + sft_line("张三", (0, 2, "PER")))
    assert detect_format(later) == "chinese_ner_sft"


def test_split_dir_rules(tmp_path):
    write(tmp_path / "a" / "train.jsonl", '{"text": "x"}\n')
    write(tmp_path / "a" / "validation.jsonl", '{"text": "y"}\n')
    write(tmp_path / "a" / "README.md", "not data\n")
    assert set(find_split_files(tmp_path / "a")) == {"train", "dev"}
    write(tmp_path / "b" / "dev.jsonl", '{"text": "y"}\n')
    with pytest.raises(NerftError, match="no training file"):
        find_split_files(tmp_path / "b")
    write(tmp_path / "c" / "train.json", '{"text": "y"}\n')
    write(tmp_path / "c" / "x_train.jsonl", '{"text": "y"}\n')
    with pytest.raises(NerftError, match="several files"):
        find_split_files(tmp_path / "c")


def test_read_dataset_rejects_missing_input(tmp_path):
    with pytest.raises(NerftError, match="does not exist"):
        read_dataset(tmp_path / "nope.jsonl")


# ------------------------------------------------------------------------------------------------------- hub


def make_hub_folder(root: Path) -> Path:
    """A local folder laid out like the qgyd2021/chinese_ner_sft repository (data/<subset>.jsonl)."""
    write(root / "data" / "ccfbdci.jsonl",
          sft_line("张三在北京", (0, 2, "PER"), (3, 5, "GPE"), data_source="CCFBDCI")
          + sft_line("嗯。", data_source="CCFBDCI"))
    return root


@pytest.fixture
def datasets_cache(tmp_path, monkeypatch) -> Path:
    """Keep ``datasets``' default cache (used by hub: inputs without cache_dir) inside the test's tmp_path."""
    import datasets

    cache = tmp_path / "hf-datasets-cache"
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", cache)
    return cache


def test_hub_loader_on_a_local_folder_with_the_hub_layout(tmp_path, datasets_cache):
    root = make_hub_folder(tmp_path / "chinese_ner_sft")
    docs, report = load_hub_chinese_ner_sft("CCFBDCI", data_dir=str(root), cache_dir=str(tmp_path / "cache"))
    assert [d.id for d in docs] == ["ccfbdci-train-1", "ccfbdci-train-2"]
    assert spans(docs[0]) == [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]
    assert report.format == "chinese_ner_sft" and report.docs == 2
    # the CLI spelling takes a local folder in place of the repository id
    docs_via_spec, _ = read_dataset(f"hub:{root}:CCFBDCI")
    assert [d.to_dict() for d in docs_via_spec] == [d.to_dict() for d in docs]
    assert datasets_cache.is_dir()  # the default cache was used, and it is the test's
    with pytest.raises(NerftError, match="no data/msra.jsonl"):
        load_hub_chinese_ner_sft("MSRA", data_dir=str(root))


def test_hub_loader_asks_datasets_for_the_hub_file(monkeypatch, tmp_path):
    import datasets

    root = make_hub_folder(tmp_path / "mirror")
    real_load = datasets.load_dataset
    calls = []

    def fake_load(kind, **kwargs):  # no network in tests: serve the hub path from the local mirror
        calls.append((kind, kwargs))
        files = {split: path.replace(f"hf://datasets/{HUB_REPO}", str(root)) for split, path in kwargs["data_files"].items()}
        return real_load(kind, **{**kwargs, "data_files": files, "cache_dir": str(tmp_path / "cache")})

    monkeypatch.setattr(datasets, "load_dataset", fake_load)
    docs, report = read_dataset(f"hub:{HUB_REPO}:CCFBDCI")
    assert calls[0][0] == "json"
    assert calls[0][1]["data_files"] == {"train": f"hf://datasets/{HUB_REPO}/data/ccfbdci.jsonl"}
    assert len(docs) == 2 and report.source == f"hub:{HUB_REPO}:CCFBDCI"


def test_parse_hub_spec():
    assert parse_hub_spec(f"hub:{HUB_REPO}:CCFBDCI") == (HUB_REPO, "CCFBDCI", "train")
    assert parse_hub_spec(f"hub:{HUB_REPO}:CMeEE:validation") == (HUB_REPO, "CMeEE", "validation")
    with pytest.raises(NerftError, match="expected hub:"):
        parse_hub_spec(f"hub:{HUB_REPO}")
