"""The datasets beyond CCFBDCI: CLUENER's official dev file as the test split (--test-from), Weibo's pre-split CoNLL
files kept as given, its dotted .NAM/.NOM codes through labels, prompts, answers, constrained decoding and metrics,
and evaluate's --map-labels for out-of-domain scoring. Small fixtures; two tests read ../shared."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
from conftest import shared_path

from nerft.answers import read_answer
from nerft.cli import main
from nerft.formats import get_format
from nerft.jsonl import read_documents, write_jsonl
from nerft.labels import ccfbdci_labels, load_label_set, map_document_labels, parse_label_map, weibo_labels
from nerft.metrics import score_documents
from nerft.prepare import PrepareConfig, prepare
from nerft.prompts import build_prompt
from nerft.schema import Document, Entity, NerftError


def cluener_record(i: int) -> str:
    text = f"张{i}在北京第{i}中学读书。"
    return json.dumps({"text": text, "label": {"name": {f"张{i}": [[0, len(f"张{i}") - 1]]}}}, ensure_ascii=False,
                      indent=2)


WEIBO_TRAIN = "我0\t O\n和0\tO\n李0\tB-PER.NAM\n娜1\tI-PER.NAM\n去0\tO\n北0\tB-GPE.NAM\n京1\tI-GPE.NAM\n\n"
WEIBO_SENTENCES = [("女0\tB-PER.NOM\n人1\tI-PER.NOM\n好0\tO\n\n"), ("去0\tO\n公0\tB-ORG.NOM\n司1\tI-ORG.NOM\n\n"),
                   ("长0\tB-LOC.NAM\n江1\tI-LOC.NAM\n\n")]


def test_test_from_keeps_the_file_as_test_and_carves_dev_from_input(tmp_path):
    (tmp_path / "train.json").write_text("\n".join(cluener_record(i) for i in range(40)), encoding="utf-8")
    (tmp_path / "dev.json").write_text("\n".join(cluener_record(100 + i) for i in range(7)), encoding="utf-8")
    cfg = PrepareConfig(input=str(tmp_path / "train.json"), test_from=str(tmp_path / "dev.json"),
                        out=str(tmp_path / "out"), dev=0.1, plot=False)
    report = prepare(cfg)
    out = tmp_path / "out"
    test = read_documents(out / "test.jsonl")
    assert [d.text for d in test] == [f"张{100 + i}在北京第{100 + i}中学读书。" for i in range(7)]  # as given, in order
    train, dev = read_documents(out / "train.jsonl"), read_documents(out / "dev.jsonl")
    assert len(dev) == 4 and len(train) == 36
    assert sorted(d.text for d in train + dev) == sorted(f"张{i}在北京第{i}中学读书。" for i in range(40))
    assert report.stats["split_mode"] == "test-from" and report.label_source == "built-in: cluener"
    assert prepare(PrepareConfig(**{**cfg.__dict__, "out": str(tmp_path / "again")})).split_sizes == \
        report.split_sizes  # seeded: the same split again
    with pytest.raises(NerftError, match="single --input file"):
        prepare(PrepareConfig(input=str(tmp_path), test_from=str(tmp_path / "dev.json"), out=str(tmp_path / "x")))


def test_weibo_files_are_kept_as_given_with_the_builtin_label_set(tmp_path):
    source = tmp_path / "weibo"
    source.mkdir()
    (source / "weiboNER_2nd_conll.train").write_text(WEIBO_TRAIN * 3, encoding="utf-8")
    (source / "weiboNER_2nd_conll.dev").write_text(WEIBO_SENTENCES[0] + WEIBO_SENTENCES[2], encoding="utf-8")
    (source / "weiboNER_2nd_conll.test").write_text("".join(reversed(WEIBO_SENTENCES)), encoding="utf-8")
    report = prepare(PrepareConfig(input=str(source), out=str(tmp_path / "out"), plot=False))
    assert report.split_sizes == {"train": 3, "dev": 2, "test": 3} and report.label_source == "built-in: weibo"
    test = read_documents(tmp_path / "out" / "test.jsonl")
    assert [d.text for d in test] == ["长江", "去公司", "女人好"]  # the file's order, digits stripped
    assert [(e.label, e.text) for d in test for e in d.entities] == [("LOC.NAM", "长江"), ("ORG.NOM", "公司"),
                                                                      ("PER.NOM", "女人")]


def test_dotted_codes_through_prompt_answers_and_metrics():
    labels = weibo_labels()
    assert load_label_set("configs/labels/weibo-defined.yaml").codes == labels.codes
    prompt = build_prompt(labels, "compact", describe_labels=False)
    assert "人称名词" in prompt.system and "PER.NOM" not in prompt.system  # the model reads display names
    text = "我和李娜去北京，女人好。"
    gold = [Entity(2, 4, "PER.NAM", "李娜"), Entity(5, 7, "GPE.NAM", "北京"), Entity(8, 10, "PER.NOM", "女人")]
    for output_format in ("compact", "jsonl"):
        answer = get_format(output_format).render(gold, labels)
        reading = read_answer(text, answer, labels, output_format=output_format)
        assert reading.entities == gold and reading.parse_ok
    assert labels.to_code("PER.NOM") == "PER.NOM" and labels.to_code("人称名词") == "PER.NOM"
    metrics = score_documents([Document("0", text, gold)], [gold[:2]], labels=labels)
    per_label = metrics["strict"]["per_label"]
    assert per_label["PER.NOM"]["fn"] == 1 and per_label["PER.NAM"]["f1"] == 1.0 and "ORG.NOM" in per_label


def test_constrained_decoding_writes_dotted_codes(tmp_path, tiny_tokenizer):
    from helpers_models import build_run_dir

    from nerft.inference.loading import load_predictor

    # seed 5: with these labels the random tiny model answers ORG.NOM and ORG.NAM under constrained decoding
    run = build_run_dir(tmp_path, tiny_tokenizer, labels=weibo_labels(), seed=5)
    predictor = load_predictor(run, constrained=True, max_new_tokens=12, device="cpu")
    texts = ["我和李娜去北京。", "女人在公司上班。", "长江很长。"]
    found = [e for ents in predictor.predict(texts) for e in ents]
    assert any(e.label.endswith(".NOM") for e in found) and all(e.label in weibo_labels().codes for e in found)
    only = predictor.predict(texts, ["PER.NOM", "GPE.NAM"])
    assert all(e.label in ("PER.NOM", "GPE.NAM") for ents in only for e in ents)


def test_label_mapping_parses_and_maps():
    assert parse_label_map("PER.NAM=PER, ORG.NAM=ORG") == {"PER.NAM": "PER", "ORG.NAM": "ORG"}
    for bad in ("PER.NAM", "=PER", "A=B,A=C", ""):
        with pytest.raises(NerftError):
            parse_label_map(bad)
    doc = Document("0", "李娜和女人", [Entity(0, 2, "PER.NAM", "李娜"), Entity(3, 5, "PER.NOM", "女人")])
    assert map_document_labels([doc], {"PER.NAM": "PER"})[0].entities == [Entity(0, 2, "PER", "李娜")]


def test_evaluate_map_labels_scores_a_model_of_another_label_set(tmp_path, capsys):
    gold = [Document("0", "李娜和女人去北京", [Entity(0, 2, "PER.NAM", "李娜"), Entity(3, 5, "PER.NOM", "女人"),
                                          Entity(6, 8, "GPE.NAM", "北京")])]
    write_jsonl(tmp_path / "gold.jsonl", gold)
    (tmp_path / "labels.json").write_text(json.dumps(weibo_labels().to_dict()), encoding="utf-8")
    # a CCFBDCI model's answer: one right, one wrong type (北京 as LOC)
    pred = [{"id": "0", "text": gold[0].text, "entities": [{"start": 0, "end": 2, "label": "PER", "text": "李娜"},
                                                            {"start": 6, "end": 8, "label": "LOC", "text": "北京"}]}]
    write_jsonl(tmp_path / "pred.jsonl", pred)
    (tmp_path / "map.yaml").write_text("PER.NAM: PER\nGPE.NAM: GPE\nLOC.NAM: LOC\nORG.NAM: ORG\n", encoding="utf-8")
    for spec in ("PER.NAM=PER,GPE.NAM=GPE,LOC.NAM=LOC,ORG.NAM=ORG", str(tmp_path / "map.yaml")):
        assert main(["evaluate", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl"),
                     "--map-labels", spec, "--labels", "ccfbdci", "--out", str(tmp_path / "eval")]) == 0
        micro = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))["strict"]["micro"]
        assert (micro["tp"], micro["fp"], micro["fn"]) == (1, 1, 1)  # 女人 (.NOM) is not scored
    # the other way round: a Weibo model on CCFBDCI's gold. Its .NOM answer has no CCFBDCI counterpart: not scored,
    # but counted; its .NAM answers are scored under the mapped types
    write_jsonl(tmp_path / "ccf.jsonl", [Document("0", gold[0].text, [Entity(0, 2, "PER", "李娜"),
                                                                       Entity(6, 8, "GPE", "北京")])])
    (tmp_path / "labels.json").write_text(json.dumps(ccfbdci_labels().to_dict()), encoding="utf-8")
    write_jsonl(tmp_path / "weibo-pred.jsonl", [{"id": "0", "text": gold[0].text, "entities": [
        {"start": 0, "end": 2, "label": "PER.NAM", "text": "李娜"}, {"start": 3, "end": 5, "label": "PER.NOM", "text": "女人"},
        {"start": 6, "end": 8, "label": "LOC.NAM", "text": "北京"}]}])
    assert main(["evaluate", "--gold", str(tmp_path / "ccf.jsonl"), "--pred", str(tmp_path / "weibo-pred.jsonl"),
                 "--map-labels", "PER=PER.NAM,ORG=ORG.NAM,LOC=LOC.NAM,GPE=GPE.NAM", "--labels", "weibo",
                 "--out", str(tmp_path / "back")]) == 0
    metrics = json.loads((tmp_path / "back" / "metrics.json").read_text(encoding="utf-8"))
    micro = metrics["strict"]["micro"]
    assert (micro["tp"], micro["fp"], micro["fn"]) == (1, 1, 1) and metrics["unmapped_predictions"] == {"PER.NOM": 1}
    assert set(metrics["strict"]["per_label"]) <= {"PER.NAM", "ORG.NAM", "LOC.NAM", "GPE.NAM"}
    assert "not scored: 'PER.NOM' (1)" in (tmp_path / "back" / "report.md").read_text(encoding="utf-8")


@pytest.mark.shared
def test_real_cluener_and_weibo_prepare(tmp_path):
    cluener = shared_path("data", "cluener")
    report = prepare(PrepareConfig(input=str(cluener / "train.json"), test_from=str(cluener / "dev.json"),
                                   out=str(tmp_path / "cluener"), plot=False))
    assert report.split_sizes["test"] == 1343 and report.split_sizes["train"] + report.split_sizes["dev"] == 10748
    assert len(report.labels) == 10
    report = prepare(PrepareConfig(input=str(shared_path("data", "weibo")), out=str(tmp_path / "weibo"), plot=False))
    assert report.label_source == "built-in: weibo" and report.labels.codes == weibo_labels().codes
    assert report.stats["splits"]["test"]["entities"] == 418


def test_configs_label_files_match_the_builtins():
    for name in ("cluener", "weibo"):
        defined = load_label_set(str(Path("configs/labels") / f"{name}-defined.yaml"))
        builtin = load_label_set(name)
        assert defined.codes == builtin.codes and defined.names == builtin.names
        assert all(lab.description for lab in defined.labels)


def _prepared_folder(folder: Path, docs: list[Document], labels) -> Path:
    folder.mkdir()
    write_jsonl(folder / "train.jsonl", docs)
    write_jsonl(folder / "dev.jsonl", docs[:2])
    (folder / "labels.json").write_text(json.dumps(labels.to_dict(), ensure_ascii=False), encoding="utf-8")
    return folder


def _mixture_folders(tmp_path: Path) -> list[str]:
    from nerft.labels import ccfbdci_labels

    ccf = [Document(f"c{i}", f"张三在北京{i}。", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")])
           for i in range(3)]
    weibo = [Document(f"w{i}", f"女人和李娜{i}", [Entity(0, 2, "PER.NOM", "女人"), Entity(3, 5, "PER.NAM", "李娜")])
             for i in range(3)]
    return [str(_prepared_folder(tmp_path / "ccfbdci", ccf, ccfbdci_labels())),
            str(_prepared_folder(tmp_path / "weibo", weibo, weibo_labels()))]


def test_mixture_prompts_each_example_with_its_own_label_set(tmp_path, tiny_tokenizer):
    from nerft.config import from_dict
    from nerft.train.config import TrainConfig
    from nerft.train.data import (
        IGNORE,
        build_training_prompt,
        encode_training_data,
        load_training_documents,
        resolve_labels,
    )

    cfg = from_dict(TrainConfig, {"data": {"mixture": _mixture_folders(tmp_path), "empty_share": None,
                                           "examples_in_prompt": 1}})
    docs, dev, lexicon = load_training_documents(cfg, main=False)
    labels = resolve_labels(cfg.data, docs)
    assert labels.codes == ["LOC", "PER", "GPE", "ORG"] and [d.id for d in dev] == ["c0", "c1"]
    prompt = build_training_prompt(cfg, labels, docs)
    data = encode_training_data(cfg, docs, tiny_tokenizer, prompt, labels, main=False, lexicon=lexicon)
    assert len(data.examples) == len(docs) == 6
    for doc, ex in zip(docs, data.examples, strict=True):
        prompt_text = tiny_tokenizer.decode([t for t, lab in zip(ex.input_ids, ex.labels, strict=True)
                                             if lab == IGNORE])
        answer = tiny_tokenizer.decode([t for t in ex.labels if t != IGNORE])
        if doc.id.startswith("c"):
            assert "地理实体" in prompt_text and "人称名词" not in prompt_text and "地理实体" in answer
            assert "张三在北京0" in prompt_text  # its worked example comes from its own folder
        else:
            assert "人称名词" in prompt_text and "地理实体" not in prompt_text and "人称名词" in answer
            assert "女人和李娜0" in prompt_text
    assert prompt.system in tiny_tokenizer.decode(data.examples[0].input_ids)  # the run's prompt: the first folder's
    with pytest.raises(NerftError, match="exclude each other"):
        load_training_documents(from_dict(TrainConfig, {"data": {"mixture": cfg.data.mixture, "train": "x"}}), False)


def test_a_mixture_under_shared_prefix_batches_each_folder_with_its_whole_prompt_prefix(tmp_path, tiny_tokenizer):
    """data.shared_prefix in a mixture: each example records its own folder's prompt prefix (system turn with its
    label set, user header), not just the start the folders share, and every micro-batch holds one folder's
    examples, so the collated batch computes that whole prefix once."""
    from nerft.config import from_dict
    from nerft.generation import shared_prefix_ids
    from nerft.train.config import TrainConfig
    from nerft.train.data import (
        build_training_prompt,
        collate,
        encode_training_data,
        epoch_batches,
        load_training_documents,
        mixture_parts,
        resolve_labels,
    )

    cfg = from_dict(TrainConfig, {"data": {"mixture": _mixture_folders(tmp_path), "empty_share": None,
                                           "shared_prefix": True, "examples_in_prompt": 0}})
    docs, _, lexicon = load_training_documents(cfg, main=False)
    labels = resolve_labels(cfg.data, docs)
    data = encode_training_data(cfg, docs, tiny_tokenizer, build_training_prompt(cfg, labels, docs), labels,
                                main=False, lexicon=lexicon)
    own = [len(shared_prefix_ids(tiny_tokenizer, build_training_prompt(cfg, part_labels, part_docs)))
           for part_labels, part_docs in mixture_parts(cfg)]
    assert data.prefix_lens == own and own[0] != own[1]
    assert [(ex.group, ex.prefix_len) for ex in data.examples] == [(0, own[0])] * 3 + [(1, own[1])] * 3
    assert "人称名词" in tiny_tokenizer.decode(data.examples[3].input_ids[:own[1]])  # its labels are in its prefix
    lengths, groups = [len(ex.input_ids) for ex in data.examples], [ex.group for ex in data.examples]
    batches = epoch_batches(lengths, 2, seed=7, epoch=1, group_by_length=True, groups=groups)
    assert sorted(i for b in batches for i in b) == list(range(6))
    assert all(len({groups[i] for i in b}) == 1 for b in batches) and len(batches) == 4  # 2 + 1 per folder
    assert batches == epoch_batches(lengths, 2, seed=7, epoch=1, group_by_length=True, groups=groups)  # replayable
    for b in batches:
        batch = collate([data.examples[i] for i in b], pad_id=0, packing=False, shared_prefix=True)
        assert batch["prefix_ids"].shape[1] == own[groups[b[0]]]
    mixed = collate([data.examples[0], data.examples[3]], pad_id=0, packing=False, shared_prefix=True)
    assert "prefix_ids" not in mixed  # two folders' prefixes differ: the plain padded batch


def test_an_equal_mixture_gives_every_folder_as_many_examples_as_the_largest(tmp_path, tiny_tokenizer):
    """data.mixture_balance equal: a 2-document folder beside a 5-document one is repeated (each document twice,
    one more sampled) to 5 examples; proportional leaves each folder's own count."""
    from nerft.config import from_dict
    from nerft.labels import ccfbdci_labels
    from nerft.train.config import TrainConfig
    from nerft.train.data import (
        build_training_prompt,
        encode_training_data,
        load_training_documents,
        resolve_labels,
    )

    ccf = [Document(f"c{i}", f"张三在北京{i}。", [Entity(0, 2, "PER", "张三")]) for i in range(5)]
    weibo = [Document(f"w{i}", f"女人和李娜{i}", [Entity(0, 2, "PER.NOM", "女人")]) for i in range(2)]
    folders = [str(_prepared_folder(tmp_path / "ccfbdci", ccf, ccfbdci_labels())),
               str(_prepared_folder(tmp_path / "weibo", weibo, weibo_labels()))]

    def encoded(balance):
        cfg = from_dict(TrainConfig, {"data": {"mixture": folders, "empty_share": None, "mixture_balance": balance}})
        docs, _, lexicon = load_training_documents(cfg, main=False)
        labels = resolve_labels(cfg.data, docs)
        return encode_training_data(cfg, docs, tiny_tokenizer, build_training_prompt(cfg, labels, docs), labels,
                                    main=False, lexicon=lexicon)

    plain, equal = encoded("proportional"), encoded("equal")
    assert [ex.group for ex in plain.examples] == [0] * 5 + [1] * 2
    assert [ex.group for ex in equal.examples] == [0] * 5 + [1] * 5
    repeated = Counter(id(ex) for ex in equal.examples if ex.group == 1)
    assert len(repeated) == 2 and sorted(repeated.values()) == [2, 3]  # both twice, one sampled once more
    assert equal.examples[:5] == plain.examples[:5]
    per_example = {id(ex): sum(t != -100 for t in ex.labels) for ex in equal.examples}
    assert equal.supervised_tokens == sum(per_example[id(ex)] for ex in equal.examples) > plain.supervised_tokens


def test_label_set_at_prediction_time_rebuilds_the_prompt(tmp_path, tiny_tokenizer):
    from helpers_models import build_run_dir

    from nerft.inference.loading import open_predictor
    from nerft.inference.options import LoadOptions, PredictOptions
    from nerft.labels import ccfbdci_labels

    run = build_run_dir(tmp_path / "a", tiny_tokenizer, labels=ccfbdci_labels(), seed=5)
    (run / "decoding.yaml").write_text("label_min_scores: PER=0.5\n", encoding="utf-8")  # the run's labels only
    options = PredictOptions(constrained=True, max_new_tokens=12)
    predictor = open_predictor(LoadOptions(model=str(run), label_set="weibo", device="cpu"), options)
    assert predictor.labels.codes == weibo_labels().codes
    assert predictor.prompt.system == build_prompt(weibo_labels(), "compact").system
    found = [e for ents in predictor.predict(["女人在公司上班。", "长江很长。"]) for e in ents]
    assert found and all(e.label in weibo_labels().codes for e in found)
    labels_file = tmp_path / "two.yaml"
    labels_file.write_text("labels:\n  - {code: PER.NOM, name: 人称名词}\n  - {code: ORG.NOM, name: 机构名词}\n",
                           encoding="utf-8")
    two = open_predictor(LoadOptions(model=str(run), label_set=str(labels_file), device="cpu"), options)
    assert two.prompt.system.startswith("抽取实体：人称名词、机构名词。")
    shots = build_prompt(ccfbdci_labels(), "compact")
    shots = type(shots)(shots.system + "\n示例：...", shots.user_prefix, shots.style, shots.output_format)
    other = build_run_dir(tmp_path / "b", tiny_tokenizer, labels=ccfbdci_labels(), prompt=shots)
    with pytest.raises(NerftError, match="cannot be rebuilt"):
        open_predictor(LoadOptions(model=str(other), label_set="weibo", device="cpu"), options)


def test_a_mixture_run_trains_and_predicts_with_either_label_set(tmp_path, tiny_tokenizer):
    from nerft_helpers import save_base_model, tiny_recipe

    from nerft.config import from_dict
    from nerft.inference.loading import open_predictor
    from nerft.inference.options import LoadOptions, PredictOptions
    from nerft.rundir import RunInfo
    from nerft.train import TrainConfig, train

    base = save_base_model(tmp_path / "base", tiny_tokenizer)
    # worked examples in each folder's prompt, each micro-batch from one folder sharing its whole prompt prefix
    recipe = tiny_recipe(base, {"mixture": _mixture_folders(tmp_path), "examples_in_prompt": 1,
                                "shared_prefix": True}, tmp_path / "run", optim__max_steps=2, eval__every=2)
    run = train(from_dict(TrainConfig, recipe))
    info = RunInfo.load(run)
    assert info.labels.codes == ["LOC", "PER", "GPE", "ORG"]
    # with no data.dev, the decoding is chosen on the first folder's dev split, as its dev F1 was measured
    assert info.decoding is not None and info.decoding["dev"]["file"] == str(tmp_path / "ccfbdci" / "dev.jsonl")
    assert (run / "decoding.yaml").is_file()
    metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["train"]["examples"] == 6
    # the run records each folder's prompt as trained: the first is the run's own
    assert [labels.codes for labels, _ in info.trained_prompts] == [info.labels.codes, weibo_labels().codes]
    assert info.trained_prompts[0][1] == info.prompt and "女人和李娜0" in info.trained_prompts[1][1].system
    predictor = open_predictor(LoadOptions(model=str(run), label_set=str(tmp_path / "weibo" / "labels.json"),
                                           device="cpu"), PredictOptions(max_new_tokens=4))
    # a trained label set is asked with the very prompt it was trained with, worked examples included
    assert predictor.prompt == info.trained_prompts[1][1] and predictor.labels.codes == weibo_labels().codes
    assert len(predictor.predict(["女人和李娜"])) == 1
    # a label set it was not trained with cannot rebuild a prompt with worked examples
    other = tmp_path / "other.yaml"
    other.write_text("labels:\n  - {code: PER.NOM, name: 人称名词}\n", encoding="utf-8")
    with pytest.raises(NerftError, match="cannot be rebuilt"):
        open_predictor(LoadOptions(model=str(run), label_set=str(other), device="cpu"), PredictOptions())
