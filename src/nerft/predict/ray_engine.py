"""``nerft predict --engine ray``: bulk annotation on a Ray cluster (optional extra ``nerft[ray]``) with the same
``Predictor`` as a single process.

Input: files, globs or folders of .txt / .jsonl (read by ``files.read_inputs``: one text a line, or ``text`` and
``id``); each input file is a shard. Output: a folder with one nerft JSONL per shard, ``<input stem>.jsonl``, with
the rows ``nerft predict --input`` writes. A run resumes by shard: a shard whose output exists is finished and
skipped; a shard is written under a temporary name and renamed once complete, so no output file is ever partial.

The driver reads the pending shards and hands their texts to Ray Data (``from_items``); ``map_batches`` sends them
through a pool of actors that each open the model once (``loading.open_predictor``: any backend, with the load and
decoding options of the command line, vLLM's engine settings included) and turn a batch of texts into output
lines; the lines come back to the driver in order and each shard is written when its last line arrives. An actor
takes ``gpus_per_actor`` GPUs (default: the tensor-parallel size with ``--backend vllm``, else none: a CPU actor
running torch on ``cpus_per_actor`` threads).

On a cluster every node needs nerft (same version) and the model readable at the same path (shared storage, or a
hub id); the input and output files stay on the driver's machine, so ``ray://head:10001`` works from a login node.
The pending texts pass through the driver's memory: split a corpus far larger than memory into several runs over
subsets of its shards.
"""

from __future__ import annotations

import copy
import glob
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config import opt
from ..fileio import atomic_write
from ..inference.options import LoadOptions, PredictOptions
from ..jsonl import dumps_line
from ..progress import choice, wants_bar
from ..schema import NerftError
from .files import prediction_row, read_inputs

logger = logging.getLogger("nerft.predict")

INPUT_SUFFIXES = (".txt", ".jsonl")


@dataclass
class RayOptions:
    """Where the actors run and what each one takes (``--ray.*`` flags of ``nerft predict --ray``)."""

    address: str | None = opt(None, "cluster to join: ray://head:10001, auto, or unset (then RAY_ADDRESS, else a "
                                    "new local cluster)")
    actors: int = opt(1, "model replicas; each actor loads the model once")
    gpus_per_actor: float | None = opt(None, "GPUs per actor (default: --vllm.tensor-parallel-size with "
                                             "--backend vllm, else 0: CPU actors)")
    cpus_per_actor: float = opt(1.0, "CPU cores per actor; a CPU actor runs torch on that many threads")


@dataclass(frozen=True)
class Shard:
    input: Path
    output: Path


def input_files(patterns: Sequence[str]) -> list[Path]:
    """The input shards: each pattern is a file, a folder (its .txt and .jsonl files) or a glob (``**`` too)."""
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern).expanduser()
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in INPUT_SUFFIXES)
        elif glob.has_magic(pattern):
            found = sorted(Path(p) for p in glob.glob(str(path), recursive=True) if Path(p).is_file())
        else:
            found = [path] if path.is_file() else []
        if not found:
            raise NerftError(f"--input {pattern}: no such file, and no .txt or .jsonl file matches it")
        files.extend(found)
    return list(dict.fromkeys(files))  # a file matched twice is one shard


def plan_shards(inputs: Sequence[Path], output_dir: str | Path) -> list[Shard]:
    """Each input's output file in ``output_dir``; two inputs may not share one, nor an input be an output."""
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NerftError(f"--output {out} is a file; with --engine ray it is a folder (one JSONL per input file)")
    shards: list[Shard] = []
    owner: dict[Path, Path] = {}
    for path in inputs:
        target = out / f"{path.stem}.jsonl"
        if target in owner:
            raise NerftError(f"{owner[target]} and {path} would both be written to {target}; give the input files "
                             "distinct names")
        if target.exists() and target.resolve() == path.resolve():
            raise NerftError(f"the output of {path} would be {path} itself; pass another --output folder")
        owner[target] = path
        shards.append(Shard(path, target))
    return shards


def actor_arguments(load: LoadOptions, options: PredictOptions, ray_opts: RayOptions,
                    labels: list[str] | None = None, raw: bool = False) -> dict[str, Any]:
    """What each actor is built with and takes: ``map_batches``'s ``fn_constructor_kwargs`` (the whole load and
    decoding options: backend, vLLM engine settings, OpenAI server, windows, ...), ``num_gpus`` and ``num_cpus``."""
    gpus = ray_opts.gpus_per_actor
    if gpus is None:
        gpus = load.vllm.tensor_parallel_size if load.backend == "vllm" else 0
    cores = max(1, int(ray_opts.cpus_per_actor))
    threads = cores if not gpus and load.backend == "transformers" else None
    if not gpus and load.backend in ("ct2", "llamacpp"):  # CPU engines with thread pools of their own: as many
        load = copy.deepcopy(load)                        # threads as the actor's cores unless set
        if load.backend == "ct2" and not load.ct2.threads and load.ct2.device == "cpu":
            load.ct2.threads = cores
        if load.backend == "llamacpp" and not load.llamacpp.threads:
            load.llamacpp.threads = cores
    return {"fn_constructor_kwargs": {"load": load, "options": options, "labels": labels, "raw": raw,
                                      "threads": threads},
            "num_gpus": gpus, "num_cpus": ray_opts.cpus_per_actor}


class PredictActor:
    """A Ray Data actor: opens the model once, then turns batches of texts into output lines."""

    def __init__(self, load: LoadOptions, options: PredictOptions, labels: list[str] | None, raw: bool,
                 threads: int | None):
        if threads:  # a CPU actor: as many torch threads as cores reserved, not one per core of the node
            import torch

            torch.set_num_threads(threads)
        from ..inference.loading import open_predictor

        self.predictor = open_predictor(load, options)
        self.labels, self.raw = labels, raw

    def __call__(self, batch: dict[str, Any]) -> dict[str, Any]:
        import numpy as np

        texts = [str(t) for t in batch["text"]]
        predictions = self.predictor.predict_detailed(texts, self.labels)
        lines = [dumps_line(prediction_row(str(i), t, p, self.raw))
                 for i, t, p in zip(batch["id"], texts, predictions, strict=True)]
        return {"shard": batch["shard"], "index": batch["index"], "line": np.array(lines, dtype=object)}


def predict_shards(load: LoadOptions, options: PredictOptions, inputs: Sequence[str], output_dir: str | Path, *,
                   ray_opts: RayOptions | None = None, labels: list[str] | None = None, raw: bool = False,
                   progress: bool | None = None, encoding: str = "utf-8") -> tuple[int, int]:
    """Predict every unfinished shard of ``inputs`` into ``output_dir`` on Ray; returns (shards written, texts
    predicted). Joins the Ray cluster of ``ray_opts.address`` unless Ray is already initialised. ``encoding``:
    of the input files (``--encoding``)."""
    try:
        import ray
        import ray.data
    except ImportError:
        raise NerftError("--ray needs Ray: pip install 'nerft[ray]'") from None
    ray_opts = ray_opts or RayOptions()
    if ray_opts.actors < 1:
        raise NerftError("--ray.actors must be at least 1")
    shards = plan_shards(input_files(inputs), output_dir)
    pending = [s for s in shards if not s.output.is_file()]
    docs = [read_inputs(s.input, encoding) for s in pending]  # a bad line or duplicate id fails before the cluster starts
    Path(output_dir).mkdir(parents=True, exist_ok=True)
    for shard, rows in zip(pending, docs, strict=True):
        if not rows:
            _write_shard(shard.output, [])
    items = [{"shard": k, "index": i, "id": doc_id, "text": text}
             for k, rows in enumerate(docs) for i, (doc_id, text) in enumerate(rows)]
    if not items:
        return len(pending), 0
    if not ray.is_initialized():  # the workers' output unless --no-progress (as before); Ray's bars as nerft's
        ray.init(address=ray_opts.address, log_to_driver=choice(progress) is not False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # shards finish one after another: little to buffer
    context.enable_progress_bars = wants_bar(progress)
    dataset = ray.data.from_items(items).map_batches(
        PredictActor, batch_size=options.batch_size, compute=ray.data.ActorPoolStrategy(size=ray_opts.actors),
        **actor_arguments(load, options, ray_opts, labels, raw))
    waiting: dict[int, list[tuple[int, str]]] = {}
    written = 0
    for row in dataset.iter_rows():
        k = int(row["shard"])
        waiting.setdefault(k, []).append((int(row["index"]), row["line"]))
        if len(waiting[k]) == len(docs[k]):
            _write_shard(pending[k].output, [line for _, line in sorted(waiting.pop(k))])
            written += 1
            logger.info("wrote %s (%d texts)", pending[k].output, len(docs[k]))
    if waiting:  # cannot happen unless Ray lost rows: say so rather than leave shards silently unwritten
        raise NerftError(f"Ray returned too few rows for {len(waiting)} shard(s); run again to finish them")
    return written + sum(not rows for rows in docs), len(items)


def _write_shard(path: Path, lines: list[str]) -> None:
    with atomic_write(path) as f:  # a temporary file beside path, renamed onto it when complete
        f.writelines(lines)
