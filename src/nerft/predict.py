"""Prediction: texts in, entities with character offsets and confidence scores out.

``Predictor`` is a protocol with two implementations: ``TransformersPredictor`` (here; CPU or GPU) and
``VllmPredictor`` (``vllm_backend``). Both build prompts, bound the answer length, parse and ground answers with
the functions below, so they agree on everything but how tokens are generated. ``load_predictor`` opens a run
directory, an exported (merged) folder, or a base model plus an adapter (including a checkpoint-N folder written by
the tutorial's own script). ``nerft predict`` is ``run_predict``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from . import config as cfglib
from .config import opt
from .formats import get_format, parse_answer
from .grounding import ground_mentions
from .jsonl import dumps_line, iter_jsonl
from .labels import LabelSet, ccfbdci_labels
from .prompts import Prompt, build_prompt
from .rundir import INFO_FILE, RunInfo, adapter_dir, tokenizer_dir
from .schema import Entity, InputError, NerftError
from .windows import Window, make_windows, merge_window_entities


class Predictor(Protocol):
    labels: LabelSet
    name: str

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        """Entities for each text, in input order. ``labels``: a subset of label codes to extract."""
        ...


@dataclass
class PredictOptions:
    """How a predictor decodes: the config schema behind ``nerft predict`` / ``nerft serve`` flags and the
    keywords of ``load_predictor``."""

    batch_size: int = opt(32, "texts per generation batch; rows that finish leave it (on 2 CPU cores a batch of "
                              "32 decodes 1.6x faster per text than 8)")
    max_new_tokens: int | None = opt(None, "cap on the answer length, on top of the bound derived from each text")
    constrained: bool = opt(False, "allow only known labels and mentions that occur in the text")
    window: int | None = opt(256, "max text tokens per window for long documents (0 or null: never split)")
    window_overlap: int = opt(32, "text tokens shared by neighbouring windows")
    keep_hallucinated: bool = opt(False, "keep mentions not found in the text (they get no offsets)")
    prefix_cache: bool = opt(True, "compute the KV cache of the shared system prompt once")
    none_bias: float = opt(0.0, "lower the first answer token's score for a 'no entity' answer by this much: "
                                "> 0 trades precision for recall (e.g. 2); 0 is plain greedy decoding")
    keep_raw: bool = opt(False, "remember each text's raw answer(s) in ``last_raw`` (Python API)")


# ---------------------------------------------------------------------------------------------------------------
# Shared by the backends: answer budget, repetition guard, answer -> entities


def entity_overhead_tokens(tokenizer, labels: LabelSet, output_format: str) -> int:
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


def answer_units(answer: str) -> list[str]:
    """The entity units of an answer: lines, or for the tutorial format the ``{...}`` objects of a line."""
    units = []
    for line in answer.split("\n"):
        if line.count("}") > 1:
            units.extend(piece + "}" for piece in line.split("}") if piece.strip())
        elif line.strip():
            units.append(line)
    return units


class RepetitionGuard:
    """Stops a row when its last complete unit has been written more often than its mention occurs in the text:
    the signature of a repetition loop (a real duplicate, a mention that occurs twice, is allowed)."""

    def __init__(self, tokenizer, texts: Sequence[str], labels: LabelSet):
        self.tokenizer, self.texts, self.labels = tokenizer, texts, labels

    def __call__(self, row: int, ids: list[int]) -> bool:
        last = self.tokenizer.decode(ids[-1:])
        if "\n" not in last and "}" not in last:
            return False
        answer = self.tokenizer.decode(ids, skip_special_tokens=True)
        if "\n" in last:
            answer = answer[: answer.rfind("\n")]
        units = answer_units(answer)
        if len(units) < 2:
            return False
        unit = units[-1].strip()
        repeats = sum(u.strip() == unit for u in units)
        mentions = parse_answer(unit, self.labels).mentions
        occurs = max((self.texts[row].count(m.text) for m in mentions), default=0)
        return repeats > max(1, occurs)


class FirstTokenBias:
    """A logits processor: at the first decoding step only, lowers the scores of ``token_ids`` by ``bias``."""

    def __init__(self, token_ids: Sequence[int], bias: float):
        self.token_ids, self.bias, self.first = sorted(set(token_ids)), bias, True

    def select(self, keep: Sequence[int]) -> None:  # rows leaving the batch: nothing per row to follow
        pass

    def __call__(self, input_ids, scores):
        if not self.first:
            return scores
        self.first = False
        scores = scores.clone()
        scores[:, self.token_ids] -= self.bias
        return scores


class ChainedProcessors:
    """Several logits processors applied in order; rows leaving the batch are passed on to each."""

    def __init__(self, processors: Sequence):
        self.processors = list(processors)

    def select(self, keep: Sequence[int]) -> None:
        for p in self.processors:
            p.select(keep)

    def __call__(self, input_ids, scores):
        for p in self.processors:
            scores = p(input_ids, scores)
        return scores


def none_start_ids(tokenizer, output_format: str) -> list[int]:
    """Tokens that begin a "no entity" answer: an immediate end of turn, or the first token of the format's
    none text (the tutorial's "没有找到任何实体")."""
    from .generation import stop_token_ids

    ids = list(stop_token_ids(tokenizer))
    none_text = get_format(output_format).none_text
    if none_text:
        ids.append(tokenizer.encode(none_text, add_special_tokens=False)[0])
    return ids


def complete_prefix(answer: str, output_format: str) -> str:
    """The answer up to its last complete unit: what a truncated constrained answer keeps."""
    cut = answer.rfind("}") + 1 if output_format != "compact" else answer.rfind("\n")
    return answer[: max(cut, 0)]


def unit_scores(tokenizer, answer: str, token_ids: Sequence[int], logprobs: Sequence[float]) -> list[tuple[str, float]]:
    """Each unit of the answer with exp(mean log-probability of the tokens that wrote it)."""
    spans, pos = [], 0  # character span of each token in the decoded answer
    for k in range(len(token_ids)):
        end = len(tokenizer.decode(token_ids[: k + 1], skip_special_tokens=True))
        spans.append((pos, end))
        pos = max(pos, end)
    out, cursor = [], 0
    for unit in answer_units(answer):
        start = answer.find(unit, cursor)
        if start < 0:
            continue
        end = start + len(unit)
        cursor = end
        lps = [lp for (s, e), lp in zip(spans, logprobs, strict=False) if s < end and e > start]
        out.append((unit, math.exp(sum(lps) / len(lps)) if lps else 0.0))
    return out


def answer_to_entities(text: str, answer: str, labels: LabelSet, *, scores: list[tuple[str, float]] | None = None,
                       keep_hallucinated: bool = False, allowed: set[str] | None = None) -> list[Entity]:
    """Parse an answer, score each mention by the unit that wrote it, ground it in ``text``."""
    mentions = parse_answer(answer, labels).mentions
    score_of: list[float | None] = []
    used: set[int] = set()
    for m in mentions:
        score = None
        for k, (unit, s) in enumerate(scores or []):
            if k not in used and m.text in unit:
                used.add(k)
                score = s
                break
        score_of.append(score)
    keep = [i for i, m in enumerate(mentions) if allowed is None or m.label in allowed]
    grounding = ground_mentions(text, [mentions[i] for i in keep], keep_hallucinated=keep_hallucinated,
                                score_of=[score_of[i] for i in keep])
    return grounding.entities


def predict_in_windows(texts: list[str], windows_of: Callable[[str], list[Window]],
                       answer: Callable[[list[str]], list[tuple[str, list[Entity]]]]
                       ) -> tuple[list[list[Entity]], list[list[str]], int]:
    """Split each text into windows, get (raw answer, entities) for all windows at once, merge back per text.
    Returns entities per text, raw answers per text, and the number of windows."""
    pieces: list[tuple[int, Window]] = [(i, w) for i, t in enumerate(texts) for w in windows_of(t)]
    answers = answer([texts[i][w.start:w.end] for i, w in pieces])
    per_text: list[list[tuple[Window, list[Entity]]]] = [[] for _ in texts]
    raws: list[list[str]] = [[] for _ in texts]
    for (i, w), (raw, ents) in zip(pieces, answers, strict=True):
        per_text[i].append((w, ents))
        raws[i].append(raw)
    out = []
    for text, found in zip(texts, per_text, strict=True):
        if len(found) == 1 and found[0][0].start == 0:
            out.append(found[0][1])
        else:
            out.append(merge_window_entities([w for w, _ in found], [e for _, e in found], len(text)))
    return out, raws, len(pieces)


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (longest first: a memory error shows up at once)."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    return [order[i: i + batch_size] for i in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------------------------------------
# The transformers backend


class TransformersPredictor:
    """Batched greedy decoding with transformers (left padding, length-sorted batches, shared-prefix KV cache)."""

    def __init__(self, model, tokenizer, labels: LabelSet, prompt: Prompt, options: PredictOptions | None = None,
                 name: str = "nerft", frozen: bool = True):
        """``frozen``: the weights never change, so the shared prefix's KV cache is computed once; otherwise (a
        model being trained) it is recomputed at each ``predict`` call."""
        self.model, self.tokenizer, self.labels, self.prompt = model, tokenizer, labels, prompt
        self.frozen = frozen
        self.options = options or PredictOptions()
        self.name = name
        self.format = prompt.output_format
        self._overhead = entity_overhead_tokens(tokenizer, labels, self.format)
        fmt = get_format(self.format)
        self._none_tokens = len(tokenizer.encode(fmt.none_text, add_special_tokens=False)) if fmt.none_text else 0
        self._none_start = none_start_ids(tokenizer, self.format)
        self._prefix = None
        self.last_raw: list[list[str]] = []
        self.stats = {"batches": 0, "texts": 0, "windows": 0, "unfinished": 0}

    @classmethod
    def from_model(cls, model, tokenizer, labels: LabelSet, prompt: Prompt, **options: Any) -> TransformersPredictor:
        """For in-memory use (dev evaluation during training): any PredictOptions field as a keyword. The model
        is put in eval mode while predicting and given back in the mode it was in."""
        name = options.pop("name", "nerft")
        frozen = options.pop("frozen", False)
        return cls(model, tokenizer, labels, prompt, PredictOptions(**options), name=name, frozen=frozen)

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def _prefix_cache(self):
        if not self.frozen:
            self._prefix = None
        if self._prefix is None and self.options.prefix_cache:
            from .generation import PrefixCache, shared_prefix_ids

            ids = shared_prefix_ids(self.tokenizer, self.prompt)
            self._prefix = PrefixCache(self.model, ids) if len(ids) >= 4 else False
        return self._prefix or None

    def _windows(self, text: str) -> list[Window]:
        if not self.options.window:
            return [Window(0, len(text))]
        return make_windows(text, self.options.window, self.count_tokens, self.options.window_overlap)

    def predict(self, texts: list[str], labels: list[str] | None = None) -> list[list[Entity]]:
        allowed = set(self.labels.subset(labels).codes) if labels is not None else None
        results, self.last_raw, n_windows = predict_in_windows(texts, self._windows,
                                                               lambda ts: self.generate_answers(ts, allowed))
        self.stats["texts"] += len(texts)
        self.stats["windows"] += n_windows
        return results

    def generate_answers(self, texts: list[str], allowed: set[str] | None = None) -> list[tuple[str, list[Entity]]]:
        """Raw answer and entities for each text (no windowing), in input order."""
        from .generation import prompt_ids

        opts = self.options
        ids = [prompt_ids(self.tokenizer, self.prompt, t) for t in texts]
        n_text = [self.count_tokens(t) for t in texts]
        limits = [answer_budget(n, self._overhead, self._none_tokens) for n in n_text]
        if opts.max_new_tokens:
            limits = [min(limit, opts.max_new_tokens) for limit in limits]
        label_names = [self.labels.name_of(c) for c in self.labels.codes if allowed is None or c in allowed]
        results: list[tuple[str, list[Entity]] | None] = [None] * len(texts)
        was_training = self.model.training
        self.model.eval()
        try:
            self._generate_into(results, texts, ids, limits, label_names, allowed)
        finally:
            self.model.train(was_training)
        return results  # type: ignore[return-value]

    def _generate_into(self, results: list, texts: list[str], ids: list[list[int]], limits: list[int],
                       label_names: list[str], allowed: set[str] | None) -> None:
        from .generation import generate_batch

        opts = self.options
        prefix = self._prefix_cache()
        for batch in sorted_batches([len(x) for x in ids], opts.batch_size):
            batch_texts = [texts[i] for i in batch]
            processors: list = []
            if opts.none_bias:
                processors.append(FirstTokenBias(self._none_start, opts.none_bias))
            if opts.constrained:
                from .constrained import ConstrainedAnswer

                processors.append(ConstrainedAnswer(self.tokenizer, batch_texts, label_names, self.format))
            processor = ChainedProcessors(processors) if processors else None
            guard = RepetitionGuard(self.tokenizer, batch_texts, self.labels)
            gens = generate_batch(self.model, self.tokenizer, [ids[i] for i in batch], [limits[i] for i in batch],
                                  processor, prefix=prefix, stop_row=guard)
            self.stats["batches"] += 1
            for i, g in zip(batch, gens, strict=True):
                self.stats["unfinished"] += not g.finished
                answer = g.text if g.finished or not opts.constrained else complete_prefix(g.text, self.format)
                scores = unit_scores(self.tokenizer, g.text, g.token_ids, g.logprobs)
                results[i] = (answer, answer_to_entities(texts[i], answer, self.labels, scores=scores,
                                                         keep_hallucinated=opts.keep_hallucinated, allowed=allowed))


# ---------------------------------------------------------------------------------------------------------------
# Loading


def tutorial_prompt() -> tuple[LabelSet, Prompt]:
    labels = ccfbdci_labels()
    return labels, build_prompt(labels, "tutorial", "tutorial")


def _load_tokenizer(*candidates: Path | str | None):
    from transformers import AutoTokenizer

    for c in candidates:
        if c and Path(c).is_dir() and any((Path(c) / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json",
                                                                             "vocab.json")):
            return AutoTokenizer.from_pretrained(c)
    raise NerftError(f"no tokenizer found in {', '.join(str(c) for c in candidates if c)}")


def _load_causal_lm(path: str | Path, device: str | None, dtype: str | None):
    import torch
    from transformers import AutoModelForCausalLM

    if not Path(path).exists():
        raise NerftError(f"base model {path} not found; pass --base PATH to a local model folder")
    torch_dtype = getattr(torch, dtype) if dtype else (torch.bfloat16 if device and device.startswith("cuda")
                                                       else torch.float32)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype)
    return model.to(device or "cpu").eval()


def resolve_model(model: str | Path | None = None, base: str | Path | None = None,
                  adapter: str | Path | None = None) -> dict[str, Any]:
    """Where the weights, adapter and tokenizer are, and the label set and prompt to use."""
    if model is not None:
        model = Path(model)
        if (model / INFO_FILE).is_file():
            info = RunInfo.load(model)
            if info.merged:
                return {"base": model, "adapter": None, "tokenizer": [model, tokenizer_dir(model)], "info": info}
            base_path = base or info.base_model
            if not base_path:
                raise NerftError(f"{model}/{INFO_FILE} names no base model; pass --base")
            return {"base": base_path, "adapter": adapter or adapter_dir(model),
                    "tokenizer": [tokenizer_dir(model), model, base_path], "info": info}
        if (model / "adapter_config.json").is_file():  # an adapter folder, e.g. the tutorial's checkpoint-N
            adapter, model = model, None
        else:
            raise NerftError(f"{model} is neither a nerft model folder ({INFO_FILE}) nor a peft adapter folder")
    if adapter is None:
        if base is None:
            raise NerftError("pass a model folder (--model) or a base model (--base) with an --adapter")
        return {"base": base, "adapter": None, "tokenizer": [base], "info": None}
    adapter = Path(adapter)
    if base is None:
        cfg = json.loads((adapter / "adapter_config.json").read_text(encoding="utf-8"))
        base = cfg.get("base_model_name_or_path")
        if not base or not Path(base).exists():
            raise NerftError(f"the adapter's base model {base!r} is not a local folder; pass --base PATH")
    info = RunInfo.load(adapter) if (adapter / INFO_FILE).is_file() else None
    return {"base": base, "adapter": adapter, "tokenizer": [adapter, tokenizer_dir(adapter), base], "info": info}


def load_model_and_tokenizer(model: str | Path | None = None, base: str | Path | None = None,
                             adapter: str | Path | None = None, device: str | None = None, dtype: str | None = None,
                             merge: bool = True):
    """(model, tokenizer, labels, prompt, name). The adapter is merged in memory unless ``merge`` is False."""
    where = resolve_model(model, base, adapter)
    info: RunInfo | None = where["info"]
    labels, prompt = (info.labels, info.prompt) if info else tutorial_prompt()
    tokenizer = _load_tokenizer(*where["tokenizer"])
    lm = _load_causal_lm(where["base"], device, dtype)
    if where["adapter"] is not None:
        from peft import PeftModel

        if not (Path(where["adapter"]) / "adapter_config.json").is_file():
            raise NerftError(f"{where['adapter']} holds no peft adapter (adapter_config.json)")
        lm = PeftModel.from_pretrained(lm, str(where["adapter"]))
        lm = lm.merge_and_unload() if merge else lm
    name = Path(model or where["adapter"] or where["base"]).name
    return lm.eval(), tokenizer, labels, prompt, name


def load_predictor(model: str | Path | None = None, *, base: str | Path | None = None,
                   adapter: str | Path | None = None, backend: str = "transformers", device: str | None = None,
                   dtype: str | None = None, **options: Any) -> Predictor:
    """A predictor for a run directory, an exported folder, or base + adapter (any PredictOptions as keywords)."""
    if backend == "vllm":
        from .vllm_backend import VllmPredictor

        return VllmPredictor.load(model, base=base, adapter=adapter, **options)
    if backend != "transformers":
        raise NerftError(f"unknown backend {backend!r}; choose transformers or vllm")
    lm, tokenizer, labels, prompt, name = load_model_and_tokenizer(model, base, adapter, device, dtype)
    return TransformersPredictor(lm, tokenizer, labels, prompt, PredictOptions(**options), name=name)


# ---------------------------------------------------------------------------------------------------------------
# Files: reading inputs, resumable JSONL output


def read_inputs(path: str | Path) -> list[tuple[str, str]]:
    """(id, text) pairs from a .txt file (one text a line, id = line number) or a .jsonl file (text, optional id)."""
    path = Path(path)
    if not path.is_file():
        raise NerftError(f"input file {path} not found")
    if path.suffix == ".jsonl":
        out = []
        for k, (lineno, obj) in enumerate(iter_jsonl(path)):
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InputError(path, lineno, "expected an object with a string field 'text'")
            out.append((str(obj.get("id", k)), obj["text"]))
    else:
        with open(path, encoding="utf-8") as f:
            out = [(str(n), line.rstrip("\r\n")) for n, line in enumerate(f, 1) if line.strip()]
    ids = [i for i, _ in out]
    if len(set(ids)) != len(ids):
        raise NerftError(f"{path}: document ids are not unique; resuming needs unique ids")
    return out


def finished_ids(output: str | Path) -> set[str]:
    """Ids already written to an output file. A torn last line (an interrupted write) is cut off the file."""
    path = Path(output)
    if not path.is_file():
        return set()
    done, good_end = set(), 0
    with open(path, "rb") as f:
        for raw in f:
            if not raw.endswith(b"\n"):
                break
            try:
                done.add(str(json.loads(raw)["id"]))
            except (ValueError, KeyError, TypeError):
                break
            good_end += len(raw)
    if good_end != path.stat().st_size:
        with open(path, "r+b") as f:
            f.truncate(good_end)
    return done


def predict_file(predictor: Predictor, input_path: str | Path, output_path: str | Path, *, chunk_size: int = 32,
                 labels: list[str] | None = None, raw: bool = False, progress: bool = True) -> int:
    """Predict every document of ``input_path`` into ``output_path`` (JSONL, input order), resuming a previous run:
    documents already in the output are skipped. Returns the number of documents predicted now."""
    docs = read_inputs(input_path)
    done = finished_ids(output_path)
    todo = [(i, t) for i, t in docs if i not in done]
    from tqdm import tqdm

    bar = tqdm(total=len(docs), initial=len(docs) - len(todo), unit="doc", disable=not progress, file=sys.stderr)
    Path(output_path).parent.mkdir(parents=True, exist_ok=True)
    with open(output_path, "a", encoding="utf-8") as out:
        for k in range(0, len(todo), chunk_size):
            chunk = todo[k: k + chunk_size]
            results = predictor.predict([t for _, t in chunk], labels)
            raws = getattr(predictor, "last_raw", None)
            for j, ((doc_id, text), ents) in enumerate(zip(chunk, results, strict=True)):
                row: dict[str, Any] = {"id": doc_id, "text": text, "entities": [e.to_dict() for e in ents]}
                if raw and raws:
                    row["output"] = "\n".join(raws[j])
                out.write(dumps_line(row))
            out.flush()
            os.fsync(out.fileno())
            bar.update(len(chunk))
    bar.close()
    return len(todo)


def _print_table(texts: list[str], results: list[list[Entity]]) -> None:
    for text, ents in zip(texts, results, strict=True):
        print(text)
        if not ents:
            print("  (no entities)")
        for e in ents:
            score = f"{e.score:.3f}" if e.score is not None else "-"
            print(f"  [{e.start}, {e.end})\t{e.label}\t{e.text}\t{score}")


# ---------------------------------------------------------------------------------------------------------------
# CLI


def register(subparsers, name: str, summary: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(name, help=summary, description=summary)
    p.add_argument("texts", nargs="*", help="texts to analyse (or use --input)")
    p.add_argument("--model", help="run directory from `nerft train`, or a folder from `nerft export`")
    p.add_argument("--base", help="base model folder (with --adapter, or to override the run directory's)")
    p.add_argument("--adapter", help="a peft adapter folder, e.g. the tutorial's checkpoint-N")
    p.add_argument("--input", help="a .txt (one text a line) or .jsonl (text, id) file")
    p.add_argument("--output", help="JSONL output; an existing file is resumed (finished ids are skipped)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.add_argument("--labels", nargs="+", help="extract only these label codes")
    p.add_argument("--format", dest="output_format", help="must match the model's output format (checked)")
    p.add_argument("--preset", help="must match the model's prompt style (checked)")
    p.add_argument("--config", metavar="FILE.yaml", help="decoding options (the flags below) from a YAML file")
    cfglib.add_config_arguments(p, PredictOptions, skip={"keep_raw"})
    p.add_argument("--backend", choices=["transformers", "vllm"], default="transformers")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument("--dtype", default=None, help="float32 or bfloat16 (default: float32 on CPU, bfloat16 on GPU)")
    p.add_argument("--raw", action="store_true", help="also write the raw answer as `output` (for nerft evaluate)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run_predict)
    return p


def check_preset(info_prompt: Prompt, output_format: str | None, preset: str | None) -> None:
    if output_format and output_format != info_prompt.output_format:
        raise NerftError(f"--format {output_format} does not match the model, trained with "
                         f"format {info_prompt.output_format}; leave --format out")
    if preset and preset != info_prompt.style:
        raise NerftError(f"--preset {preset} does not match the model, trained with prompt style "
                         f"{info_prompt.style}; leave --preset out")


def run_predict(args: argparse.Namespace) -> int:
    if not args.texts and not args.input:
        raise NerftError("give texts to analyse or --input FILE")
    if args.output and not args.input:
        raise NerftError("--output goes with --input")
    if args.input and not Path(args.input).is_file():
        raise NerftError(f"input file {args.input} not found")
    if args.input and not args.output:
        raise NerftError("--input needs --output FILE.jsonl")
    where = resolve_model(args.model, args.base, args.adapter)
    info_labels, info_prompt = (where["info"].labels, where["info"].prompt) if where["info"] else tutorial_prompt()
    check_preset(info_prompt, args.output_format, args.preset)
    if args.labels:
        info_labels.subset(args.labels)  # unknown codes: an error before the model loads
    options = cfglib.build_config(PredictOptions, args, config_path=args.config)
    predictor = load_predictor(args.model, base=args.base, adapter=args.adapter, backend=args.backend,
                               device=args.device, dtype=args.dtype, **cfglib.to_dict(options))
    if args.input:
        n = predict_file(predictor, args.input, args.output, chunk_size=options.batch_size * 4, labels=args.labels,
                         raw=args.raw, progress=not args.no_progress)
        print(f"predicted {n} documents into {args.output}", file=sys.stderr)
    if args.texts:
        results = predictor.predict(list(args.texts), args.labels)
        if args.json:
            for text, ents in zip(args.texts, results, strict=True):
                print(json.dumps({"text": text, "entities": [e.to_dict() for e in ents]}, ensure_ascii=False))
        else:
            _print_table(list(args.texts), results)
    return 0

