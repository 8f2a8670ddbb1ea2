"""What every predictor is and shares.

``Predictor`` is the protocol the CLI, the server and dev evaluation use; ``Prediction`` its typed result.
``DecodingPlan`` is the part both backends compose: prompts for each window of each text, a bound on each answer's
length, and the reading of the answers back into entities (``answers.read_answer``). A backend only turns prompt
token ids into ``generation.Generated`` answers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..answers import complete_prefix, piece_unit_scores, read_answer, unit_scores
from ..formats import OutputFormat, get_format
from ..generation import Generated, prompt_ids
from ..labels import LabelSet
from ..lexicon import LEXICON_FILE, Lexicon
from ..prompts import Prompt
from ..schema import SCORE_DIGITS, Entity, NerftError
from ..windows import Window, make_windows, merge_window_entities
from .options import PredictOptions


@dataclass
class Prediction:
    """One text's result: grounded entities, the raw answer of each window, and how the answers ended."""

    entities: list[Entity]
    answers: list[str] = field(default_factory=list)
    finished: bool = True  # every window's answer ended by itself (not at its token bound)
    hallucinated: int = 0  # mentions dropped because they are not in the text
    parse_failures: int = 0  # windows whose answer had unreadable or off-format pieces
    prompt_tokens: int = 0  # tokens the model read for it (every window's whole prompt)
    completion_tokens: int = 0  # tokens it wrote (0 where nothing is generated: a tagger, a CRF)


@dataclass
class PredictStats:
    """Counters a predictor keeps over its life (bounded: numbers, not lists)."""

    texts: int = 0
    windows: int = 0
    batches: int = 0
    unfinished: int = 0


class Predictor(Protocol):
    labels: LabelSet
    prompt: Prompt
    name: str
    stats: PredictStats

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        """Entities for each text, in input order. ``labels``: a subset of label codes to extract."""
        ...

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        """The full result for each text, in input order."""
        ...


def entity_overhead_tokens(tokenizer: Any, labels: LabelSet, output_format: str) -> int:
    """Tokens an answer spends per entity beyond the mention itself (label, punctuation, separators)."""
    fmt = get_format(output_format)
    worst = 0
    for code in labels.codes:
        one = fmt.render([Entity(0, 1, code, "X")], labels)
        two = fmt.render([Entity(0, 1, code, "X"), Entity(2, 3, code, "X")], labels)
        worst = max(worst, len(tokenizer.encode(two, add_special_tokens=False))
                    - len(tokenizer.encode(one, add_special_tokens=False)))
    return worst + 1


def answer_budget(n_text_tokens: int, overhead: int, none_tokens: int = 0) -> int:
    """A bound on the answer's length: every mention is a substring of the text, so the mentions together need
    about as many tokens as the text (+2 for cut tokens each), and there are at most ~one entity per two tokens."""
    max_entities = n_text_tokens // 2 + 1
    return n_text_tokens + max_entities * (overhead + 2) + none_tokens + 4


def sorted_batches(lengths: Sequence[int], batch_size: int, max_padding: float | None = None,
                   free_positions: int = 0) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first: a memory error shows up at once).

    ``max_padding``: a batch also ends where one more row would make its padded positions (its longest row times
    its rows) exceed ``max_padding`` times its real ones, unless they stay within ``free_positions`` (too few to
    be worth a call of their own). A call's texts of mixed lengths (a server's batch: 16 random CCFBDCI sentences
    pad to 2.7x their positions) then run as a few batches of like lengths instead of one padded to the longest.
    For one forward pass per batch (the tagger); generation keeps whole batches, whose decode steps pay per call."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    if max_padding is None:
        return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]
    batches: list[list[int]] = []
    real = 0
    for i in order:
        if batches and len(batches[-1]) < batch_size:
            longest, rows = lengths[batches[-1][0]], len(batches[-1]) + 1
            if longest * rows <= max(max_padding * (real + lengths[i]), free_positions):
                batches[-1].append(i)
                real += lengths[i]
                continue
        batches.append([i])
        real = lengths[i]
    return batches


# generate(window texts, their prompt ids, their answer bounds, label names allowed) -> one answer each
Generate = Callable[[list[str], list[list[int]], list[int], list[str]], list[Generated]]


def finish_entities(text: str, entities: list[Entity], options: PredictOptions, lexicon: Lexicon | None,
                    codes: set[str]) -> list[Entity]:
    """The last thing every predictor does to one text's grounded mentions: drop those below their label's
    min-score (``options.min_score``, ``options.label_min_scores``; compared at the 4 digits a score is written
    with, so a replay of written answers decides alike; a mention without a score is kept), then
    complete the answer from ``lexicon`` (labels in ``codes`` only). ``nerft tune`` replays it on saved answers."""
    if options.min_score > 0 or options.label_min_scores:
        entities = [e for e in entities
                    if e.score is None or round(e.score, SCORE_DIGITS) >= options.min_score_of(e.label)]
    if lexicon is not None:
        entities = lexicon.complete(text, entities, options.lexicon_min_rate, options.lexicon_min_count, codes)
    return entities


@dataclass
class WindowPlan:
    """What ``DecodingPlan.prepare`` makes of a call's texts: one entry per window (``pieces``: its text's index and
    its span), in text order."""

    texts: list[str]
    pieces: list[tuple[int, Window]]
    window_texts: list[str]
    ids: list[list[int]]  # prompt token ids
    limits: list[int]  # answer bounds in tokens
    names: list[str]  # label names the answers may use
    allowed: set[str] | None  # label codes kept (None: all)
    _by_text: list[list[int]] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._by_text = [[] for _ in self.texts]
        for k, (i, _) in enumerate(self.pieces):
            self._by_text[i].append(k)

    def windows_of(self, i: int) -> list[int]:
        return self._by_text[i]


class DecodingPlan:
    """Prompts, answer bounds and answer reading for one model: what both backends share."""

    def __init__(self, tokenizer: Any, labels: LabelSet, prompt: Prompt, options: PredictOptions,
                 hint_lexicon: Lexicon | None = None):
        """``hint_lexicon``: the run's lexicon, for a model trained with lexicon hints (``prompt.hints``)."""
        self.tokenizer, self.labels, self.prompt, self.options = tokenizer, labels, prompt, options
        if prompt.hints and hint_lexicon is None:
            raise NerftError(f"this model was trained with lexicon hints (data.lexicon_hints {prompt.hints}) and "
                             f"needs its run's {LEXICON_FILE}, which was not found beside it")
        self.hint_lexicon = hint_lexicon
        self.output_format = prompt.output_format
        self.overhead = entity_overhead_tokens(tokenizer, labels, self.output_format)
        none_text = get_format(self.output_format).none_text
        self.none_tokens = len(tokenizer.encode(none_text, add_special_tokens=False)) if none_text else 0
        self.codes = set(labels.codes)
        if unknown := set(options.label_min_score_map()) - self.codes:
            raise NerftError(f"label_min_scores names {', '.join(sorted(unknown))}, not among the model's label codes "
                             f"({', '.join(labels.codes)})")
        self.lexicon = Lexicon.load(options.lexicon) if options.lexicon else None
        if self.lexicon is not None and not (lexicon_labels := self.lexicon.labels()) & self.codes:
            raise NerftError(f"{options.lexicon}: its labels ({', '.join(sorted(lexicon_labels))}) are none "
                             f"of the model's ({', '.join(labels.codes)}); is it the lexicon of another dataset?")

    def hint(self, text: str) -> str:
        """The lexicon hint the model reads after ``text`` ("" for a model trained without hints)."""
        return self.hint_lexicon.hint(text, self.prompt.hints, self.labels.name_of) if self.hint_lexicon else ""

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def windows(self, text: str) -> list[Window]:
        if not self.options.window:
            return [Window(0, len(text))]
        return make_windows(text, self.options.window, self.count_tokens, self.options.window_overlap)

    def allowed(self, labels: list[str] | None) -> set[str] | None:
        """Label codes to keep (an unknown code is a NerftError), or None for all."""
        return set(self.labels.subset(labels).codes) if labels is not None else None

    def limit(self, text: str) -> int:
        limit = answer_budget(self.count_tokens(text), self.overhead, self.none_tokens)
        return min(limit, self.options.max_new_tokens) if self.options.max_new_tokens else limit

    def prepare(self, texts: list[str], labels: list[str] | None) -> WindowPlan:
        """Each text's windows, their prompts and answer bounds, and the label names the answers may use."""
        allowed = self.allowed(labels)
        names = [self.labels.name_of(c) for c in self.labels.codes if allowed is None or c in allowed]
        pieces = [(i, w) for i, t in enumerate(texts) for w in self.windows(t)]
        window_texts = [texts[i][w.start:w.end] for i, w in pieces]
        ids = [prompt_ids(self.tokenizer, self.prompt, t, self.hint(t)) for t in window_texts]
        return WindowPlan(texts, pieces, window_texts, ids, [self.limit(t) for t in window_texts], names, allowed)

    def prediction(self, plan: WindowPlan, i: int, answers: Sequence[Generated]) -> Prediction:
        """Text ``i``'s prediction from the answers of its windows (``plan.windows_of(i)``, in order)."""
        found = [(plan.pieces[k][1], g) for k, g in zip(plan.windows_of(i), answers, strict=True)]
        result = self._merge(plan.texts[i], found, plan.allowed)
        result.prompt_tokens = sum(len(plan.ids[k]) for k in plan.windows_of(i))
        result.completion_tokens = sum(len(g.token_ids) or len(g.pieces or ()) or len(  # a server that said
            self.tokenizer.encode(g.text, add_special_tokens=False)) for g in answers)  # nothing of tokens
        return result

    def run(self, texts: list[str], labels: list[str] | None, generate: Generate) -> list[Prediction]:
        """Split each text into windows, generate an answer for every window at once, read the answers and merge
        the windows' entities back per text (offsets into the whole text)."""
        plan = self.prepare(texts, labels)
        answers = generate(plan.window_texts, plan.ids, plan.limits, plan.names)
        return [self.prediction(plan, i, [answers[k] for k in plan.windows_of(i)]) for i in range(len(texts))]

    def _merge(self, text: str, found: list[tuple[Window, Generated]], allowed: set[str] | None) -> Prediction:
        readings, raws = [], []
        for w, g in found:
            raw = g.text if g.finished or not self.options.constrained else complete_prefix(g.text, self.output_format)
            scores = self._unit_scores(g)
            readings.append(read_answer(text[w.start:w.end], raw, self.labels, output_format=self.output_format,
                                        scores=scores, keep_hallucinated=self.options.keep_hallucinated,
                                        allowed=allowed))
            raws.append(raw)
        if len(found) == 1 and found[0][0].start == 0:
            entities = readings[0].entities
        else:
            entities = merge_window_entities([w for w, _ in found], [r.entities for r in readings], len(text))
        entities = finish_entities(text, entities, self.options, self.lexicon,
                                   allowed if allowed is not None else self.codes)
        return Prediction(entities, raws, all(g.finished for _, g in found), sum(r.hallucinated for r in readings),
                          sum(not r.parse_ok for r in readings))

    def _unit_scores(self, g: Generated) -> list[tuple[str, float]] | None:
        """Confidence of each answer unit; None when the engine told nothing about the tokens (a server that
        returns no log-probabilities): the entities then have no score rather than a made-up one."""
        if g.token_ids:
            return unit_scores(self.tokenizer, g.text, g.token_ids, g.logprobs, self.output_format)
        if g.pieces is not None and len(g.pieces) == len(g.logprobs):
            return piece_unit_scores(g.text, g.pieces, g.logprobs, self.output_format)
        return None


class EnginePredictor:
    """A ``Predictor`` over an engine that decodes freely (greedy, no logits processors): vLLM, or an
    OpenAI-compatible server. The backends differ only in what they send the engine for each window
    (``engine_requests``): prompt token ids, or chat messages."""

    backend = "engine"

    def __init__(self, engine: Any, tokenizer: Any, labels: LabelSet, prompt: Prompt,
                 options: PredictOptions | None = None, name: str = "nerft",
                 hint_lexicon: Lexicon | None = None):
        self.engine, self.tokenizer, self.labels, self.prompt = engine, tokenizer, labels, prompt
        self.options = options or PredictOptions()
        for flag, on in (("--constrained", self.options.constrained), ("--none-bias", self.options.none_bias)):
            if on:
                raise NerftError(f"{flag} is available with the transformers backend only, not {self.backend}")
        self.name = name
        self.plan = DecodingPlan(tokenizer, labels, prompt, self.options, hint_lexicon)
        self.stats = PredictStats()

    def engine_requests(self, texts: list[str], ids: list[list[int]]) -> list:
        return ids

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        return [p.entities for p in self.predict_detailed(texts, labels)]

    def predict_detailed(self, texts: list[str], labels: list[str] | None = None) -> list[Prediction]:
        results = self.plan.run(texts, labels, self._generate)
        self.stats.texts += len(texts)
        return results

    def _generate(self, texts: list[str], ids: list[list[int]], limits: list[int],
                  label_names: list[str]) -> list[Generated]:
        out = self.engine.generate(self.engine_requests(texts, ids), limits)
        self.stats.batches += 1
        self.stats.windows += len(texts)
        self.stats.unfinished += sum(not g.finished for g in out)
        return out


class RepetitionGuard:
    """Stops a row when its last complete unit has been written more often than its mention occurs in the text:
    the signature of a repetition loop (a real duplicate, a mention that occurs twice, is allowed). Units are
    the output format's (None: lines and JSON objects, what every shipped format writes)."""

    def __init__(self, tokenizer: Any, texts: Sequence[str], labels: LabelSet,
                 output_format: OutputFormat | None = None):
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels
        self.format = output_format or OutputFormat()

    def __call__(self, row: int, ids: list[int]) -> bool:
        last = self.tokenizer.decode(ids[-1:])
        if not self.format.may_end_unit(last):
            return False
        units = self.format.written_units(self.tokenizer.decode(ids, skip_special_tokens=True), last)
        if len(units) < 2:
            return False
        unit = units[-1].strip()
        repeats = sum(u.strip() == unit for u in units)
        mentions = self.format.parse(unit, self.labels).mentions
        occurs = max((self.texts[row].count(m.text) for m in mentions), default=0)
        return repeats > max(1, occurs)


def guarded_generate(predictor: EnginePredictor, texts: list[str], ids: list[list[int]],
                     limits: list[int]) -> list[Generated]:
    """``predictor.engine.generate`` with a ``RepetitionGuard`` over ``texts`` (the local engines, llama.cpp and
    CTranslate2, ask it after each token of each row, so a looping row stops where the transformers backend stops
    it); the predictor's stats counted."""
    guard = RepetitionGuard(predictor.tokenizer, texts, predictor.labels, get_format(predictor.prompt.output_format))
    out = predictor.engine.generate(ids, limits, stop_row=guard)
    predictor.stats.batches += 1
    predictor.stats.windows += len(texts)
    predictor.stats.unfinished += sum(not g.finished for g in out)
    return out
