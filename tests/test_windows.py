from nerft.schema import Entity
from nerft.windows import Window, make_windows, merge_window_entities, sentence_spans


def chars(s: str) -> int:  # one token per character: easy to reason about
    return len(s)


def test_sentence_spans_cover_text_and_end_at_punctuation():
    text = "甲乙。丙丁！！戊?己\n庚"
    spans = sentence_spans(text)
    assert "".join(text[s:e] for s, e in spans) == text
    assert [text[s:e] for s, e in spans] == ["甲乙。", "丙丁！！", "戊?", "己\n", "庚"]
    assert sentence_spans("") == []
    assert sentence_spans("没有句号") == [(0, 4)]


def test_short_text_is_one_window():
    assert make_windows("一二三。", 10, chars) == [Window(0, 4)]
    assert make_windows("", 10, chars) == [Window(0, 0)]


def test_windows_fit_cover_and_overlap():
    text = "".join(f"第{i}句话。" for i in range(10))  # 10 sentences of 5 characters
    wins = make_windows(text, 12, chars, overlap_tokens=5)
    assert all(chars(text[w.start:w.end]) <= 12 for w in wins)
    assert wins[0].start == 0 and wins[-1].end == len(text)
    for a, b in zip(wins, wins[1:], strict=False):
        assert b.start < a.end  # overlap
        assert b.start > a.start  # progress
        assert text[b.start - 1] in "。" or b.start == 0  # windows start at a sentence boundary


def test_no_overlap_windows_partition_text():
    text = "".join(f"第{i}句话。" for i in range(7))
    wins = make_windows(text, 10, chars, overlap_tokens=0)
    assert "".join(text[w.start:w.end] for w in wins) == text


def test_sentence_longer_than_window_is_cut():
    text = "啊" * 25 + "。短句。"
    wins = make_windows(text, 10, chars)
    assert all(w.end - w.start <= 10 for w in wins)
    assert wins[0] == Window(0, 10) and wins[-1].end == len(text)


def test_merge_shifts_offsets_and_dedupes_overlap():
    text = "张三去北京。李四去上海。王五去广州。"
    wins = [Window(0, 12), Window(6, 18)]
    w0 = [Entity(0, 2, "PER", "张三", 0.9), Entity(9, 11, "LOC", "上海", 0.5)]
    w1 = [Entity(3, 5, "LOC", "上海", 0.7), Entity(6, 8, "PER", "王五", 0.8)]
    merged = merge_window_entities(wins, [w0, w1], len(text))
    assert [(e.start, e.end, e.label) for e in merged] == [(0, 2, "PER"), (9, 11, "LOC"), (12, 14, "PER")]
    assert all(text[e.start:e.end] == e.text for e in merged)
    assert merged[1].score == 0.7  # the better-scored duplicate


def test_merge_drops_entity_cut_by_window_edge():
    text = "我们在中华人民共和国。"
    wins = [Window(0, 6), Window(3, 11)]
    cut = [Entity(3, 6, "GPE", "中华人")]  # ends at the first window's inner edge
    whole = [Entity(0, 7, "GPE", "中华人民共和国")]
    merged = merge_window_entities(wins, [cut, whole], len(text))
    assert [(e.start, e.end) for e in merged] == [(3, 10)]


def test_merge_keeps_ungrounded_once():
    wins = [Window(0, 5), Window(3, 8)]
    ghost = Entity(None, None, "PER", "某人")
    merged = merge_window_entities(wins, [[ghost], [ghost]], 8)
    assert merged == [ghost]
