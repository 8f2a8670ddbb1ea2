"""What ``nerft prepare`` reports about a dataset: per-split and overall counts, text lengths, duplicate texts,
conflicting annotations (stats.json), the same as markdown (stats.md) and a chart of entities per label."""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..labels import LabelSet
from ..readers import SPLITS
from ..schema import Document

MAX_LISTED_CONFLICTS = 50  # in stats.md; stats.json lists all


def build_stats(splits: dict[str, list[Document]], label_set: LabelSet) -> dict[str, Any]:
    """Per-split and overall statistics, duplicate texts and conflicting annotations."""
    all_docs = [doc for split in SPLITS for doc in splits[split]]
    stats: dict[str, Any] = {
        "labels": label_set.codes,
        "splits": {split: _split_stats(splits[split], label_set) for split in SPLITS},
        "all": _split_stats(all_docs, label_set),
    }
    by_text: dict[str, list[tuple[str, Document]]] = defaultdict(list)
    for split in SPLITS:
        for doc in splits[split]:
            by_text[doc.text].append((split, doc))
    stats["duplicate_texts"] = sum(len(group) - 1 for group in by_text.values())
    stats["texts_in_several_splits"] = sum(1 for group in by_text.values() if len({s for s, _ in group}) > 1)
    stats["conflicts"] = find_conflicts(by_text)
    return stats


def _split_stats(docs: list[Document], label_set: LabelSet) -> dict[str, Any]:
    per_label = Counter(e.label for doc in docs for e in doc.entities)
    lengths = sorted(len(doc.text) for doc in docs)
    return {
        "docs": len(docs),
        "entities": sum(per_label.values()),
        "entities_per_label": {code: per_label.get(code, 0) for code in label_set.codes},
        "empty_docs": sum(1 for doc in docs if not doc.entities),
        "empty_share": round(sum(1 for doc in docs if not doc.entities) / len(docs), 4) if docs else 0.0,
        "text_length": {
            "min": lengths[0] if lengths else 0,
            "mean": round(statistics.fmean(lengths), 2) if lengths else 0.0,
            "p50": _percentile(lengths, 0.5),
            "p95": _percentile(lengths, 0.95),
            "max": lengths[-1] if lengths else 0,
        },
    }


def _percentile(sorted_values: list[int], q: float) -> int:
    """Nearest-rank percentile of a sorted list (0 for an empty one)."""
    if not sorted_values:
        return 0
    rank = max(1, math.ceil(round(q * len(sorted_values), 9)))  # round() keeps 0.95 * 20 from becoming 19.000001
    return sorted_values[min(rank, len(sorted_values)) - 1]


def find_conflicts(by_text: dict[str, list[tuple[str, Document]]]) -> list[dict[str, Any]]:
    """Texts that occur more than once with different entity sets, with each variant's document ids."""
    conflicts = []
    for text, group in by_text.items():
        if len(group) < 2:
            continue
        variants: dict[tuple, list[str]] = defaultdict(list)
        for split, doc in group:
            key = tuple(sorted((e.start, e.end, e.label) for e in doc.entities))
            variants[key].append(f"{split}:{doc.id}")
        if len(variants) > 1:
            conflicts.append({
                "text": text,
                "variants": [
                    {"ids": ids, "entities": [{"start": s, "end": e, "label": lab, "text": text[s:e]}
                                              for s, e, lab in key]}
                    for key, ids in variants.items()
                ],
            })
    return conflicts


def stats_markdown(stats: dict[str, Any]) -> str:
    lines = [f"# Dataset statistics: {stats.get('source', '')}", ""]
    lines += [f"Format `{stats.get('format')}`, split `{stats.get('split_mode')}` (seed {stats.get('seed')}), "
              f"labels {stats.get('label_source')}.", ""]
    columns = [*SPLITS, "all"]
    table = {split: stats["splits"][split] for split in SPLITS} | {"all": stats["all"]}
    lines += ["| | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]

    def row(name: str, value: Callable[..., Any]) -> str:  # value(one column's stats)
        return f"| {name} | " + " | ".join(str(value(table[c])) for c in columns) + " |"

    lines.append(row("documents", lambda s: s["docs"]))
    lines.append(row("entities", lambda s: s["entities"]))
    for code in stats["labels"]:
        lines.append(row(f"&nbsp;&nbsp;{code}", lambda s, code=code: s["entities_per_label"][code]))
    lines.append(row("no entity", lambda s: f"{s['empty_share']:.1%}"))
    for key in ("min", "mean", "p50", "p95", "max"):
        lines.append(row(f"length {key}", lambda s, key=key: s["text_length"][key]))
    read = stats.get("read", {})
    lines += ["", f"- duplicate texts (repeats of an earlier text): {stats['duplicate_texts']}",
              f"- texts found in more than one split: {stats['texts_in_several_splits']}",
              f"- skipped records: {read.get('skipped', 0)}; repaired tags: {read.get('repaired_tags', 0)}; "
              f"overlapping entity pairs: {read.get('overlaps', 0)}",
              f"- dropped entities (label not in the set): {stats.get('dropped_entities') or 'none'}"]
    lines += [f"- {note}" for note in stats.get("notes", [])]
    conflicts = stats["conflicts"]
    lines += ["", f"## Conflicting annotations ({len(conflicts)})", ""]
    for conflict in conflicts[:MAX_LISTED_CONFLICTS]:
        lines.append(f"- {conflict['text']!r}")
        for variant in conflict["variants"]:
            ents = ", ".join(f"{e['text']}/{e['label']}" for e in variant["entities"]) or "(no entity)"
            lines.append(f"  - {', '.join(variant['ids'])}: {ents}")
    if len(conflicts) > MAX_LISTED_CONFLICTS:
        lines.append(f"- ... {len(conflicts) - MAX_LISTED_CONFLICTS} more in stats.json")
    warnings = read.get("warnings", [])
    if warnings:
        lines += ["", "## Reader warnings", ""] + [f"- {w}" for w in warnings]
        if read.get("more_warnings"):
            lines.append(f"- ... and {read['more_warnings']} more")
    return "\n".join(lines) + "\n"


def plot_entities_per_label(stats: dict[str, Any], path: Path) -> None:
    """A grouped bar chart: entities per label, one bar per split."""
    from ..plots import grouped_bars

    labels = stats["labels"]
    grouped_bars(labels, {split: [stats["splits"][split]["entities_per_label"][code] for code in labels]
                          for split in SPLITS}, path, title="entities per label and split", ylabel="entities",
                 rotate=len(labels) > 6)
