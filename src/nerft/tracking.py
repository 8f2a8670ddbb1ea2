"""Experiment tracking: SwanLab (offline by default, no account needed), TensorBoard, or nothing.

``train_log.jsonl`` in the run directory is always written, whatever the backend. A SwanLab cloud run reads its
key from the ``SWANLAB_API_KEY`` environment variable; the key is never a config field, so it never reaches a
log, a config dump or the run directory.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from .config import opt
from .jsonl import JsonlAppender, cut_torn_tail, read_records, write_jsonl
from .schema import NerftError


@dataclass
class TrackingConfig:
    backend: Literal["swanlab", "tensorboard", "none"] = opt("swanlab", "where curves go (train_log.jsonl always)")
    mode: Literal["offline", "local", "cloud", "disabled"] = opt(
        "offline", "SwanLab mode: offline/local keep everything in RUN/swanlog; cloud uploads (needs SWANLAB_API_KEY)")
    project: str = opt("nerft", "SwanLab project name")
    run_name: str | None = opt(None, "experiment name (default: the run directory's name)")
    log_every: int = opt(10, "log loss, lr and tokens/s every N optimizer steps")


def open_train_log(path: Path, resume_step: int | None) -> JsonlAppender:
    """``train_log.jsonl``, appended one flushed line per record so a crash loses nothing already logged. A resumed
    run first drops the records past the checkpoint it resumes from: those steps are run (and logged) again."""
    if resume_step is not None and path.is_file():
        cut_torn_tail(path)
        kept = [r for r in read_records(path) if int(r.get("step", 0)) <= resume_step]
        write_jsonl(path, kept)
    return JsonlAppender(path, truncate=resume_step is None)


class Tracker:
    """One object for the training loop: ``log(metrics, step)``, ``log_samples(rows, step)``, ``finish()``."""

    def __init__(self, cfg: TrackingConfig, run_dir: Path, config: dict[str, Any], resume_step: int | None = None,
                 enabled: bool = True):
        """``resume_step``: the checkpoint step a resumed run continues from (None: a fresh run)."""
        self.enabled = enabled  # False on non-zero ranks of a distributed run
        self.jsonl: JsonlAppender | None = None
        self._swanlab = None
        self._tb = None
        if not enabled:
            return
        if cfg.backend == "swanlab":
            self._swanlab = _start_swanlab(cfg, run_dir, config)
        elif cfg.backend == "tensorboard":
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                raise NerftError("tracking.backend tensorboard needs: pip install 'nerft[tensorboard]'") from None
            self._tb = SummaryWriter(log_dir=str(run_dir / "tensorboard"))
            self._tb.add_text("config", "```\n" + json.dumps(config, ensure_ascii=False, indent=2) + "\n```")
        self.jsonl = open_train_log(run_dir / "train_log.jsonl", resume_step)  # opened once the backend is up

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.jsonl is None:
            return
        self.jsonl.write({"step": step, **metrics})
        numbers = {k: v for k, v in metrics.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if self._swanlab is not None:
            self._swanlab.log(numbers, step=step)
        if self._tb is not None:
            for k, v in numbers.items():
                self._tb.add_scalar(k, v, step)

    def log_samples(self, rows: list[dict[str, str]], step: int) -> None:
        """Sample predictions (text, gold, predicted) as text."""
        if self.jsonl is None or not rows:
            return
        body = "\n\n".join(f"文本: {r['text']}\n标注: {r['gold']}\n预测: {r['predicted']}" for r in rows)
        if self._swanlab is not None:
            import swanlab

            self._swanlab.log({"dev/samples": swanlab.Text(body)}, step=step)
        if self._tb is not None:
            self._tb.add_text("dev/samples", body.replace("\n", "  \n"), step)

    def finish(self) -> None:
        if self.jsonl is not None:
            self.jsonl.close()
        if self._swanlab is not None:
            self._swanlab.finish()
        if self._tb is not None:
            self._tb.close()


def _start_swanlab(cfg: TrackingConfig, run_dir: Path, config: dict[str, Any]):
    try:
        import swanlab
    except ImportError:
        raise NerftError("tracking.backend swanlab needs: pip install 'nerft[swanlab]' "
                         "(or set --tracking.backend none or tensorboard)") from None
    mode = {"cloud": "online"}.get(cfg.mode, cfg.mode)
    if mode == "online":
        key = os.environ.get("SWANLAB_API_KEY")
        if not key:
            raise NerftError("tracking.mode cloud needs your SwanLab key in the SWANLAB_API_KEY environment "
                             "variable (or use --tracking.mode offline and `swanlab sync` later)")
        try:
            swanlab.login(api_key=key, save=False)
        except Exception as exc:  # noqa: BLE001 - any failure here is the key or the network, said in one line
            raise NerftError(f"SwanLab cloud login failed ({type(exc).__name__}: {exc}); check SWANLAB_API_KEY "
                             "or use --tracking.mode offline") from None
    return swanlab.init(project=cfg.project, name=cfg.run_name or run_dir.name, mode=mode,
                        log_dir=str(run_dir / "swanlog"), config=config)
