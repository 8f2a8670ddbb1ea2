import pytest
import torch
from conftest import make_tiny_qwen2

from nerft.constrained import AnswerGrammar, ConstrainedAnswer, vocab_bytes
from nerft.formats import parse_answer
from nerft.generation import generate_batch, prompt_ids
from nerft.grounding import ground_mentions
from nerft.labels import ccfbdci_labels
from nerft.prompts import build_prompt

TEXTS = ["北京是中国的首都。", "张三在上海工作，他喜欢华为公司。", "今天天气不错", '他说"你好"，{括号}和\\斜杠。']


def test_compact_grammar():
    g = AnswerGrammar("张三在北京", ["人名", "地点"], "compact")
    assert g.is_prefix(b"") and g.can_end(b"")
    assert g.is_prefix("人".encode()) and g.is_prefix("人名:".encode()) and not g.can_end("人名:".encode())
    assert g.is_prefix("人名:张".encode()) and g.can_end("人名:张三".encode())
    assert g.can_end("人名:张三\n地点:北京".encode()) and g.can_end("人名:张三\n".encode())
    assert not g.is_prefix("人名:李".encode())  # not in the text
    assert not g.is_prefix("组织:".encode())  # not in the label set
    assert not g.is_prefix("人名:张三\n\n".encode())  # empty line
    assert not g.is_prefix("人名:".encode() + "张".encode()[1:])  # starts inside a character
    assert g.is_prefix("人名:".encode() + "张".encode()[:2]) and not g.can_end("人名:".encode() + "张".encode()[:2])


def test_json_grammars():
    g = AnswerGrammar('张三说"好"', ["人名"], "jsonl")
    ok = '{"entity_text": "张三", "entity_label": "人名"}'
    assert g.can_end(ok.encode()) and g.can_end((ok + "\n" + ok).encode())
    assert g.is_prefix(ok[:-3].encode()) and not g.can_end(ok[:-3].encode())
    assert not g.is_prefix('{"entity_text": "说"'.encode() + b'"')  # a quote ends the mention: bad tail
    assert not g.is_prefix((ok + ok).encode())  # jsonl needs a newline between objects
    t = AnswerGrammar("张三", ["人名"], "tutorial")
    assert t.can_end("没有找到任何实体".encode()) and not t.can_end(b"") and t.can_end((ok + ok).encode())


@pytest.fixture(params=["tiny", pytest.param("qwen2", marks=pytest.mark.shared)])
def tokenizer(request):
    """The tiny byte-level BPE tokenizer, and the real Qwen2 one where ../shared is present."""
    return request.getfixturevalue(f"{request.param}_tokenizer")


def test_vocab_bytes_round_trip(tokenizer):
    vb = vocab_bytes(tokenizer)
    assert len(vb.bytes) == len(tokenizer)
    for text in ("地点:北京\n《人民日报》", "龘靐齉 unseen: 😀 ü\t{\"a\"}", '{"entity_text": "张三", "entity_label": "人名"}'):
        ids = tokenizer.encode(text, add_special_tokens=False)
        assert b"".join(vb.bytes[i] for i in ids).decode() == text
    for special in ("<|endoftext|>", "<|im_start|>", "<|im_end|>"):
        assert vb.bytes[tokenizer.convert_tokens_to_ids(special)] is None
    # byte-level: every single byte is a token, and some tokens hold part of a character only
    assert all(vb.index.get(bytes([b])) for b in range(256))
    assert any(b and not _decodes(b) for b in vb.bytes)


def _decodes(b: bytes) -> bool:
    try:
        b.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _random_model(tokenizer, seed: int):
    model = make_tiny_qwen2(seed=seed, tokenizer=tokenizer)
    with torch.no_grad():  # make the random model pick more varied tokens (not only its last input token again)
        model.lm_head.weight.add_(torch.randn_like(model.lm_head.weight) * 0.05)
    return model


@pytest.mark.parametrize(("fmt", "seed"), [("compact", 3), ("jsonl", 3), ("tutorial", 3)])
def test_random_model_answers_always_parse_and_ground(tiny_tokenizer, fmt, seed):
    labels = ccfbdci_labels()
    prompt = build_prompt(labels, fmt, "tutorial" if fmt == "tutorial" else "nerft")
    model = _random_model(tiny_tokenizer, seed)
    ids = [prompt_ids(tiny_tokenizer, prompt, t) for t in TEXTS]
    proc = ConstrainedAnswer(tiny_tokenizer, TEXTS, labels.names, fmt)
    out = generate_batch(model, tiny_tokenizer, ids, 48, proc)
    assert all(t < len(tiny_tokenizer) for g in out for t in g.token_ids)  # never an id past the tokenizer's
    grammar_end = [proc.grammars[i].can_end(g.text.encode()) for i, g in enumerate(out) if g.finished]
    assert all(grammar_end)
    n_mentions = 0
    for text, g in zip(TEXTS, out, strict=True):
        answer = g.text
        if not g.finished:  # cut at the token limit: keep whole units, as the predictor does
            answer = answer[: answer.rfind("}") + 1] if fmt != "compact" else answer[: max(answer.rfind("\n"), 0)]
        parsed = parse_answer(answer, labels)
        assert parsed.errors == [], (fmt, answer)
        grounding = ground_mentions(text, parsed.mentions)
        assert grounding.hallucinated == []
        assert all(text[e.start:e.end] == e.text for e in grounding.entities)
        n_mentions += len(parsed.mentions)
    assert n_mentions > 0, [g.text for g in out]  # the guarantee was put to use, not met by empty answers


@pytest.mark.parametrize("fmt", ["compact", "jsonl", "tutorial"])
def test_unconstrained_random_model_does_hallucinate(tiny_tokenizer, fmt):
    # The guarantee above is not vacuous: without the processor the same model writes unreadable answers.
    labels = ccfbdci_labels()
    prompt = build_prompt(labels, fmt, "tutorial" if fmt == "tutorial" else "nerft")
    ids = [prompt_ids(tiny_tokenizer, prompt, t) for t in TEXTS]
    out = generate_batch(_random_model(tiny_tokenizer, 3), tiny_tokenizer, ids, 48)
    assert any(parse_answer(g.text, labels).errors for g in out)


def _tokenizer_at_a_freed_address(tokenizer):
    """(the byte table of a copy of ``tokenizer`` since freed, a copy with one token more at that copy's id())."""
    import copy

    for _ in range(20):
        first = copy.deepcopy(tokenizer)
        first_table, freed = vocab_bytes(first), id(first)
        del first
        second = copy.deepcopy(tokenizer)
        second.add_tokens(["龘龘龘"])  # a different vocabulary
        if id(second) == freed:
            return first_table, second
        del second
    pytest.fail("no tokenizer took a freed one's id in 20 tries: the case under test did not occur")


def test_byte_tables_belong_to_tokenizer_objects_not_to_their_ids(tiny_tokenizer):
    """A freed tokenizer's table is never handed to a later tokenizer that lands at its address (same id())."""
    first_table, second = _tokenizer_at_a_freed_address(tiny_tokenizer)
    table = vocab_bytes(second)
    assert table is not first_table and len(table.bytes) == len(second) == len(first_table.bytes) + 1
    assert vocab_bytes(second) is table  # still built once per tokenizer


def test_the_byte_table_is_transformers_own():
    """constrained._byte_decoder keeps its own copy of GPT-2's byte table, as transformers moved its function
    between releases (4.x: models.gpt2.tokenization_gpt2; 5.x: convert_slow_tokenizer): the two must agree."""
    try:
        from transformers.convert_slow_tokenizer import bytes_to_unicode
    except ImportError:
        from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    from nerft.constrained import _byte_decoder

    assert _byte_decoder() == {c: b for b, c in bytes_to_unicode().items()}
