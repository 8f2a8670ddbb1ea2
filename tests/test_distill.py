"""nerft distill end to end on the tiny model (its answers are arbitrary: these tests check the mechanics: silver
written and resumed, the threshold chosen on dev and recorded, the CRF trained and reopened by predict, serve's
factory and evaluate), plus the pure threshold choice and the CRF on hand-built documents."""

from __future__ import annotations

import json

import pytest
from helpers_models import RUN_SEED, build_run_dir

from nerft.cli import main
from nerft.distill import (
    DistillConfig,
    choose_student,
    choose_threshold,
    distill,
    passes,
    student_table,
    threshold_table,
)
from nerft.jsonl import read_documents, write_jsonl
from nerft.schema import Document, Entity

pytest.importorskip("pycrfsuite", reason="python-crfsuite is not installed (pip install 'nerft[crf]')")

GOLD = [
    Document("g0", "张三在北京工作。", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "GPE", "北京")]),
    Document("g1", "李四去了上海。", [Entity(0, 2, "PER", "李四"), Entity(4, 6, "GPE", "上海")]),
    Document("g2", "王五在华为公司上班。", [Entity(0, 2, "PER", "王五"), Entity(3, 5, "ORG", "华为")]),
    Document("g3", "今天天气不错。", []),
]
DEV = [Document("d0", "赵六住在北京。", [Entity(0, 2, "PER", "赵六"), Entity(4, 6, "GPE", "北京")]),
       Document("d1", "明天下雨。", [])]
UNLABELED = ["张三和李四在上海见面。", "北京很大。", "华为发布了新手机。", "王五喜欢看书。", "联合国在纽约。", "好的。"]


def doc(text: str, *scores: float) -> Document:
    return Document("x", text, [Entity(0, 1, "PER", text[0], s) for s in scores])


def test_passes_needs_every_entity_at_the_threshold():
    assert passes(doc("ab", 0.9, 0.95), 0.9) and not passes(doc("ab", 0.9, 0.89), 0.9)
    assert passes(doc("ab"), 0.99)  # nothing found: nothing below the threshold
    assert not passes(doc("ab"), 0.0, keep_empty=False) and passes(doc("ab", 0.9), 0.5, keep_empty=False)
    assert passes(Document("x", "a", [Entity(0, 1, "PER", "a")]), 0.0)
    assert not passes(Document("x", "a", [Entity(0, 1, "PER", "a")]), 0.5)  # no score: only threshold 0


def test_threshold_choice_trades_f1_against_documents_kept():
    gold = [Document(str(i), f"张{i}", [Entity(0, 1, "PER", "张")]) for i in range(4)]
    # two confident right answers, two unsure wrong ones (wrong label)
    teacher = [Document(str(i), f"张{i}", [Entity(0, 1, "PER" if i < 2 else "ORG", "张", 0.9 if i < 2 else 0.4)])
               for i in range(4)]
    rows = threshold_table(gold, teacher, [0.0, 0.5, 0.95])
    assert [(r["threshold"], r["kept"], r["f1"]) for r in rows] == [(0.0, 4, 0.5), (0.5, 2, 1.0), (0.95, 0, 0.0)]
    assert choose_threshold(rows, min_keep=0.5)["threshold"] == 0.5
    assert choose_threshold(rows, min_keep=0.75)["threshold"] == 0.0  # 0.5 keeps too few


def test_student_choice_takes_the_best_dev_f1_then_more_silver():
    rows = [{"threshold": t, "keep_empty": e, "f1": f} for t, e, f in
            [(0.0, True, 0.4), (0.0, False, 0.5), (0.5, True, 0.6), (0.5, False, 0.6), (0.9, True, 0.6)]]
    assert (choose_student(rows)["threshold"], choose_student(rows)["keep_empty"]) == (0.5, True)
    assert choose_student(rows[:2])["keep_empty"] is False  # leaving the empty documents out scored better


def test_student_table_scores_each_candidate_crf_on_dev_and_resumes(tmp_path):
    from nerft.crf import CrfTagger
    from nerft.metrics import score_documents

    silver = [Document("s0", "赵六去了北京。", [Entity(0, 2, "PER", "赵六", 0.99), Entity(4, 6, "GPE", "北京", 0.97)]),
              Document("s1", "钱七在上海。", [Entity(0, 2, "PER", "钱七", 0.4)]), Document("s2", "下雨了。", [])]
    cfg = DistillConfig(thresholds=[0.0, 0.9], iterations=30)
    rows = student_table(GOLD, silver, DEV, cfg, tmp_path)
    assert [(r["threshold"], r["keep_empty"], r["silver_kept"]) for r in rows] == [
        (0.0, True, 3), (0.0, False, 2), (0.9, True, 2), (0.9, False, 1)]
    for row in rows:  # each row is its own CRF's strict F1 on dev
        tagger = CrfTagger(tmp_path / row["model"])
        again = score_documents(DEV, [Document(d.id, d.text, tagger.tag(d.text)) for d in DEV])
        assert row["f1"] == again["strict"]["micro"]["f1"]
        assert row["crf"]["train_docs"] == len(GOLD) + row["silver_kept"]
    stamps = {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.crfsuite")}
    assert student_table(GOLD, silver, DEV, cfg, tmp_path) == rows  # read back, not trained again
    assert {p.name: p.stat().st_mtime_ns for p in tmp_path.glob("*.crfsuite")} == stamps
    more = student_table(GOLD[:2], silver, DEV, cfg, tmp_path)  # other gold: trained again
    assert all(r["gold"] == 2 for r in more) and stamps != {p.name: p.stat().st_mtime_ns
                                                             for p in tmp_path.glob("*.crfsuite")}


def test_candidates_keeping_the_same_silver_share_one_crf(tmp_path):
    silver = [Document("s0", "赵六去了北京。", [Entity(0, 2, "PER", "赵六", 0.99)]),
              Document("s1", "钱七在上海。", [Entity(0, 2, "PER", "钱七", 0.95)])]  # no score below 0.9, none empty
    rows = student_table(GOLD, silver, DEV, DistillConfig(thresholds=[0.0, 0.5, 0.97], iterations=20), tmp_path)
    assert [(r["threshold"], r["keep_empty"], r["silver_kept"]) for r in rows] == [
        (0.0, True, 2), (0.0, False, 2), (0.5, True, 2), (0.5, False, 2), (0.97, True, 1), (0.97, False, 1)]
    assert len({r["model"] for r in rows}) == 2 == len(list(tmp_path.glob("*.crfsuite")))  # two silver sets
    assert len({r["f1"] for r in rows[:4]}) == 1


def test_crf_learns_its_training_documents(tmp_path):
    from nerft.crf import CrfTagger, bio_tags, spans_from_bio, train_crf

    assert spans_from_bio(bio_tags(6, [(0, 2, "PER.NAM"), (3, 5, "GPE")])) == [(0, 2, "PER.NAM"), (3, 5, "GPE")]
    assert spans_from_bio(["I-PER", "I-PER", "B-PER", "I-ORG"]) == [(0, 2, "PER"), (2, 3, "PER"), (3, 4, "ORG")]
    train_crf(GOLD * 5, tmp_path / "m.crfsuite", iterations=50)
    found = CrfTagger(tmp_path / "m.crfsuite").tag(GOLD[0].text)
    assert [(e.start, e.end, e.label, e.text) for e in found] == [(0, 2, "PER", "张三"), (3, 5, "GPE", "北京")]
    assert all(0.0 < e.score <= 1.0 for e in found)
    assert CrfTagger(tmp_path / "m.crfsuite").tag("") == []


@pytest.fixture(scope="module")
def teacher(tmp_path_factory, tiny_tokenizer):
    """A tiny run whose decoding.yaml makes it answer with entities (constrained) in a few tokens."""
    run = build_run_dir(tmp_path_factory.mktemp("teacher"), tiny_tokenizer, seed=RUN_SEED)
    (run / "decoding.yaml").write_text("constrained: true\nmax_new_tokens: 8\nbatch_size: 4\n", encoding="utf-8")
    return run


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    write_jsonl(root / "train.jsonl", GOLD)
    write_jsonl(root / "dev.jsonl", DEV)
    (root / "texts.txt").write_text("\n".join(UNLABELED) + "\n", encoding="utf-8")
    return root


@pytest.fixture(scope="module")
def distilled(teacher, data, tmp_path_factory):
    out = tmp_path_factory.mktemp("crf") / "crf"
    rc = main(["distill", "--model", str(teacher), "--unlabeled", str(data / "texts.txt"), "--gold",
               str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl"), "--out", str(out), "--iterations", "20",
               "--thresholds", "0", "0.5", "0.99", "--min-keep", "0.5"])
    assert rc == 0
    return out


def test_distill_writes_silver_and_keeps_the_crf_that_scored_best_on_dev(distilled):
    from nerft.crf import CrfTagger
    from nerft.metrics import score_documents

    silver = read_documents(distilled / "silver.jsonl")
    assert [d.text for d in silver] == UNLABELED
    assert sum(len(d.entities) for d in silver) > 0  # constrained decoding: the teacher found something
    report = json.loads((distilled / "distill.json").read_text(encoding="utf-8"))
    assert [(r["threshold"], r["keep_empty"]) for r in report["candidates"]] == [
        (t, e) for t in (0.0, 0.5, 0.99) for e in (True, False)]
    best = choose_student(report["candidates"])
    info = json.loads((distilled / "nerft.json").read_text(encoding="utf-8"))
    assert info["kind"] == "crf" and (info["teacher"]["threshold"], info["teacher"]["keep_empty"]) == (
        best["threshold"], best["keep_empty"])
    assert "by the CRF's F1" in info["teacher"]["chosen_on"]
    kept = [d for d in silver if passes(d, best["threshold"], best["keep_empty"])]
    assert info["teacher"]["silver_kept"] == len(kept)
    assert report["crf"]["train_docs"] == len(GOLD) + len(kept)
    tagger = CrfTagger(distilled / "crf.crfsuite")  # the kept model is the chosen candidate's
    dev = score_documents(DEV, [Document(d.id, d.text, tagger.tag(d.text)) for d in DEV])
    assert dev["strict"]["micro"]["f1"] == best["f1"]
    assert not (distilled / "choice").exists() and not (distilled / "teacher_dev.jsonl").exists()


def test_distill_by_the_teacher_chooses_on_its_dev_answers(teacher, data, tmp_path):
    out = tmp_path / "crf"
    assert main(["distill", "--model", str(teacher), "--unlabeled", str(data / "texts.txt"), "--gold",
                 str(data / "train.jsonl"), "--dev", str(data / "dev.jsonl"), "--out", str(out), "--iterations",
                 "20", "--thresholds", "0", "0.5", "0.99", "--min-keep", "0.5", "--choose-by", "teacher"]) == 0
    report = json.loads((out / "distill.json").read_text(encoding="utf-8"))
    assert [r["threshold"] for r in report["candidates"]] == [0.0, 0.5, 0.99]
    best = choose_threshold(report["candidates"], 0.5)
    info = json.loads((out / "nerft.json").read_text(encoding="utf-8"))
    assert info["teacher"]["threshold"] == best["threshold"] and info["teacher"]["keep_empty"] is True
    assert "by the teacher's F1" in info["teacher"]["chosen_on"]
    assert len(read_documents(out / "teacher_dev.jsonl")) == len(DEV)
    kept = [d for d in read_documents(out / "silver.jsonl") if passes(d, best["threshold"])]
    assert report["crf"]["train_docs"] == len(GOLD) + len(kept)


def test_distill_resumes_the_silver_annotation(distilled, teacher, data, tmp_path):
    from nerft.inference.loading import load_predictor

    out = tmp_path / "again"
    out.mkdir()
    lines = (distilled / "silver.jsonl").read_text(encoding="utf-8").splitlines(keepends=True)
    (out / "silver.jsonl").write_text("".join(lines[:4]), encoding="utf-8")  # as if stopped after 4 texts
    (out / "silver.jsonl.resume.json").write_bytes((distilled / "silver.jsonl.resume.json").read_bytes())
    predictor = load_predictor(teacher, device="cpu")
    cfg = DistillConfig(model=str(teacher), unlabeled=str(data / "texts.txt"), gold=str(data / "train.jsonl"),
                        dev=str(data / "dev.jsonl"), out=str(out), iterations=10)
    distill(cfg, predictor, progress=False)
    assert predictor.stats.texts == len(UNLABELED) - 4  # only what was missing (the student choice needs no dev answers)
    assert [d.text for d in read_documents(out / "silver.jsonl")] == UNLABELED


def test_predict_and_evaluate_load_the_crf_like_a_run(distilled, data, tmp_path, capsys):
    from nerft.inference.crf_backend import CrfPredictor
    from nerft.inference.loading import load_predictor

    predictor = load_predictor(distilled, backend="vllm")  # the folder decides, not the flag
    assert isinstance(predictor, CrfPredictor)
    direct = predictor.predict_detailed(["张三在北京工作。"])[0]
    for e in direct.entities:
        assert "张三在北京工作。"[e.start:e.end] == e.text and e.score is not None

    capsys.readouterr()
    assert main(["predict", "--model", str(distilled), "--json", "张三在北京工作。"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["entities"] == [e.to_dict() for e in direct.entities]

    assert main(["predict", "--model", str(distilled), "--input", str(data / "texts.txt"), "--output",
                 str(tmp_path / "pred.jsonl")]) == 0
    assert len(read_documents(tmp_path / "pred.jsonl")) == len(UNLABELED)

    assert main(["evaluate", "--gold", str(data / "train.jsonl"), "--score-with", str(distilled), "--out",
                 str(tmp_path / "eval")]) == 0
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text(encoding="utf-8"))
    micro = metrics["strict"]["micro"]
    assert micro["tp"] + micro["fn"] == sum(len(d.entities) for d in GOLD)


def test_export_refuses_a_crf_folder(distilled, tmp_path):
    from nerft.export import export_model
    from nerft.inference.options import LoadOptions
    from nerft.schema import NerftError

    with pytest.raises(NerftError, match="no adapter to merge"):
        export_model(LoadOptions(model=str(distilled)), tmp_path / "merged")
    assert not (tmp_path / "merged").exists()


def test_serve_answers_with_the_crf(distilled):
    from fastapi.testclient import TestClient

    from nerft.inference.loading import load_predictor
    from nerft.serve import create_app

    predictor = load_predictor(distilled)
    expected = [e.to_dict() for e in predictor.predict(["张三在北京工作。"])[0]]
    with TestClient(create_app(predictor)) as client:
        body = client.post("/v1/ner", json={"texts": ["张三在北京工作。"]}).json()
        assert body["results"][0]["entities"] == expected
        assert {lab["code"] for lab in client.get("/v1/labels").json()["labels"]} == {"LOC", "PER", "GPE", "ORG"}


def test_distill_with_a_tagger_student_trains_a_tagging_run_that_opens_like_any(teacher, data, tmp_path):
    """--student tagger: the teacher's silver (chosen by the candidates' CRFs on dev), gold + kept silver in DIR/student-train.jsonl,
    a tagging run in DIR on the teacher's own base model, its nerft.json naming the teacher; run again, it trains
    nothing more."""
    import yaml

    from nerft.inference.loading import load_predictor
    from nerft.rundir import RunInfo

    recipe = tmp_path / "student.yaml"
    recipe.write_text(yaml.safe_dump({
        "task": "tag", "lora": {"r": 4, "alpha": 8}, "tagger": {"max_length": 32},
        "optim": {"batch_size": 4, "grad_accum": 1, "max_steps": 3, "lr": 1e-3, "warmup_steps": 1},
        "eval": {"every": 0, "dev_docs": 2, "batch_size": 4}, "tracking": {"backend": "none"},
        "tune": {"enabled": False}}), encoding="utf-8")
    out = tmp_path / "student"
    args = ["distill", "--student", "tagger", "--student-config", str(recipe), "--model", str(teacher),
            "--unlabeled", str(data / "texts.txt"), "--gold", str(data / "train.jsonl"), "--dev",
            str(data / "dev.jsonl"), "--out", str(out), "--thresholds", "0", "0.5", "--min-keep", "0.5"]
    assert main(args) == 0
    info = RunInfo.load(out)
    report = json.loads((out / "distill.json").read_text(encoding="utf-8"))
    assert info.kind == "tagger" and info.teacher["name"] == teacher.name and "CRF's F1" in info.teacher["chosen_on"]
    kept = [d for d in read_documents(out / "silver.jsonl")
            if passes(d, info.teacher["threshold"], info.teacher["keep_empty"])]
    assert read_documents(out / "student-train.jsonl") == [*GOLD, *kept]
    assert not (out / "crf.crfsuite").exists() and not (out / "choice").exists()  # the CRFs only chose
    assert report["tagger"]["train"]["steps"] == 3
    teacher_base = RunInfo.load(teacher).base_model.name_or_path
    assert yaml.safe_load((out / "config.yaml").read_text())["model"]["name_or_path"] == teacher_base
    predicted = load_predictor(out, device="cpu").predict([d.text for d in DEV])
    assert all(DEV[i].text[e.start:e.end] == e.text for i, ents in enumerate(predicted) for e in ents)
    mtime = (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns
    assert main(args) == 0  # done before: the run is kept as it is
    assert (out / "adapter" / "adapter_model.safetensors").stat().st_mtime_ns == mtime
    assert main([*args, "--choose-by", "student"]) == 2  # a tagger per candidate: refused


def test_distill_refuses_what_would_teach_the_student_wrong(teacher, data, tmp_path, capsys):
    """Gold with a label the teacher never writes, and no text to annotate, are refused before any annotation;
    --encoding auto reads a GB18030 file as predict does."""
    def distill_args(**over):
        args = {"--model": str(teacher), "--unlabeled": str(data / "texts.txt"), "--gold": str(data / "train.jsonl"),
                "--dev": str(data / "dev.jsonl"), "--out": str(tmp_path / "out"), "--iterations": "5",
                "--thresholds": "0", **over}
        return ["distill", *[x for kv in args.items() for x in kv]]

    odd = tmp_path / "gold.jsonl"
    write_jsonl(odd, [Document("x", "张三在火星。", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "PLANET", "火星")])])
    assert main(distill_args(**{"--gold": str(odd)})) == 2
    assert "label(s) PLANET are not among the teacher's" in capsys.readouterr().err
    empty = tmp_path / "empty.txt"
    empty.write_text("\n\n", encoding="utf-8")
    assert main(distill_args(**{"--unlabeled": str(empty)})) == 2
    assert "holds no text" in capsys.readouterr().err
    assert not (tmp_path / "out" / "silver.jsonl").exists()  # refused before the teacher annotated anything
    gb = tmp_path / "gb.txt"
    gb.write_bytes(("\n".join(UNLABELED[:2]) + "\n").encode("gb18030"))
    assert main(distill_args(**{"--unlabeled": str(gb), "--encoding": "auto"})) == 0
    assert [d.text for d in read_documents(tmp_path / "out" / "silver.jsonl")] == UNLABELED[:2]
