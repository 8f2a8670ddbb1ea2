"""The pages in a real browser: headless Chromium (Debian's ``chromium``, driven by playwright's Python package with
the system browser) against real ``nerft serve`` processes on 127.0.0.1, and an evaluate report opened from disk.

Two servers: the real tiny model (its answers are arbitrary, so the test reads them from the API first and checks
that the page shows exactly those), and ``serve_stub.py`` (the real ``nerft serve`` with a predictor whose answers
are known: labels, overlaps, scores, a character outside the BMP, a combining accent) for the label filter, the
min-score slider, the API key and the phone width. Screenshots go to ``$NERFT_ARTIFACTS`` (default: a temporary
folder). Marked ``browser``; skipped, saying why, without chromium or playwright.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from helpers_models import shared_run_dir
from serve_stub import LABELS, stub_entities
from test_pages import CASES, INJECTION, _report_case, _stub_run

from nerft.cli import main
from nerft.jsonl import write_jsonl
from nerft.pages.marks import Span, pieces

pytestmark = [pytest.mark.browser, pytest.mark.integration]
CHROMIUM = os.environ.get("NERFT_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TESTS = Path(__file__).parent
KEY = "page-test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory) -> Path:
    folder = Path(os.environ.get("NERFT_ARTIFACTS") or tmp_path_factory.mktemp("browser-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """A Chromium context with a fresh profile; skip with the reason when the browser or playwright is missing."""
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"marked browser: no Chromium at {CHROMIUM} (apt-get install chromium, or NERFT_CHROMIUM=PATH)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.skip("marked browser: playwright is not installed (pip install playwright; its browsers are not "
                    "needed, the system Chromium is used)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1100, "height": 850}, device_scale_factor=1)
        yield context
        context.close()


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.errors, page.dialogs = [], []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.on("console", lambda m: page.errors.append(m.text)  # a 401 before the key is typed is expected
            if m.type == "error" and not m.text.startswith("Failed to load resource") else None)
    page.on("dialog", lambda d: (page.dialogs.append(d.message), d.dismiss()))
    yield page
    assert page.dialogs == []  # no text ever ran as a script
    assert page.errors == []
    page.close()


class Server:
    """``command`` (a nerft serve) on a free loopback port, until the module ends."""

    def __init__(self, command: list[str], log: Path, env: dict[str, str] | None = None):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")  # noqa: SIM115
        self.process = subprocess.Popen([*command, "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})

    def wait(self, seconds: float = 90) -> Server:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}: "
                                   f"{Path(self.log.name).read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return self
            time.sleep(0.3)
        raise TimeoutError(f"no answer from {self.url} in {seconds:.0f} s")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


@pytest.fixture(scope="module")
def tiny_server(tiny_tokenizer, artifacts):
    server = Server([sys.executable, "-m", "nerft", "serve", "--model", str(shared_run_dir(tiny_tokenizer)),
                     "--constrained"], artifacts / "tiny-server.log")
    yield server.wait()
    server.stop()


@pytest.fixture(scope="module")
def stub_server(tmp_path_factory, artifacts):
    run = _stub_run(tmp_path_factory.mktemp("stub"))
    server = Server([sys.executable, str(TESTS / "serve_stub.py"), "--model", str(run), "--max-texts", "2"],
                    artifacts / "stub-server.log", env={"NERFT_API_KEY": KEY})
    yield server.wait()
    server.stop()


def expect(locator):
    """playwright's retrying assertions (imported here: the module loads without playwright, to skip)."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(locator)


def shown_marks(page) -> list[tuple[str, str]]:
    return [tuple(m) for m in page.eval_on_selector_all(
        "#results mark", "ms => ms.map(m => [m.textContent, m.dataset.label])")]


def doc_text(page, selector: str = "#results .doc") -> str:
    """The text a marked document shows, without the labels' tags."""
    return page.locator(selector).first.evaluate(
        "d => Array.from(d.childNodes).filter(n => !(n.classList && n.classList.contains('tag')))"
        ".map(n => n.textContent).join('')")


def expected_marks(text: str, entities: list[dict]) -> list[tuple[str, str]]:
    """What the page should show for an API answer: each marked piece with its innermost entity's label."""
    spans = [Span(e["start"], e["end"], e["label"], e.get("score")) for e in entities]
    return [(p.text, spans[p.covering[-1]].label) for p in pieces(text, spans) if p.covering]


def analyse(page, text: str) -> None:
    page.fill("#text", text)
    page.click("#analyse")
    expect(page.locator("#status")).to_contain_text("entities in")  # (no wait_for_function: the CSP forbids eval)


def test_the_page_shows_what_the_real_model_answered(page, tiny_server, artifacts):
    texts = ["张三在北京大学工作，李四住在上海。", INJECTION]
    answers = httpx.post(f"{tiny_server.url}/v1/ner", json={"texts": texts}, timeout=60).json()["results"]
    assert sum(len(a["entities"]) for a in answers) >= 1  # the tiny run finds something in these texts
    page.goto(tiny_server.url + "/")
    page.wait_for_selector("#model-info b")
    assert page.is_hidden("#key-row")  # no key on this server
    for text, answer in zip(texts, answers, strict=True):
        analyse(page, text)
        assert shown_marks(page) == expected_marks(text, answer["entities"])
        assert doc_text(page) == text  # the text as text, markup and all
    assert page.locator("#results script, #results img").count() == 0
    page.screenshot(path=str(artifacts / "serve-tiny-model.png"), full_page=True)


def test_filters_slider_key_and_json_on_known_answers(page, stub_server, artifacts):
    requests = []
    page.on("request", lambda r: requests.append(r.url) if r.url.endswith("/v1/ner") else None)
    page.goto(stub_server.url + "/")
    page.wait_for_selector("#key-row", state="visible")  # the page loads without the key and asks for it
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#model-info b")
    header = page.inner_text("#model-info")
    assert "Qwen/Qwen2-1.5B-Instruct @ abc123" in header and "76.4" in header and "80.3" in header
    text = "张三在北京大学工作，李四住在北京。𠮷野家和Zoe\u0301。" + INJECTION
    analyse(page, text)
    entities = [e.to_dict() for e in stub_entities(text)]
    assert shown_marks(page) == expected_marks(text, entities)
    assert doc_text(page) == text
    legend = page.eval_on_selector_all("#legend .chip", "cs => cs.map(c => c.innerText.replace(/\\s+/g, ' ').trim())")
    assert legend == ["人名 3", "地名 3", "机构名 2"]
    page.hover("#results mark >> nth=0")
    assert "score 0.620" in page.inner_text("#tip") and page.is_visible("#tip")

    page.click("#legend .chip[data-label=PER] input")  # label filter: persons hidden, nothing asked again
    assert {label for _, label in shown_marks(page)} == {"LOC", "ORG"}
    page.click("#legend .chip[data-label=PER] input")
    page.fill("#min-score", "0.9")  # the slider: only scores >= 0.9
    kept = [e for e in entities if e["score"] >= 0.9]
    assert shown_marks(page) == expected_marks(text, kept) and {e["text"] for e in kept} == {"李四", "北京"}
    assert page.inner_text("#shown-count") == f"{len(kept)} of {len(entities)} entities shown"
    page.fill("#min-score", "0")
    assert len(requests) == 1

    page.click("#toggle-json")
    api = httpx.post(f"{stub_server.url}/v1/ner", json={"texts": [text]}, headers={"authorization": f"Bearer {KEY}"})
    assert json.loads(page.inner_text("#json")) == api.json()
    page.screenshot(path=str(artifacts / "serve-page.png"), full_page=True)

    page.set_viewport_size({"width": 390, "height": 844})  # a phone: nothing wider than the window
    assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
    page.screenshot(path=str(artifacts / "serve-page-phone.png"), full_page=True)


def test_a_dropped_jsonl_file_is_sent_in_batches(page, stub_server, tmp_path):
    rows = [{"id": f"r{k}", "text": f"第{k}段：李四在北京"} for k in range(5)]
    path = tmp_path / "texts.jsonl"
    write_jsonl(path, rows)
    page.goto(stub_server.url + "/")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#model-info b")
    page.set_input_files("#file", str(path))
    expect(page.locator("#status")).to_contain_text("entities in")
    assert page.locator("#results .result").count() == 5  # three requests of --max-texts 2
    assert page.inner_text("#status").startswith("10 entities in 5 texts")
    assert page.inner_text("#results .result >> nth=4").startswith("id r4")


def test_bidirectional_controls_are_shown_not_obeyed(page, stub_server, tmp_path):
    """U+202E (right-to-left override) in a text or an id would reverse what follows it on the page: it is shown
    as a visible mark, and the marks after it stay where their offsets put them."""
    text = "张三\u202e在北京。\u2067李四"
    page = _keyed(page, stub_server)
    analyse(page, text)
    shown = doc_text(page)
    assert "\u202e" not in shown and "\u2067" not in shown
    assert shown == "张三\u27e8U+202E\u27e9在北京。\u27e8U+2067\u27e9李四"
    assert [t for t, _ in shown_marks(page)] == ["张三", "北京", "李四"]
    path = tmp_path / "texts.jsonl"
    write_jsonl(path, [{"id": "evil\u202eid", "text": "李四在北京"}, {"id": "b", "text": "北京"}])
    page.set_input_files("#file", str(path))
    expect(page.locator("#status")).to_contain_text("entities in")
    assert page.inner_text("#results .result >> nth=0").startswith("id evil\u27e8U+202E\u27e9id")


def _keyed(page, stub_server):
    page.goto(stub_server.url + "/")
    page.fill("#api-key", KEY)
    page.press("#api-key", "Enter")
    page.wait_for_selector("#model-info b")
    return page


def test_the_browser_cuts_texts_as_python_does(page, stub_server):
    page.goto(stub_server.url + "/")
    for name, (text, spans, _) in CASES.items():
        given = [{"start": s.start, "end": s.end, "label": s.label} for s in spans]
        got = page.evaluate("([t, s]) => NerftMarks.pieces(t, s)", [text, given])
        want = [{"start": p.start, "end": p.end, "text": p.text, "covering": list(p.covering),
                 "closing": list(p.closing)} for p in pieces(text, spans)]
        assert got == want, name


def test_the_evaluate_report_filters(page, tmp_path, artifacts):
    gold, preds = _report_case()
    write_jsonl(tmp_path / "gold.jsonl", [d.to_dict() for d in gold])
    write_jsonl(tmp_path / "pred.jsonl", [{"id": d.id, "entities": [e.to_dict() for e in p]}
                                         for d, p in zip(gold, preds, strict=True)])
    (tmp_path / "labels.json").write_text(json.dumps(LABELS.to_dict(), ensure_ascii=False), encoding="utf-8")
    assert main(["evaluate", "--gold", str(tmp_path / "gold.jsonl"), "--pred", str(tmp_path / "pred.jsonl"),
                 "--out", str(tmp_path / "eval"), "--quiet"]) == 0
    page.goto((tmp_path / "eval" / "report.html").as_uri())
    page.wait_for_selector(".err-doc")
    ids = lambda: page.eval_on_selector_all(".err-doc", "ds => ds.map(d => d.dataset.id)")  # noqa: E731
    chips = lambda: page.eval_on_selector_all(  # noqa: E731
        "#kind-filter .chip", "cs => cs.map(c => c.innerText.replace(/\\s+/g, ' ').trim())")
    # (evaluate drops the prediction that is not in the text, a hallucination, before scoring)
    assert ids() == ["bad", "kinds"] and chips() == ["missed 3", "spurious 1", "wrong label 1", "wrong boundary 1"]
    assert doc_text(page, ".err-doc[data-id=bad] [data-layer=gold] .doc") == gold[1].text
    page.click("#kind-filter .chip[data-kind=missed] input")
    page.click("#kind-filter .chip[data-kind=spurious] input")
    assert ids() == ["bad", "kinds"]  # one wrong label in one, one wrong boundary in the other
    page.click("#kind-filter .chip[data-kind=wrong_boundary] input")
    assert ids() == ["bad"] and page.inner_text("#doc-count") == "documents 1–1 of 1"
    for kind in ("missed", "spurious", "wrong_boundary"):
        page.click(f"#kind-filter .chip[data-kind={kind}] input")
    page.select_option("#label-filter", "PER")  # errors with a person on either side
    assert ids() == ["bad", "kinds"] and chips() == ["missed 3", "spurious 0", "wrong label 0", "wrong boundary 0"]
    page.select_option("#label-filter", "ORG")
    assert ids() == ["bad", "kinds"] and chips() == ["missed 0", "spurious 0", "wrong label 1", "wrong boundary 1"]
    page.fill("#search", "北京大学")
    expect(page.locator(".err-doc")).to_have_count(1)
    assert ids() == ["kinds"]
    assert page.locator(".err-doc .flag").count() >= 2  # the errors' spans are outlined in gold and predicted
    page.screenshot(path=str(artifacts / "evaluate-report.png"), full_page=True)
