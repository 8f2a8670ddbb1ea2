"""The pages: spans cut into marked pieces (overlaps, adjacency, characters outside the BMP, combining marks, empty
texts), escaping, the JSON block and Content-Security-Policy of a self-contained page, the evaluate report's data
and tables (1,572 documents: size), predict's HTML sample, and the serve page and /v1/info in-process. The
browser tests (test_browser.py) check the same pages in Chromium."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serve_stub import LABELS, StubPredictor

from nerft.fileio import write_json
from nerft.inference.options import LoadOptions
from nerft.metrics import score_documents
from nerft.pages.bundle import asset, build_page, json_block
from nerft.pages.corpus import corpus_page, sample
from nerft.pages.marks import Span, colour_classes, escape, marked_html, pieces
from nerft.pages.report import error_documents, report_page
from nerft.prompts import build_prompt
from nerft.rundir import BaseModelRef, RunInfo
from nerft.schema import Document, Entity
from nerft.serve import ServeSettings, create_app
from nerft.serve.page import describe_model, page_router

INJECTION = '<script>alert("x")</script> &amp; <img src=x onerror=alert(1)> 北京'

# (text, spans, expected pieces as (text, covering, closing))
CASES = {
    "plain": ("张三在北京", [Span(0, 2, "PER"), Span(3, 5, "LOC")],
              [("张三", (0,), (0,)), ("在", (), ()), ("北京", (1,), (1,))]),
    "adjacent": ("张三李四", [Span(0, 2, "PER"), Span(2, 4, "PER")], [("张三", (0,), (0,)), ("李四", (1,), (1,))]),
    "nested": ("北京大学好", [Span(0, 2, "LOC"), Span(0, 4, "ORG")],
               [("北京", (1, 0), (0,)), ("大学", (1,), (1,)), ("好", (), ())]),
    "crossing": ("abcdef", [Span(0, 3, "A"), Span(2, 5, "B")],
                 [("ab", (0,), ()), ("c", (0, 1), (0,)), ("de", (1,), (1,)), ("f", (), ())]),
    "same span twice": ("ab", [Span(0, 2, "A"), Span(0, 2, "B")], [("ab", (0, 1), (1, 0))]),
    "outside the BMP": ("𠮷野家在北京", [Span(0, 3, "ORG"), Span(4, 6, "LOC")],
                        [("𠮷野家", (0,), (0,)), ("在", (), ()), ("北京", (1,), (1,))]),
    # an accent written as a combining mark stays with its letter: the span ending before it is shown to its end,
    # the one starting on it from its letter
    "combining": ("Zoe\u0301 Jose\u0301", [Span(0, 3, "PER"), Span(9, 10, "X")],
                  [("Zoe\u0301", (0,), (0,)), (" Jos", (), ()), ("e\u0301", (1,), (1,))]),
    "joined emoji": ("\U0001f469\u200d\U0001f4bb hi", [Span(0, 1, "A")], [("\U0001f469\u200d\U0001f4bb", (0,), (0,)),
                                                                         (" hi", (), ())]),
    "empty text": ("", [], []),
    "no span": ("abc", [], [("abc", (), ())]),
    "unplaceable spans": ("abc", [Span(None, None, "A"), Span(2, 2, "B"), Span(1, 9, "C"), Span(-1, 1, "D")],
                          [("abc", (), ())]),
}


@pytest.mark.parametrize("name", CASES)
def test_pieces(name):
    text, spans, expected = CASES[name]
    got = pieces(text, spans)
    assert [(p.text, p.covering, p.closing) for p in got] == expected
    assert "".join(p.text for p in got) == text  # nothing dropped, nothing doubled
    assert all(text[p.start:p.end] == p.text for p in got)


def test_marked_html_escapes_everything():
    text = INJECTION
    start = text.index("北京")
    out = marked_html(text, [Span(start, start + 2, 'LOC"><b>', 0.9)], colour_classes(['LOC"><b>']),
                      lambda code: "<i>地名</i>")
    assert "<script" not in out and "<img" not in out and "<b>" not in out and "<i>" not in out
    assert "&lt;script&gt;" in out and "&amp;amp;" in out
    assert html.unescape(re.sub(r"<[^>]+>", "", out)).startswith(text)  # the text, then the tag's name
    assert 'class="ent c0"' in out and ">北京</mark>" in out and "<span class=\"tag c0\">&lt;i&gt;地名" in out
    assert marked_html("", [], colour_classes([])) == ""


def test_colours_follow_the_label_set():
    colour = colour_classes(["A", "B"])
    assert [colour("A"), colour("B"), colour("unknown"), colour("A")] == ["c0", "c1", "c2", "c0"]
    assert colour_classes([f"L{k}" for k in range(13)])("L12") == "c0"  # 12 colours, cycled


def test_escape_replaces_a_lone_surrogate():
    assert escape("a\ud800<") == "a\ufffd&lt;"


def test_json_block_cannot_be_left_and_reads_back():
    data = {"text": "</script><script>alert(1)</script><!-- \u2028 & > \ud800 北京", "n": [1, None]}
    block = json_block(data)
    assert not set("<>&\u2028") & set(block)
    assert json.loads(block) == data
    block.encode("utf-8")  # the lone surrogate travels as its escape


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode()).digest()).decode() + "'"


def test_page_policy_allows_exactly_its_inlined_script_and_style():
    page = build_page(title="<t>", body="<p>x</p>", styles=("base.css",), scripts=("marks.js",), data={"a": "<"})
    script = re.findall(r"<script>(.*?)</script>", page.html, re.S)
    style = re.findall(r"<style>(.*?)</style>", page.html, re.S)
    assert len(script) == len(style) == 1
    assert f"script-src {_hash(script[0])}" in page.csp and f"style-src {_hash(style[0])}" in page.csp
    assert "default-src 'none'" in page.csp and "connect-src" not in page.csp
    assert "<title>&lt;t&gt;</title>" in page.html and html.escape(page.csp) in page.html
    assert "http://" not in page.html and "https://" not in page.html  # nothing is fetched from elsewhere


def test_assets_are_package_data():
    tomllib = pytest.importorskip("tomllib")
    patterns = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["nerft"]
    package = Path(__file__).parents[1] / "src" / "nerft"
    files = [p.relative_to(package) for p in (package / "pages" / "assets").iterdir()]
    assert files and all(any(f.match(pattern) for pattern in patterns) for f in files), files
    assert asset("marks.js").startswith("//")


def _report_case():
    gold = [Document("ok", "张三在北京", [Entity(0, 2, "PER", "张三"), Entity(3, 5, "LOC", "北京")]),
            Document("bad", INJECTION + "张三", [Entity(len(INJECTION) - 2, len(INJECTION), "LOC", "北京"),
                                                 Entity(len(INJECTION), len(INJECTION) + 2, "PER", "张三")]),
            Document("kinds", "北京大学的李四和王五", [Entity(0, 4, "ORG", "北京大学"), Entity(5, 7, "PER", "李四"),
                                                    Entity(8, 10, "PER", "王五")])]
    preds = [[Entity(0, 2, "PER", "张三", 0.9), Entity(3, 5, "LOC", "北京", 0.8)],
             [Entity(len(INJECTION) - 2, len(INJECTION), "ORG", "北京", 0.4), Entity(None, None, "PER", "赵六", 0.3)],
             [Entity(0, 2, "ORG", "北京", 0.7), Entity(4, 5, "LOC", "的", 0.2)]]
    return gold, preds


def test_error_documents_name_each_error():
    gold, preds = _report_case()
    docs = {d["id"]: d for d in error_documents(gold, preds)}
    assert set(docs) == {"bad", "kinds"}  # a document without an error is left out
    kinds = [(kind, docs["kinds"]["gold"][g][2] if g >= 0 else None, docs["kinds"]["pred"][p][2] if p >= 0 else None)
             for kind, g, p in docs["kinds"]["errors"]]
    assert kinds == [("wrong_boundary", "ORG", "ORG"), ("spurious", None, "LOC"), ("missed", "PER", None),
                     ("missed", "PER", None)]
    bad = docs["bad"]
    assert sorted(kind for kind, _, _ in bad["errors"]) == ["missed", "spurious", "wrong_label"]
    assert [None, None, "PER", 0.3, "赵六"] in bad["pred"]  # not in the text: listed, a spurious error


def test_report_page_tables_and_escaping():
    gold, preds = _report_case()
    metrics = score_documents(gold, preds, labels=LABELS)
    page = report_page(gold, preds, metrics, LABELS, {"gold": "<gold>.jsonl", "predictions": "p.jsonl"})
    assert "&lt;gold&gt;.jsonl" in page and "<gold>" not in page
    assert "<script>alert" not in page and "\\u003cscript\\u003ealert" in page  # the text is data, never markup
    data = json.loads(re.search(r'id="nerft-data">(.*?)</script>', page, re.S).group(1))
    assert [d["id"] for d in data["docs"]] == ["bad", "kinds"] and data["docs"][0]["text"].startswith(INJECTION)
    for name in ("人名", "地名", "机构名", "boundary", "partial", "(none): missed", "(none): spurious"):
        assert name in page
    strict_per = metrics["strict"]["per_label"]["PER"]
    assert f"<td>{100 * strict_per['recall']:.1f}</td>" in page


def test_a_report_of_1572_documents_stays_small(tmp_path):
    gold, preds = [], []
    for k in range(1572):
        text = f"第{k}号文件：张三在北京大学见到李四，随后去了上海。" * 2
        ents = [Entity(i, i + 2, "PER", text[i:i + 2]) for i in (text.index("张三"), text.index("李四"))]
        gold.append(Document(str(k), text, ents))
        preds.append(ents[:1] if k % 3 else ents)  # two in three documents miss one entity
    page = report_page(gold, preds, score_documents(gold, preds, labels=LABELS), LABELS, {"gold": "g"})
    data = json.loads(re.search(r'id="nerft-data">(.*?)</script>', page, re.S).group(1))
    assert len(data["docs"]) == 1048
    texts = sum(len(d["text"].encode()) for d in data["docs"])
    assert len(page.encode()) < 2 * texts + 60_000  # each text once with a few spans, no markup per document


def test_corpus_page(tmp_path):
    rows = [{"id": str(k), "text": f"{k} 张三在北京", "entities": []} for k in range(450)]
    rows[0] = {"id": "x<y", "text": INJECTION, "entities": [
        {"start": len(INJECTION) - 2, "end": len(INJECTION), "label": "LOC", "text": "北京", "score": 0.91},
        {"start": None, "end": None, "label": "PER", "text": "赵六"}]}
    assert [r["id"] for r in sample(rows, 3)] == ["x<y", "150", "300"] and sample(rows[:2], 3) == rows[:2]
    page = corpus_page(rows, LABELS, "nerft predict", "out.nerft.jsonl")
    assert "<script" not in page.lower() and "x&lt;y" in page and "&lt;img src=x" in page
    assert "200 of 450 documents" in page and ">北京</mark>" in page and "score 0.910" in page
    assert "not in the text: 赵六 (人名)" in page and "script-src" not in page  # nothing runs in it


def _stub_run(root: Path) -> Path:
    run = root / "run"
    RunInfo(base_model=BaseModelRef("Qwen/Qwen2-1.5B-Instruct", "abc123"), labels=LABELS,
            prompt=build_prompt(LABELS, "compact")).save(run)
    write_json(run / "metrics.json", {"dev": {"best_f1": 76.4, "best_step": 300}, "test": {"f1": 80.3}})
    return run


def test_serve_page_needs_no_key_but_the_api_does(tmp_path):
    about = describe_model(LoadOptions(model=str(_stub_run(tmp_path))))
    assert about == {"base": "Qwen/Qwen2-1.5B-Instruct @ abc123", "adapter": "run/adapter",
                     "scores": {"dev F1": 76.4, "test F1": 80.3}}
    assert describe_model(LoadOptions(model=str(tmp_path / "missing"))) == {}
    local = tmp_path / "local"
    RunInfo(base_model=BaseModelRef(str(tmp_path / "models" / "qwen-0.5b")), labels=LABELS,
            prompt=build_prompt(LABELS, "compact")).save(local)
    assert describe_model(LoadOptions(model=str(local)))["base"] == "qwen-0.5b (local)"  # not the machine's paths
    app = create_app(StubPredictor(), ServeSettings(api_key="k", max_texts=5), routers=[page_router(about)])
    with TestClient(app) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'sha256-" in page.headers["content-security-policy"]
        assert "connect-src 'self'" in page.headers["content-security-policy"]
        assert "Qwen" not in page.text and "76.4" not in page.text  # the page holds nothing about the model
        assert c.get("/v1/info").status_code == 401
        info = c.get("/v1/info", headers={"authorization": "Bearer k"}).json()
    assert info["model"] == "stub" and [lab["name"] for lab in info["labels"]] == ["人名", "地名", "机构名"]
    assert info["limits"] == {"max_texts": 5, "max_text_chars": 4000} and info["scores"]["test F1"] == 80.3


def test_predict_writes_the_html_sample(tmp_path):
    from nerft.jsonl import write_jsonl
    from nerft.predict.writers import working_file, write_tool_file

    out = tmp_path / "sample.html"
    work = working_file(out, "html")
    write_jsonl(work, [{"id": "1", "text": "李四在北京", "entities": [
        {"start": 0, "end": 2, "label": "PER", "text": "李四", "score": 0.95}]}])
    assert write_tool_file(work, out, "html", LABELS, "nerft-run") == [out]
    page = out.read_text(encoding="utf-8")
    assert work.name == "sample.nerft.jsonl" and "nerft predict · nerft-run" in page
    assert '<mark class="ent c0" data-label="PER"' in page and "人名 (PER) [0, 2), score 0.950" in page


def test_scores_the_page_cannot_show_are_left_out(tmp_path):
    """A metrics.json holding Infinity or NaN (JSON accepts them as written by Python) must not reach the page's
    header, where JSON would carry them as null and the script would stop."""
    run = _stub_run(tmp_path)
    (run / "metrics.json").write_text('{"dev": {"best_f1": Infinity}, "test": {"f1": NaN}}', encoding="utf-8")
    assert describe_model(LoadOptions(model=str(run)))["scores"] == {}
