"""The CPU engine backends against the transformers backend on one tiny trained run: ``nerft export --output-format ct2``
+ ``--backend ct2`` (CTranslate2) and ``nerft export --output-format gguf`` + ``--backend llamacpp`` (llama.cpp). The
exported models are real engine models, run by the real engines; each must give the transformers backend's
answers, entities, offsets and scores (within the engine's arithmetic), windows included. The GGUF file is also
read back by transformers' own GGUF loader (no llama.cpp needed), which checks the tensor names and hyperparameters.
Tests needing an engine that is not installed skip with the extra to install."""

from __future__ import annotations

import contextlib
import importlib.util
import json

import pytest
from helpers_engines import build_answering_run

from nerft.inference.loading import load_predictor
from nerft.schema import NerftError

TEXTS = ["张三在北京工作。", "我和张三明天去北京。", "今天天气很好。", "北京"]
LONG = "张三昨天到了北京，" * 12  # several windows at window=24
needs_ct2 = pytest.mark.skipif(importlib.util.find_spec("ctranslate2") is None,
                               reason="CTranslate2 is not installed (pip install 'nerft[ct2]')")
needs_llamacpp = pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                                    reason="llama-cpp-python is not installed (pip install 'nerft[llamacpp]')")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, tiny_tokenizer):
    return build_answering_run(tmp_path_factory.mktemp("engines"), tiny_tokenizer)


@pytest.fixture(scope="module")
def reference(run_dir):
    """The transformers backend's predictions: the short texts whole, and the long one in windows."""
    short = load_predictor(run_dir, batch_size=2).predict_detailed(TEXTS)
    return short, load_predictor(run_dir, window=24, window_overlap=4).predict_detailed([LONG])


def export(run_dir, tmp_path_factory, fmt: str, quant: str):
    from nerft.export import export_for_engine
    from nerft.inference.options import LoadOptions

    out = tmp_path_factory.mktemp(f"{fmt}-{quant}") / "model"
    return export_for_engine(LoadOptions(model=str(run_dir)), out, fmt, quant)


def assert_same(got, want, score_tol: float) -> None:
    """Same answers and entities (offsets, labels, text) with scores within ``score_tol``."""
    assert [p.answers for p in got] == [p.answers for p in want]
    for g, w in zip(got, want, strict=True):
        assert [(e.start, e.end, e.label, e.text) for e in g.entities] == \
               [(e.start, e.end, e.label, e.text) for e in w.entities]
        assert all(abs(a.score - b.score) <= score_tol for a, b in zip(g.entities, w.entities, strict=True))
        assert (g.finished, g.hallucinated) == (w.finished, w.hallucinated)


def test_the_reference_run_answers_with_grounded_entities(reference):
    """The comparison below is not vacuous: the run writes entities, grounded where the text has them."""
    short, long = reference
    assert [[e.text for e in p.entities] for p in short] == [["张三", "北京"], ["张三", "北京"], [], ["北京"]]
    assert short[1].entities[1].start == 7 and all(0 < e.score <= 1 for e in short[0].entities)
    assert len(long[0].entities) > 2  # mentions from several windows, offsets into the whole text
    assert {LONG[e.start:e.end] for e in long[0].entities} <= {"张三", "北京"}


@needs_ct2
def test_ct2_float32_gives_the_transformers_answers(run_dir, reference, tmp_path_factory):
    folder = export(run_dir, tmp_path_factory, "ct2", "float32")
    assert (folder / "model.bin").is_file() and (folder / "nerft.json").is_file()
    assert json.loads((folder / "nerft.json").read_text())["merged"] is True
    short, long = reference
    for prefix_cache in (True, False):  # the system prompt as CTranslate2's static prompt, or in every prompt
        p = load_predictor(folder, backend="ct2", batch_size=2, prefix_cache=prefix_cache)
        assert_same(p.predict_detailed(TEXTS), short, 1e-4)
    p = load_predictor(folder, backend="ct2", window=24, window_overlap=4)
    assert_same(p.predict_detailed([LONG]), long, 1e-4)
    assert p.predict(["张三在北京"], labels=["LOC"]) == [[e for e in p.predict(["张三在北京"])[0] if e.label == "LOC"]]


@needs_ct2
def test_ct2_int8_export_predicts(run_dir, reference, tmp_path_factory):
    folder = export(run_dir, tmp_path_factory, "ct2", "int8")
    got = load_predictor(folder, backend="ct2").predict_detailed(TEXTS)
    same = sum(g.entities == w.entities for g, w in zip(got, reference[0], strict=True))
    assert same >= len(TEXTS) - 1, [g.answers for g in got]


@needs_ct2
def test_ct2_refuses_what_it_cannot_do(run_dir, tmp_path_factory):
    with pytest.raises(NerftError, match="CTranslate2 model"):
        load_predictor(run_dir, backend="ct2")  # a run directory, not an export
    folder = export(run_dir, tmp_path_factory, "ct2", "float32")
    with pytest.raises(NerftError, match="--constrained"):
        load_predictor(folder, backend="ct2", constrained=True)


def test_gguf_export_reads_back_as_the_merged_model(run_dir, tmp_path_factory, tiny_tokenizer):
    """transformers' GGUF loader reads the f32 file into the same logits as the merged folder: tensor names,
    shapes and hyperparameters are right; the tokenizer metadata is the run's."""
    gguf = pytest.importorskip("gguf", reason="the gguf package is not installed (pip install 'nerft[gguf]')")
    import torch
    from transformers import AutoModelForCausalLM

    from nerft.export import export_model
    from nerft.inference.options import LoadOptions

    folder = export(run_dir, tmp_path_factory, "gguf", "f32")
    merged = export_model(LoadOptions(model=str(run_dir)), tmp_path_factory.mktemp("hf") / "merged")
    ids = torch.tensor([tiny_tokenizer.encode("张三在北京工作。")])
    with torch.no_grad():
        want = AutoModelForCausalLM.from_pretrained(merged)(ids).logits
        got = AutoModelForCausalLM.from_pretrained(folder, gguf_file="model-f32.gguf")(ids).logits
    assert torch.allclose(got, want, atol=1e-5)
    reader = gguf.GGUFReader(folder / "model-f32.gguf")
    fields = {k: f.contents() for k, f in reader.fields.items()}
    assert fields["general.architecture"] == "qwen2" and fields["tokenizer.ggml.pre"] == "qwen2"
    tokens = fields["tokenizer.ggml.tokens"]
    assert tokens[:len(tiny_tokenizer)] == tiny_tokenizer.convert_ids_to_tokens(list(range(len(tiny_tokenizer))))
    assert fields["tokenizer.chat_template"] == tiny_tokenizer.chat_template
    assert fields["tokenizer.ggml.eos_token_id"] == tiny_tokenizer.convert_tokens_to_ids("<|im_end|>")
    modelfile = (folder / "Modelfile").read_text()
    prompt = json.loads((folder / "nerft.json").read_text())["prompt"]
    assert "FROM ./model-f32.gguf" in modelfile and f'SYSTEM """{prompt["system"]}"""' in modelfile
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


@needs_llamacpp
def test_llamacpp_f16_gives_the_transformers_answers(run_dir, reference, tmp_path_factory):
    folder = export(run_dir, tmp_path_factory, "gguf", "f16")
    short, long = reference
    p = load_predictor(folder, backend="llamacpp")
    assert_same(p.predict_detailed(TEXTS), short, 2e-2)
    p = load_predictor(folder, backend="llamacpp", window=24, window_overlap=4)
    assert_same(p.predict_detailed([LONG]), long, 2e-2)


@needs_llamacpp
@pytest.mark.parametrize("quant", ["q8_0", "q4_k_m"])
def test_llamacpp_quantized_export_predicts(run_dir, reference, tmp_path_factory, quant):
    folder = export(run_dir, tmp_path_factory, "gguf", quant)
    assert (folder / f"model-{quant}.gguf").is_file() and not list(folder.glob(".model-*"))
    got = load_predictor(folder, backend="llamacpp").predict_detailed(TEXTS)
    same = sum(g.entities == w.entities for g, w in zip(got, reference[0], strict=True))
    print(f"{quant}: identical entities on {same}/{len(TEXTS)} texts")
    assert same >= len(TEXTS) - 1, [g.answers for g in got]


@needs_llamacpp
def test_llama_cpp_s_own_server_through_the_openai_backend_gives_the_in_process_entities(run_dir, tmp_path_factory):
    """llama.cpp's OpenAI-compatible server (``python -m llama_cpp.server``, llama-cpp-python's ``server`` extra)
    on the run's GGUF export, read by ``--backend openai``: the entities of ``--backend llamacpp`` in process, and
    scores from the log-probabilities that server returns."""
    if importlib.util.find_spec("sse_starlette") is None or importlib.util.find_spec("starlette_context") is None:
        pytest.skip("llama-cpp-python's server extra is not installed (pip install 'llama-cpp-python[server]')")
    import socket
    import subprocess
    import sys
    import time

    import httpx

    from nerft.inference.options import LoadOptions, OpenAIOptions, PredictOptions

    folder = export(run_dir, tmp_path_factory, "gguf", "f16")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "llama_cpp.server", "--model", str(folder / "model-f16.gguf"),
                               "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--model_alias",
                               "nerft-gguf"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read()[-2000:]
            with contextlib.suppress(httpx.TransportError):  # not listening yet
                if httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=1).status_code == 200:
                    break
            assert time.monotonic() < deadline, "llama.cpp's server did not start in 60 s"
            time.sleep(0.2)
        from nerft.inference.loading import open_predictor

        load = LoadOptions(model=str(folder), backend="openai",
                           openai=OpenAIOptions(base_url=f"http://127.0.0.1:{port}/v1"))
        got = open_predictor(load, PredictOptions()).predict_detailed(TEXTS)
    finally:
        server.terminate()
        server.wait(30)
    want = load_predictor(folder, backend="llamacpp").predict_detailed(TEXTS)
    assert [[(e.start, e.end, e.label, e.text) for e in p.entities] for p in got] == \
        [[(e.start, e.end, e.label, e.text) for e in p.entities] for p in want]
    assert sum(len(p.entities) for p in got) >= 4
    assert all(abs(a.score - b.score) <= 2e-2 for g, w in zip(got, want, strict=True)
               for a, b in zip(g.entities, w.entities, strict=True))


def test_export_format_errors(run_dir, tmp_path):
    from nerft.export import export_for_engine
    from nerft.inference.options import LoadOptions

    load = LoadOptions(model=str(run_dir))
    with pytest.raises(NerftError, match="--quant goes with"):
        export_for_engine(load, tmp_path / "a", "hf", "q8_0")
    with pytest.raises(NerftError, match="not a gguf type"):
        export_for_engine(load, tmp_path / "b", "gguf", "int8")
    assert not (tmp_path / "b").exists()


CT2_DAMAGE = {  # what is done to which file of a CTranslate2 export; every case is one line, exit status 2
    f"{what} {name}": (name, what) for name in ("model.bin", "vocabulary.json", "config.json")
    for what in ("truncated", "empty", "random")
} | {"missing model.bin": ("model.bin", "missing"), "model.bin a folder": ("model.bin", "folder")}


@pytest.fixture(scope="module")
def ct2_export(run_dir, tmp_path_factory):
    pytest.importorskip("ctranslate2", reason="CTranslate2 is not installed (pip install 'nerft[ct2]')")
    return export(run_dir, tmp_path_factory, "ct2", "int8")


@needs_ct2
@pytest.mark.parametrize("damage", CT2_DAMAGE)
def test_a_damaged_ct2_export_is_one_line(ct2_export, tmp_path, capsys, damage):
    import os
    import shutil

    from nerft.cli import main

    folder = tmp_path / "ct2"
    shutil.copytree(ct2_export, folder)
    name, what = CT2_DAMAGE[damage]
    target = folder / name
    data = target.read_bytes()
    if what == "truncated":
        target.write_bytes(data[: len(data) // 2])
    elif what == "empty":
        target.write_bytes(b"")
    elif what == "random":
        target.write_bytes(os.urandom(max(len(data) // 4, 64)))
    elif what == "missing":
        target.unlink()
    else:
        target.unlink()
        target.mkdir()
    assert main(["predict", "--model", str(folder), "--backend", "ct2", "张三在北京"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len([line for line in err.splitlines() if "error" in line]) == 1, err[-400:]


@needs_llamacpp
def test_a_truncated_gguf_is_one_line(run_dir, tmp_path_factory, capsys):
    from nerft.cli import main

    folder = export(run_dir, tmp_path_factory, "gguf", "q8_0")
    [gguf] = list(folder.glob("*.gguf"))
    gguf.write_bytes(gguf.read_bytes()[: gguf.stat().st_size // 2])
    assert main(["predict", "--model", str(folder), "--backend", "llamacpp", "张三在北京"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "llama.cpp cannot load" in err


def _word_level_tokenizer():
    """A tokenizer no GGUF file can carry: word-level, no merges (what the demo used to build)."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {t: i for i, t in enumerate([*specials, "<unk>", *"张三在北京工作。abc "])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>", additional_special_tokens=specials,
                                   chat_template="{% for m in messages %}{{ m['content'] }}{% endfor %}")


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed (pip install 'nerft[gguf]')")
def test_a_tokenizer_no_gguf_can_carry_is_refused_before_the_merge(tmp_path, capsys):
    from helpers_models import build_run_dir

    from nerft.cli import main

    run = build_run_dir(tmp_path / "w", _word_level_tokenizer())
    out = tmp_path / "gguf"
    assert main(["export", "--model", str(run), "--output-format", "gguf", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "byte-level BPE tokenizer with its merges" in err and "WordLevel" in err and "Traceback" not in err
    assert not out.exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".gguf")]


@pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed (pip install 'nerft[gguf]')")
def test_the_demo_run_reaches_llama_cpp(tmp_path):
    """The README's main job is the demo: its GGUF export carries the demo tokenizer's merges and, where
    llama-cpp-python is installed, loads and answers as the transformers backend does."""
    import gguf

    from nerft.demo import DemoConfig, run_demo
    from nerft.export import export_for_engine
    from nerft.inference.options import LoadOptions

    run_demo(DemoConfig(out=str(tmp_path / "demo"), docs=80, steps=4, eval_every=4, dev_docs=4, hidden_size=32))
    run = tmp_path / "demo" / "run"
    folder = export_for_engine(LoadOptions(model=str(run)), tmp_path / "gguf", "gguf", "f32")
    [path] = list(folder.glob("*.gguf"))
    reader = gguf.GGUFReader(str(path))
    merges = reader.fields["tokenizer.ggml.merges"]
    assert len(merges.data) > 0  # llama.cpp refuses a BPE without merges ("cannot find tokenizer merges")
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python is not installed: the GGUF file was checked, not loaded")
    texts = ["王伟在北京工作。", "今天天气很好。"]
    want = load_predictor(run, max_new_tokens=12).predict(texts)
    got = load_predictor(folder, backend="llamacpp", max_new_tokens=12).predict(texts)
    assert [[(e.start, e.end, e.label) for e in ents] for ents in got] == \
        [[(e.start, e.end, e.label) for e in ents] for ents in want]
