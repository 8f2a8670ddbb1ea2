"""Checkpoints that resume a run exactly and load without unpickling anything.

``RUN/checkpoints/step-N/`` holds ``adapter/`` (peft, safetensors), ``trainer_state.safetensors`` (optimizer
moments, torch/CUDA RNG states: tensors only) and ``trainer_state.json`` (optimizer hyper-parameters, the
schedule's state, Python/NumPy RNG states, the position in the data, the best dev score, training seconds).
Resuming reads only these two formats, whatever else the folder holds: a shared checkpoint cannot run code.
"""

from __future__ import annotations

import json
import logging
import math
import random
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from ..fileio import atomic_dir, write_errors, write_json
from ..schema import NerftError

STATE_JSON = "trainer_state.json"
CHECKPOINT_NAME = re.compile(r"step-[0-9]{1,12}")
TENSOR_NAME = re.compile(r"optimizer\.[0-9]{1,9}\.[A-Za-z_][A-Za-z0-9_]*|rng\.torch|rng\.cuda\.[0-9]{1,3}")
STATE_TENSORS = "trainer_state.safetensors"
FORMAT_VERSION = 1
logger = logging.getLogger("nerft.train")


def save_adapter(peft_model: Any, path: Path) -> None:
    with write_errors(path), atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp, safe_serialization=True)


def rng_state() -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(JSON part, tensor part) of the Python, NumPy, torch and CUDA random states."""
    import numpy as np

    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    info = {"python": [version, list(internal), gauss],
            "numpy": [kind, [int(k) for k in keys], int(pos), int(has_gauss), float(cached)]}
    tensors = {"rng.torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    return info, tensors


def set_rng_state(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> None:
    import numpy as np

    version, internal, gauss = info["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = info["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted((k for k in tensors if k.startswith("rng.cuda.")),
                                        key=lambda k: int(k.rsplit(".", 1)[1]))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)


def optimizer_to_files(state: dict[str, Any]) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """Split an optimizer ``state_dict`` into JSON (hyper-parameters, scalars) and named tensors."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer.{pid}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(pid), {})[key] = value
    return {"param_groups": state["param_groups"], "scalars": scalars}, tensors


def optimizer_from_files(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        if name.startswith("optimizer."):
            _, pid, key = name.split(".", 2)
            state.setdefault(int(pid), {})[key] = value
    for pid, entry in info.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(entry)
    return {"state": state, "param_groups": info["param_groups"]}


def save_checkpoint(run_dir: Path, peft_model: Any, optimizer: Any, scheduler: Any, position: dict[str, Any],
                    keep: int) -> Path:
    """Write ``RUN/checkpoints/step-N`` atomically (N = ``position["step"]``); keep the ``keep`` newest."""
    from safetensors.torch import save_file

    opt_info, tensors = optimizer_to_files(optimizer.state_dict())
    rng_info, rng_tensors = rng_state()
    info = {"format": FORMAT_VERSION, **position, "optimizer": opt_info, "scheduler": scheduler.state_dict(),
            "rng": rng_info}
    path = run_dir / "checkpoints" / f"step-{position['step']}"
    with write_errors(path), atomic_dir(path) as tmp:
        peft_model.save_pretrained(tmp / "adapter", safe_serialization=True)
        save_file({**tensors, **rng_tensors}, str(tmp / STATE_TENSORS))
        write_json(tmp / STATE_JSON, info)
    for old in list_checkpoints(run_dir)[:-max(keep, 1)]:
        shutil.rmtree(old, ignore_errors=True)
    return path


def load_checkpoint(path: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(JSON state, trainer tensors, adapter weights) of a checkpoint folder; reads JSON and safetensors only."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        info = json.loads((path / STATE_JSON).read_text(encoding="utf-8"))
        tensors = load_file(str(path / STATE_TENSORS))
        adapter = load_file(str(path / "adapter" / "adapter_model.safetensors"))
    except (OSError, ValueError, SafetensorError) as exc:
        raise NerftError(f"checkpoint {path} is incomplete or damaged: {exc}") from None
    if not isinstance(info, dict):
        raise NerftError(f"checkpoint {path}: {STATE_JSON} is not a JSON object")
    if info.get("format") != FORMAT_VERSION:
        raise NerftError(f"checkpoint {path} has format {info.get('format')!r}; this nerft reads {FORMAT_VERSION}")
    problem = state_problem(info, tensors)
    if problem:
        raise NerftError(f"checkpoint {path} is damaged: {problem}; resume from another checkpoint (--resume "
                         "FOLDER) or train again")
    return info, tensors, adapter


def _count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**53


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def state_problem(info: dict[str, Any], tensors: dict[str, torch.Tensor]) -> str | None:
    """What is wrong with a checkpoint's state (types, ranges, names), or None: checked before any of it is
    applied, so a tampered file is one error, not a traceback or a run that goes on with nonsense."""
    for key in ("step", "epoch", "step_in_epoch"):
        if not _count(info.get(key)):
            return f"{key} must be a non-negative integer, got {info.get(key)!r}"
    if not (_finite(info.get("best_f1")) and -1 <= info["best_f1"] <= 100):
        return f"best_f1 must be a number in [-1, 100], got {info.get('best_f1')!r}"
    if info.get("best_step") is not None and not _count(info["best_step"]):
        return f"best_step must be a non-negative integer or null, got {info['best_step']!r}"
    if not (_finite(info.get("train_seconds", 0.0)) and info.get("train_seconds", 0.0) >= 0):
        return f"train_seconds must be a non-negative number, got {info.get('train_seconds')!r}"
    if not isinstance(info.get("eval_pending", False), bool):
        return "eval_pending must be true or false"
    scheduler, optimizer = info.get("scheduler"), info.get("optimizer")
    if not isinstance(scheduler, dict) or not _count(scheduler.get("last_epoch")):
        return "scheduler must be an object with the schedule's last_epoch"
    if not (isinstance(optimizer, dict) and isinstance(optimizer.get("param_groups"), list) and optimizer["param_groups"]
            and all(isinstance(g, dict) for g in optimizer["param_groups"])
            and isinstance(optimizer.get("scalars", {}), dict)):
        return "optimizer must be an object with a non-empty list of param_groups"
    unknown = [name for name in tensors if not TENSOR_NAME.fullmatch(name)]
    if unknown:
        return f"{STATE_TENSORS} holds an unknown tensor {unknown[0]!r}"
    if "rng.torch" not in tensors:
        return f"{STATE_TENSORS} holds no rng.torch"
    return rng_problem(info.get("rng"), tensors)


def rng_problem(rng: Any, tensors: dict[str, torch.Tensor]) -> str | None:
    """Whether the random states would be accepted: tried on throwaway generators, never on the process's own."""
    import numpy as np

    try:
        version, internal, gauss = rng["python"]
        random.Random().setstate((version, tuple(internal), gauss))
        kind, keys, pos, has_gauss, cached = rng["numpy"]
        np.random.RandomState().set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
        torch.Generator().set_state(tensors["rng.torch"])
    except Exception as exc:  # TypeError, ValueError, KeyError, RuntimeError: whatever the garbage was
        return f"its random-number state is not valid ({type(exc).__name__}: {str(exc)[:80]})"
    return None


def list_checkpoints(run_dir: Path) -> list[Path]:
    """The checkpoints of a run, oldest first: ``step-N`` folders with their state file. Anything else under
    ``checkpoints/`` (a user's ``step-40.bak`` copy, a staging folder left by ``kill -9``) is ignored, and a
    ``step-*`` folder among them is named in a warning."""
    found, ignored = [], []
    for path in (run_dir / "checkpoints").glob("step-*"):
        if CHECKPOINT_NAME.fullmatch(path.name) and (path / STATE_JSON).is_file():
            found.append(path)
        else:
            ignored.append(path.name)
    if ignored:
        logger.warning(f"ignored under {run_dir / 'checkpoints'}: {', '.join(sorted(ignored))} (not a step-N "
                       f"checkpoint folder with its {STATE_JSON})")
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def find_resume_checkpoint(resume: str, run_dir: Path) -> Path:
    if resume == "latest":
        found = list_checkpoints(run_dir)
        if not found:
            raise NerftError(f"--resume latest: no checkpoint under {run_dir / 'checkpoints'}")
        return found[-1]
    path = Path(resume)
    if not (path / STATE_JSON).is_file():
        old = " (it holds a pickled trainer_state.pt from an older nerft, which is never loaded)" \
            if (path / "trainer_state.pt").is_file() else ""
        raise NerftError(f"--resume {resume}: not a checkpoint folder (no {STATE_JSON}){old}")
    return path
