import json

import pytest
from helpers_models import RUN_SEED, build_tutorial_checkpoint, shared_run_dir

from nerft import cli
from nerft.generation import PrefixCache, generate_batch, prompt_ids, shared_prefix_ids
from nerft.inference.base import RepetitionGuard, answer_budget
from nerft.inference.loading import load_predictor
from nerft.inference.options import PredictOptions
from nerft.inference.transformers_backend import TransformersPredictor
from nerft.predict.files import finished_ids, predict_file, read_inputs
from nerft.schema import NerftError

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", "联合国秘书长访问了巴黎和伦敦，会见了马克龙。"]


def raw_answers(predictor, texts):
    """The raw answer of each window of each text."""
    return [p.answers for p in predictor.predict_detailed(texts)]


@pytest.fixture(scope="module")
def run_dir(tiny_tokenizer):
    return shared_run_dir(tiny_tokenizer)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return load_predictor(run_dir, max_new_tokens=8, constrained=True, batch_size=3)


def test_predict_keeps_order_and_offsets_slice_text(predictor):
    results = predictor.predict(TEXTS)
    assert len(results) == len(TEXTS)
    assert sum(len(r) for r in results) > 0  # constrained: the random model writes entities, all grounded
    for text, ents in zip(TEXTS, results, strict=True):
        for e in ents:
            assert text[e.start:e.end] == e.text and e.label in predictor.labels
            assert 0.0 < e.score <= 1.0
    # order kept: each text alone gives the same entities as in the batch
    assert [predictor.predict([t])[0] for t in TEXTS[1:3]] == results[1:3]


def test_batched_equals_one_at_a_time_unconstrained(run_dir):
    p = load_predictor(run_dir, max_new_tokens=6, batch_size=4)
    batched = raw_answers(p, TEXTS)
    single = [raw_answers(p, [t])[0] for t in TEXTS]
    assert batched == single


def test_prefix_cache_gives_identical_tokens(predictor, tiny_tokenizer):
    model, prompt = predictor.model, predictor.prompt
    ids = [prompt_ids(tiny_tokenizer, prompt, t) for t in TEXTS]
    prefix = PrefixCache(model, shared_prefix_ids(tiny_tokenizer, prompt))
    assert len(prefix.ids) > 20
    plain = generate_batch(model, tiny_tokenizer, ids, 5)
    cached = generate_batch(model, tiny_tokenizer, ids, 5, prefix=prefix)
    assert [g.token_ids for g in plain] == [g.token_ids for g in cached]


def test_label_subset(predictor):
    for ents in predictor.predict(TEXTS, labels=["PER"]):
        assert all(e.label == "PER" for e in ents)
    with pytest.raises(NerftError):
        predictor.predict(TEXTS, labels=["NOPE"])


def test_long_document_is_windowed_with_global_offsets(run_dir):
    p = load_predictor(run_dir, max_new_tokens=8, constrained=True, window=16, window_overlap=4)
    text = "".join(TEXTS) * 2
    [ents] = p.predict([text])
    assert p.stats.windows > 2 and p.stats.texts == 1
    assert all(text[e.start:e.end] == e.text for e in ents)
    assert len({(e.start, e.end, e.label) for e in ents}) == len(ents)


@pytest.mark.parametrize("fmt_name", ["compact", "jsonl", "tutorial"])
def test_answer_budget_holds_every_gold_answer_and_is_cut_to_the_text(tiny_tokenizer, fmt_name):
    from nerft.formats import get_format
    from nerft.inference.base import entity_overhead_tokens
    from nerft.labels import ccfbdci_labels
    from nerft.resources.demo_corpus import generate_corpus
    from nerft.schema import Document, Entity

    def n_tokens(s: str) -> int:
        return len(tiny_tokenizer.encode(s, add_special_tokens=False))

    labels, fmt = ccfbdci_labels(), get_format(fmt_name)
    overhead = entity_overhead_tokens(tiny_tokenizer, labels, fmt_name)
    none = n_tokens(fmt.none_text) if fmt.none_text else 0
    dense = "张三李四王五赵六孙七周八吴九郑十" * 3  # nothing but two-character entities
    docs = generate_corpus(200, seed=1) + [
        Document("dense", dense, [Entity(i, i + 2, "GPE", dense[i:i + 2]) for i in range(0, len(dense), 2)])]
    for doc in docs:  # room for the right answer, however many entities the text holds
        assert n_tokens(fmt.render(doc.entities, labels)) <= answer_budget(n_tokens(doc.text), overhead, none), doc
    # and no more than a text can hold: less room than one entity per text token, so a looping model is cut in
    # proportion to its text
    budgets = [answer_budget(n, overhead, none) for n in (10, 20, 40, 80)]
    assert budgets == sorted(budgets)
    assert all(b < n * (overhead + 2) for b, n in zip(budgets, (10, 20, 40, 80), strict=True))


def test_repetition_guard(tiny_tokenizer, predictor):
    guard = RepetitionGuard(tiny_tokenizer, ["北京和北京", "北京"], predictor.labels)
    ids = tiny_tokenizer.encode("地点:北京\n地点:北京\n", add_special_tokens=False)
    assert not guard(0, ids)  # 北京 occurs twice: a real duplicate
    assert guard(1, ids)


def test_resume_finishes_only_the_rest(run_dir, tmp_path):
    inp = tmp_path / "in.jsonl"
    inp.write_text("".join(json.dumps({"id": f"d{i}", "text": t}, ensure_ascii=False) + "\n"
                           for i, t in enumerate(TEXTS * 2)), encoding="utf-8")
    base = load_predictor(run_dir, max_new_tokens=3)

    class Interrupted(Exception):
        """Stands for a crash or Ctrl-C in the middle of a corpus."""

    class Flaky:
        labels, name, calls = base.labels, "flaky", []

        def predict_detailed(self, texts, labels=None):
            if len(self.calls) == 1:
                raise Interrupted
            self.calls.append(list(texts))
            return base.predict_detailed(texts, labels)

    out = tmp_path / "out.jsonl"
    with pytest.raises(Interrupted):
        predict_file(Flaky(), inp, out, chunk_size=3, progress=False)
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"id": "d3", "text": "torn')  # a write cut in the middle
    texts = dict(read_inputs(inp))
    first = finished_ids(out, texts)  # one chunk, the longest texts first
    assert len(first) == 3
    assert min(len(texts[i]) for i in first) >= max(len(t) for i, t in texts.items() if i not in first)
    calls = []

    class Counting(Flaky):
        def predict_detailed(self, texts, labels=None):
            calls.append(list(texts))
            return base.predict_detailed(texts, labels)

    assert predict_file(Counting(), inp, out, chunk_size=3, progress=False) == 5
    assert sum(len(c) for c in calls) == 5
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["id"] for r in rows] == [f"d{i}" for i in range(8)]
    fresh = tmp_path / "fresh.jsonl"
    predict_file(base, inp, fresh, chunk_size=3, progress=False)
    assert fresh.read_text(encoding="utf-8") == out.read_text(encoding="utf-8")


def test_cli_predict_texts_and_file(run_dir, tmp_path, capsys):
    assert cli.main(["predict", "--model", str(run_dir), "--output-format", "nerft", "--constrained", "--max-new-tokens", "6",
                     TEXTS[0]]) == 0
    line = json.loads(capsys.readouterr().out.splitlines()[0])
    assert line["text"] == TEXTS[0] and isinstance(line["entities"], list)
    inp = tmp_path / "in.txt"
    inp.write_text("\n".join(TEXTS) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    assert cli.main(["predict", "--model", str(run_dir), "--input", str(inp), "--output", str(out), "--raw",
                     "--max-new-tokens", "6", "--no-progress"]) == 0
    rows = [json.loads(x) for x in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == TEXTS and all("output" in r for r in rows)


def test_cli_rejects_mismatching_format(run_dir, capsys):
    assert cli.main(["predict", "--model", str(run_dir), "--answer-format", "jsonl", "x"]) == 2
    assert "does not match" in capsys.readouterr().err
    assert cli.main(["predict", "--model", str(run_dir), "--answer-format", "compact", "--preset", "nerft",
                     "--max-new-tokens", "2", "x"]) == 0


def test_tutorial_checkpoint_loads_with_tutorial_prompt(tiny_tokenizer, tmp_path):
    base, ckpt = build_tutorial_checkpoint(tmp_path, tiny_tokenizer)
    p = load_predictor(base=base, adapter=ckpt, max_new_tokens=6)
    assert isinstance(p, TransformersPredictor)
    assert p.prompt.style == "tutorial" and p.prompt.output_format == "tutorial"
    assert p.prompt.user_prefix == "文本:" and p.labels.codes == ["LOC", "PER", "GPE", "ORG"]
    assert len(p.predict(["张三在北京。"])) == 1
    # the checkpoint folder alone works too: its adapter_config names the base folder
    assert load_predictor(ckpt, max_new_tokens=2).prompt.style == "tutorial"


def test_adapter_changes_outputs(run_dir, tiny_tokenizer):
    from helpers_models import make_tiny_qwen2

    with_adapter = load_predictor(run_dir, max_new_tokens=4)
    plain = TransformersPredictor(make_tiny_qwen2(tokenizer=tiny_tokenizer), tiny_tokenizer, with_adapter.labels,
                                  with_adapter.prompt, PredictOptions(max_new_tokens=4))
    assert raw_answers(with_adapter, TEXTS) != raw_answers(plain, TEXTS)


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(NerftError, match="neither a nerft model folder"):
        load_predictor(tmp_path)


def test_from_model_for_dev_eval_keeps_training_mode_and_follows_weights(tiny_tokenizer, predictor):
    import torch
    from helpers_models import make_tiny_qwen2

    model = make_tiny_qwen2(seed=5, tokenizer=tiny_tokenizer).train()
    p = TransformersPredictor(model, tiny_tokenizer, predictor.labels, predictor.prompt,
                              PredictOptions(max_new_tokens=6), frozen=False)
    p.predict(TEXTS[:2])
    assert model.training  # given back in training mode
    with torch.no_grad():  # a training step changes the weights: the prefix cache must not go stale
        for w in model.parameters():
            w.add_(torch.randn_like(w) * 0.05)
    uncached = TransformersPredictor(model, tiny_tokenizer, predictor.labels, predictor.prompt,
                                     PredictOptions(max_new_tokens=6, prefix_cache=False))
    assert raw_answers(p, TEXTS[:2]) == raw_answers(uncached, TEXTS[:2])


def test_empty_inputs(predictor):
    assert predictor.predict([]) == []
    assert predictor.predict(["", "北京"])[0] == []


@pytest.mark.shared
def test_a_run_with_the_real_qwen2_tokenizer(qwen2_tokenizer, tmp_path):
    """The pipeline with Qwen2's own token ids and template: a run directory saved with the real tokenizer loads,
    builds ChatML prompts from Qwen2's ids, stops on its ids, and decodes (constrained) into grounded entities,
    never picking one of the model's rows past the tokenizer's vocabulary (151,936 rows, 151,646 tokens)."""
    from helpers_models import build_run_dir

    from nerft.generation import stop_token_ids

    run = build_run_dir(tmp_path, qwen2_tokenizer, seed=RUN_SEED)
    p = load_predictor(run, max_new_tokens=8, constrained=True)
    assert len(p.tokenizer) == 151646 and p.model.config.vocab_size == 151936
    ids = prompt_ids(p.tokenizer, p.prompt, TEXTS[0])
    im_start, im_end, newline, assistant, system = 151644, 151645, 198, 77091, 8948
    assert ids[:3] == [im_start, system, newline] and ids[-5:] == [im_end, newline, im_start, assistant, newline]
    assert set(stop_token_ids(p.tokenizer)) == {151643, im_end}
    results = p.predict(TEXTS)
    for text, ents in zip(TEXTS, results, strict=True):
        assert all(text[e.start:e.end] == e.text and e.label in p.labels for e in ents)
    from nerft.constrained import ConstrainedAnswer

    proc = ConstrainedAnswer(p.tokenizer, TEXTS[:1], p.labels.names, p.prompt.output_format)
    [answer] = generate_batch(p.model, p.tokenizer, [ids], 8, proc)
    assert answer.token_ids and all(t < len(p.tokenizer) for t in answer.token_ids)


@pytest.mark.slow
@pytest.mark.shared
def test_real_model_prefix_cache_and_batching_agree(qwen2_tokenizer):
    """Qwen2.5-Coder-0.5B (built by ../shared/bin/get-qwen2.5-coder-0.5b; set NERFT_QWEN05B to its folder)."""
    import os
    from pathlib import Path

    import torch
    from transformers import AutoModelForCausalLM

    from nerft.labels import ccfbdci_labels
    from nerft.prompts import build_prompt

    path = Path(os.environ.get("NERFT_QWEN05B", Path.home() / ".cache/ner-assets/qwen2.5-coder-0.5b-instruct"))
    if not (path / "config.json").is_file():
        pytest.skip(f"{path} not built")
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    labels = ccfbdci_labels()
    p = TransformersPredictor(model, qwen2_tokenizer, labels, build_prompt(labels), PredictOptions(max_new_tokens=16))
    batched = p.predict_detailed(TEXTS)
    p.options.prefix_cache, p.options.batch_size = False, 1
    assert [p.predict_detailed([t])[0] for t in TEXTS] == batched


@pytest.mark.parametrize("constrained", [False, True])
def test_rows_leaving_the_batch_keep_their_answers(predictor, tiny_tokenizer, constrained):
    # Rows with small token limits finish first and are dropped from the batch; the others must go on exactly as
    # they would alone (cache, mask, positions and the constrained processor all follow the dropped rows).
    from nerft.constrained import ConstrainedAnswer

    model, prompt = predictor.model, predictor.prompt
    names = predictor.labels.names
    ids = [prompt_ids(tiny_tokenizer, prompt, t) for t in TEXTS]
    limits = [2, 12, 1, 7]

    def proc(texts):
        return ConstrainedAnswer(tiny_tokenizer, texts, names, prompt.output_format) if constrained else None

    batched = generate_batch(model, tiny_tokenizer, ids, limits, proc(TEXTS))
    alone = [generate_batch(model, tiny_tokenizer, [x], [n], proc([t]))[0]
             for x, n, t in zip(ids, limits, TEXTS, strict=True)]
    assert [len(g.token_ids) for g in batched] == [len(g.token_ids) for g in alone]
    assert max(len(g.token_ids) for g in batched) > 7  # the long row really outlived the others
    assert [g.token_ids for g in batched] == [g.token_ids for g in alone]
    for b, a in zip(batched, alone, strict=True):
        assert b.logprobs == pytest.approx(a.logprobs, abs=1e-4)


def test_none_bias_moves_the_first_token_to_or_from_a_none_answer(run_dir):
    # A bias on the tokens that begin a "no entity" answer, at the first step only: a strong negative one makes
    # every answer "none", a strong positive one makes no answer "none" (and later steps may still end the turn).
    forced_none = load_predictor(run_dir, max_new_tokens=6, batch_size=4, none_bias=-1e4)
    assert forced_none.predict(TEXTS) == [[] for _ in TEXTS]
    assert [r[0] for r in raw_answers(forced_none, TEXTS)] == [""] * len(TEXTS)
    no_none = load_predictor(run_dir, max_new_tokens=6, batch_size=4, none_bias=1e4)
    assert all(r[0] != "" for r in raw_answers(no_none, TEXTS))
    plain = load_predictor(run_dir, max_new_tokens=6, batch_size=4)
    zero = load_predictor(run_dir, max_new_tokens=6, batch_size=4, none_bias=0.0)
    assert raw_answers(zero, TEXTS) == raw_answers(plain, TEXTS)


def test_cli_decoding_options_from_yaml_and_flags(run_dir, tmp_path, capsys):
    # PredictOptions is the schema: a YAML file gives values, flags override them, unknown keys name themselves
    good = tmp_path / "decode.yaml"
    good.write_text("max_new_tokens: 6\nnone_bias: -10000\nconstrained: true\n", encoding="utf-8")
    assert cli.main(["predict", "--model", str(run_dir), "--config", str(good), "--output-format", "nerft", TEXTS[1]]) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["entities"] == []  # the bias forced "none"
    assert cli.main(["predict", "--model", str(run_dir), "--config", str(good), "--none-bias", "10000",
                     "--max-new-tokens", "12", "--output-format", "nerft", *TEXTS]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert len(lines) == len(TEXTS) and any(x["entities"] for x in lines)  # flags win over the file
    bad = tmp_path / "bad.yaml"
    bad.write_text("max_new_tokens: 6\nbeam_size: 4\n", encoding="utf-8")
    assert cli.main(["predict", "--model", str(run_dir), "--config", str(bad), "x"]) == 2
    assert "beam_size" in capsys.readouterr().err
