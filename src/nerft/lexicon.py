"""What the training data annotates: a lexicon of mention strings, and how consistently each one is annotated.

A model fine-tuned for an hour on a CPU has seen its training set less than once; a classic tagger trained for a
hundred passes has learnt the corpus's habits, including which strings it always marks (a city, a ministry) and
which it marks only now and then. ``Lexicon`` keeps, for every string annotated at least once in the training
documents, how many times it occurs in their texts and how many of those occurrences are annotated, with which
label, and the same counts beside each neighbouring character. ``Lexicon.complete`` then adds to a prediction the
occurrences of consistently annotated strings (annotated in at least ``min_rate`` of at least ``min_count``
occurrences, and at least ``min_rate`` beside this occurrence's neighbours) that the model left out, and gives
predicted mentions of such strings the training data's majority label. Every added mention is a span of the text.

``Lexicon.hint`` writes the same counts as a line the model reads after its text (``data.lexicon_hints``): the
strings of the text that the training data annotates, each with its majority label and how often it is annotated.
Training examples see the counts of the *other* training documents (their own left out), which is what a new
text sees at prediction time.

``nerft train`` writes ``lexicon.json`` into the run directory; ``nerft predict --lexicon`` reads it (or builds one
from a training file in nerft JSONL).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from .fileio import write_json
from .schema import Document, Entity, NerftError

LEXICON_FILE = "lexicon.json"
FORMAT = "nerft-lexicon"


# A neighbouring character seen beside a string fewer times than this says too little to overrule its overall rate
CONTEXT_MIN = 2

# Hints: strings of at least this many characters, annotated in at least this share of their occurrences
HINT_MIN_CHARS = 2
HINT_MIN_RATE = 0.1
HINT_HEADER = "参考："


def majority(labels: Counter[str]) -> str:
    """The most frequent label (ties: alphabetical, so the choice is stable)."""
    return min(labels.items(), key=lambda kv: (-kv[1], kv[0]))[0]


@dataclass
class LexiconEntry:
    occurrences: int  # times the string occurs in the training texts (overlapping occurrences included)
    labels: Counter[str] = field(default_factory=Counter)  # annotated occurrences by label
    # "<c" (character c just before the string) / ">c" (just after; "<" / ">" alone: the text's edge) ->
    # [occurrences, annotated occurrences], for neighbours seen at least CONTEXT_MIN times
    contexts: dict[str, list[int]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        """Share of the string's occurrences that are annotated (with any label)."""
        return sum(self.labels.values()) / self.occurrences if self.occurrences else 0.0

    @property
    def label(self) -> str:
        """The label the training data gives it most often (ties: alphabetical, so the choice is stable)."""
        return majority(self.labels)

    def rate_at(self, text: str, start: int, end: int) -> float:
        """The annotation rate of this occurrence: the lower of the rates beside its left and its right neighbour
        in the training texts where they were seen often enough (so 美国 before 人, rarely annotated in a corpus
        that leaves 美国人 alone, is judged by that), else the string's overall rate."""
        rates = []
        for key in ("<" + text[start - 1:start], ">" + text[end:end + 1]):
            seen = self.contexts.get(key)
            if seen:
                rates.append(seen[1] / seen[0])
        return min(rates) if rates else self.rate


class _Trie:
    """Prefix tree over the lexicon's strings: every occurrence of every string in a text, in one left-to-right
    walk per start position (a text of n characters costs about n short walks)."""

    def __init__(self, strings: Iterable[str]):
        self.root: dict = {}
        for s in strings:
            node = self.root
            for ch in s:
                node = node.setdefault(ch, {})
            node[None] = s

    def matches_at(self, text: str, start: int) -> list[str]:
        """Strings that occur at ``start``, shortest first."""
        found: list[str] = []
        node = self.root
        for ch in text[start:]:
            child = node.get(ch)
            if child is None:
                break
            node = child
            if None in node:
                found.append(node[None])
        return found


class Lexicon:
    def __init__(self, entries: dict[str, LexiconEntry], documents: int):
        self.entries, self.documents = entries, documents
        self._tries: dict[tuple, tuple[dict[str, str], _Trie]] = {}  # the last (rule, labels) asked for
        self._hint_trie: _Trie | None = None

    @classmethod
    def from_documents(cls, docs: Iterable[Document]) -> Lexicon:
        docs = list(docs)
        labels: dict[str, Counter[str]] = {}
        for doc in docs:
            for e in doc.entities:
                if e.start is not None and e.text:
                    labels.setdefault(e.text, Counter())[e.label] += 1
        occurrences: Counter[str] = Counter()
        contexts: dict[str, dict[str, list[int]]] = {s: {} for s in labels}
        trie = _Trie(labels)
        for doc in docs:
            text, spans = doc.text, {(e.start, e.end) for e in doc.entities}
            for i in range(len(text)):
                for s in trie.matches_at(text, i):
                    end = i + len(s)
                    occurrences[s] += 1
                    for key in ("<" + text[i - 1:i], ">" + text[end:end + 1]):
                        seen = contexts[s].setdefault(key, [0, 0])
                        seen[0] += 1
                        seen[1] += (i, end) in spans
        # max(): a mention whose text differs from the document's own characters still counts as seen once
        entries = {s: LexiconEntry(max(occurrences[s], sum(c.values())), c,
                                   {k: v for k, v in contexts[s].items() if v[0] >= CONTEXT_MIN})
                   for s, c in labels.items()}
        return cls(entries, len(docs))

    def labels(self) -> set[str]:
        return {label for e in self.entries.values() for label in e.labels}

    def consistent(self, min_rate: float, min_count: int) -> dict[str, str]:
        """Strings annotated in >= ``min_rate`` of their >= ``min_count`` occurrences, with their majority label."""
        return {s: e.label for s, e in self.entries.items() if e.occurrences >= min_count and e.rate >= min_rate}

    def complete(self, text: str, entities: list[Entity], min_rate: float, min_count: int,
                 allowed: set[str] | None = None) -> list[Entity]:
        """``entities`` with the consistent strings' occurrences that overlap none of them and whose neighbours do
        not say otherwise (``LexiconEntry.rate_at``) added (longest string first, left to right; the score is that
        rate), and predicted mentions of consistent strings relabelled to their majority label.
        Labels outside ``allowed`` (a subset of codes, None for all) are never added or given."""
        key = (min_rate, min_count, None if allowed is None else frozenset(allowed))
        if key not in self._tries:
            strings = {s: lab for s, lab in self.consistent(min_rate, min_count).items()
                       if allowed is None or lab in allowed}
            self._tries = {key: (strings, _Trie(strings))}
        strings, trie = self._tries[key]
        out = [Entity(e.start, e.end, strings[e.text], e.text, e.score)
               if e.start is not None and e.text in strings else e for e in entities]
        taken = [(e.start, e.end) for e in out if e.start is not None and e.end is not None]
        for i in range(len(text)):
            for s in reversed(trie.matches_at(text, i)):  # longest first
                end = i + len(s)
                if any(i < b and a < end for a, b in taken):
                    continue
                rate = self.entries[s].rate_at(text, i, end)
                if rate >= min_rate:
                    out.append(Entity(i, end, strings[s], s, rate))
                    taken.append((i, end))
                    break
        return sorted(out, key=lambda e: (e.start is None, e.start or 0, e.end or 0))

    def hint(self, text: str, limit: int, name: Callable[[str], str] = str, own: Document | None = None) -> str:
        """At most ``limit`` strings of ``text`` (in order of first occurrence, shorter first at one position) that
        the training data annotates in >= HINT_MIN_RATE of their occurrences, as ``参考：美国=GPE 60%；...``: the
        majority label (``name`` turns a code into the name the model writes) and the annotated share, rounded
        down to tens (100% only for strings always annotated). ``own``: a training document whose own counts
        are left out (so a string seen only there gives no hint, as for a new text). "" when there is none."""
        if limit <= 0:
            return ""
        if self._hint_trie is None:
            self._hint_trie = _Trie(s for s in self.entries if len(s) >= HINT_MIN_CHARS)
        trie = self._hint_trie
        own_occurrences: Counter[str] = Counter()
        own_labels: dict[str, Counter[str]] = {}
        if own is not None:
            for i in range(len(own.text)):
                own_occurrences.update(trie.matches_at(own.text, i))
            for e in own.entities:
                if e.start is not None and e.text:
                    own_labels.setdefault(e.text, Counter())[e.label] += 1
        shown: list[str] = []
        seen: set[str] = set()
        for i in range(len(text)):
            for s in trie.matches_at(text, i):
                if s in seen:
                    continue
                seen.add(s)
                entry = self.entries[s]
                labels = entry.labels - own_labels.get(s, Counter())
                n, annotated = entry.occurrences - own_occurrences[s], sum(labels.values())
                if n <= 0 or annotated == 0 or annotated / n < HINT_MIN_RATE:
                    continue
                shown.append(f"{s}={name(majority(labels))} {min(10, 10 * annotated // n) * 10}%")
                if len(shown) == limit:
                    return HINT_HEADER + "；".join(shown)
        return HINT_HEADER + "；".join(shown) if shown else ""

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "documents": self.documents,
                "entries": {s: {"occurrences": e.occurrences, "labels": dict(e.labels),
                                **({"contexts": e.contexts} if e.contexts else {})}
                            for s, e in sorted(self.entries.items())}}

    def save(self, path: str | Path) -> None:
        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | Path) -> Lexicon:
        """A ``lexicon.json`` (or a run directory holding one), or a file of annotated documents in nerft JSONL
        (counted on the fly)."""
        path = Path(path).expanduser()
        if path.is_dir():
            path = path / LEXICON_FILE
        if not path.is_file():
            raise NerftError(f"{path}: no such lexicon (nerft train writes {LEXICON_FILE} into its run directory; "
                             "a training file in nerft JSONL works too)")
        if path.suffix == ".jsonl":
            from .jsonl import read_documents

            return cls.from_documents(read_documents(path))
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise NerftError(f"{path}: not a readable lexicon ({exc})") from None
        if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("entries"), dict):
            raise NerftError(f"{path}: not a nerft lexicon (expected an object with format {FORMAT!r} and entries)")
        try:
            entries = {s: LexiconEntry(int(v["occurrences"]), Counter({k: int(n) for k, n in v["labels"].items()}),
                                       {k: [int(n), int(a)] for k, (n, a) in v.get("contexts", {}).items()})
                       for s, v in d["entries"].items()}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise NerftError(f"{path}: malformed lexicon entry ({type(exc).__name__}: {exc})") from None
        return cls(entries, int(d.get("documents", 0)))
