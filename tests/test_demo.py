"""`nerft demo`: the generated corpus, the project's tokenizer, and a reduced end-to-end run."""

from __future__ import annotations

import json

import pytest

from nerft.cli import main
from nerft.demo import DEMO_SYSTEM_PROMPT, DemoConfig, run_demo
from nerft.resources.demo_corpus import generate_corpus
from nerft.resources.demo_tokenizer import build_char_tokenizer
from nerft.rundir import RunInfo
from nerft.schema import validate_document


def test_generated_corpus_is_valid_and_seeded():
    docs = generate_corpus(300, seed=3)
    assert docs == generate_corpus(300, seed=3)
    assert all(not validate_document(d, allow_overlaps=False) for d in docs)
    assert {e.label for d in docs for e in d.entities} == {"PER", "LOC", "GPE", "ORG"}
    assert 0 < sum(not d.entities for d in docs) < 60


def test_char_tokenizer_round_trips_and_speaks_chatml():
    docs = generate_corpus(50)
    tok = build_char_tokenizer(d.text for d in docs)
    for d in docs:
        ids = tok(d.text, add_special_tokens=False)["input_ids"]
        assert len(ids) == len(d.text) and tok.decode(ids) == d.text
    ids = tok.apply_chat_template([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
                                  add_generation_prompt=True, tokenize=True)
    assert tok.decode(ids) == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_ids_to_tokens([tok.pad_token_id, tok.eos_token_id]) == ["<|endoftext|>", "<|im_end|>"]


@pytest.mark.integration
def test_reduced_demo_runs_end_to_end(tmp_path, capsys):
    summary = run_demo(DemoConfig(out=str(tmp_path / "demo"), docs=120, steps=8, eval_every=8, dev_docs=6,
                                  hidden_size=32))
    out = capsys.readouterr().out
    for stage in ("[1/4] prepare", "[2/4] train", "[3/4] evaluate", "[4/4] predict", "before training"):
        assert stage in out
    assert "predicted:" in out and "gold:" in out
    run = tmp_path / "demo" / "run"
    assert (run / "adapter" / "adapter_model.safetensors").is_file() and (run / "nerft.json").is_file()
    assert RunInfo.load(run).prompt.system == DEMO_SYSTEM_PROMPT  # data.system_prompt reaches the run directory
    assert json.loads((tmp_path / "demo" / "demo_summary.json").read_text())["dev_f1_before"] == 0.0
    assert summary["test"]["docs"] > 0


@pytest.mark.slow
def test_full_demo_learns(tmp_path):
    """The README's demo: the tiny model goes from F1 0 to clearly above 0 (about 3 minutes on 2 cores)."""
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 0
    summary = json.loads((tmp_path / "demo" / "demo_summary.json").read_text())
    assert summary["dev_f1_before"] == 0.0 and summary["dev_f1_after"] > 20
