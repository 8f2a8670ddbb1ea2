"""The vLLM backend's shared logic (prompts, budgets, parsing, grounding, windows), tested with a fake engine: vLLM
is not installed on CPU machines."""

import importlib.util

import pytest

from nerft.generation import Generated, prompt_ids
from nerft.inference.base import answer_budget
from nerft.inference.options import PredictOptions
from nerft.inference.vllm_backend import VllmEngine, VllmPredictor
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt
from nerft.schema import NerftError


class FakeEngine:
    """Answers every prompt with one line per known name that occurs in the prompt's text."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.calls: list[tuple[list[list[int]], list[int]]] = []

    def generate(self, prompts, limits):
        self.calls.append((prompts, limits))
        out = []
        for ids in prompts:
            text = self.tokenizer.decode(ids)
            lines = [f"{lab}:{w}" for w, lab in (("张三", "人名"), ("北京", "地点"), ("火星", "地点"))
                     if w in text.split("<|im_start|>user\n")[-1]]
            answer = "\n".join(lines)
            tids = self.tokenizer.encode(answer, add_special_tokens=False)
            out.append(Generated(answer, tids, [-0.1] * len(tids), True))
        return out


@pytest.fixture
def vllm_predictor(tiny_tokenizer):
    labels = ccfbdci_labels()
    return VllmPredictor(FakeEngine(tiny_tokenizer), tiny_tokenizer, labels, build_prompt(labels, "compact"),
                         PredictOptions(window=12, window_overlap=0))


def test_prompts_budgets_and_grounding(vllm_predictor, tiny_tokenizer):
    texts = ["张三在北京。", "没有实体"]
    results = vllm_predictor.predict(texts)
    prompts, limits = vllm_predictor.engine.calls[0]
    assert prompts[0] == prompt_ids(tiny_tokenizer, vllm_predictor.prompt, texts[0])  # same prompt as transformers
    assert all(lim <= answer_budget(12, 20) for lim in limits)
    assert [(e.start, e.end, e.label, e.text) for e in results[0]] == [(0, 2, "PER", "张三"), (3, 5, "LOC", "北京")]
    assert results[0][0].score == pytest.approx(0.905, abs=1e-3)  # exp(-0.1)
    assert results[1] == []
    assert vllm_predictor.predict(texts, labels=["LOC"])[0][0].label == "LOC"


def test_windows_map_back_to_document_offsets(vllm_predictor):
    text = "今天天气很好，我们出去玩吧。" * 2 + "张三在北京。"
    [ents] = vllm_predictor.predict([text])
    assert len(vllm_predictor.engine.calls[-1][0]) > 1  # several windows
    assert [(text[e.start:e.end], e.label) for e in ents] == [("张三", "PER"), ("北京", "LOC")]


def test_constrained_is_refused(tiny_tokenizer):
    labels = ccfbdci_labels()
    with pytest.raises(NerftError, match="transformers backend"):
        VllmPredictor(FakeEngine(tiny_tokenizer), tiny_tokenizer, labels, build_prompt(labels),
                      PredictOptions(constrained=True))


@pytest.mark.skipif(importlib.util.find_spec("vllm") is not None, reason="vllm is installed")
def test_missing_vllm_is_a_clear_error(tiny_tokenizer, tmp_path):
    with pytest.raises(NerftError, match="pip install 'nerft\\[vllm\\]'"):
        VllmEngine(tmp_path, tiny_tokenizer)


@pytest.mark.gpu
def test_real_vllm_gives_the_transformers_entities(tiny_tokenizer, tmp_path):
    """On a CUDA machine with vLLM installed: the same run (base + LoRA adapter) through vLLM and through
    transformers, greedy, gives the same entities and offsets for every text."""
    from helpers_models import build_run_dir

    from nerft.inference.loading import load_predictor

    run = build_run_dir(tmp_path, tiny_tokenizer, seed=4)
    texts = ["张三在北京工作。", "李四去了上海和广州。", "今天天气很好。", "王五在清华大学读书，住在海淀区。"]
    options = {"batch_size": 4, "max_new_tokens": 24}
    reference = load_predictor(run, device="cuda", dtype="fp32", **options).predict(texts)
    served = load_predictor(run, backend="vllm", device="cuda", dtype="fp32", **options).predict(texts)
    assert [[(e.start, e.end, e.label) for e in doc] for doc in served] == \
        [[(e.start, e.end, e.label) for e in doc] for doc in reference]
