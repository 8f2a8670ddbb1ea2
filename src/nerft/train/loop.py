"""``train()``: set up, loop, save. The pieces it runs are importable on their own: ``data`` (encoding, batch
order, collation), ``step`` (one optimizer step), ``schedule`` (learning rate and training clock),
``checkpoint`` (safetensors + JSON, no pickle), ``evaluation`` (dev/test scores through the predictor).

Runs unchanged on one CPU/GPU, under ``torchrun`` / ``accelerate launch`` (DDP), and under DeepSpeed through
``accelerate launch --config_file configs/deepspeed/zero2.yaml``. Ctrl-C and SIGTERM (a scheduler's preemption,
``docker stop``) stop at a step boundary with a checkpoint; ``--resume latest`` continues exactly.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from .. import config as cfglib
from ..fileio import atomic_write, check_output_apart, write_json
from ..generation import pad_token_id
from ..jsonl import read_documents, read_records, write_jsonl
from ..lexicon import LEXICON_FILE
from ..modeling import base_model_record, load_tokenizer, resolve_autocast, resolve_device
from ..progress import progress
from ..rundir import BaseModelRef, RunInfo, adapter_dir, tokenizer_dir
from ..schema import Document, NerftError
from ..tracking import Tracker
from .checkpoint import (
    find_resume_checkpoint,
    load_checkpoint,
    optimizer_from_files,
    rng_state,
    save_adapter,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig
from .data import build_training_prompt, dev_file, epoch_batches, load_training_documents
from .data import resolve_labels as resolve_label_set
from .decoding import apply_decoding, choose_run_decoding, describe, forget_decoding
from .evaluation import sample_rows, score
from .interrupts import Interrupts, TrainingInterrupted
from .schedule import TrainingClock, build_schedule
from .step import StepStats, ThroughputMeter, accumulate_gradients, apply_gradients
from .tasks import build_task

logger = logging.getLogger("nerft.train")
# what a run writes or clears in its directory: an input there would be replaced (other files are left alone)
RUN_FILES = ("nerft.json", "labels.json", "lexicon.json", "config.yaml", "metrics.json", "train_log.jsonl",
             "curves.png", "test_predictions.jsonl", "decoding.yaml", "adapter", "tokenizer", "checkpoints", "tune",
             "swanlog", "tensorboard")


@dataclass
class Position:
    """Where a run is: optimizer steps done, and where in the epoch's batch order the next step starts."""

    step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0


class Trainer:
    """One training run: built from a config (set-up: ``_claim_run_dir``, ``_set_up_data``, ``_set_up_model``,
    ``_set_up_optimizer``, ``_restore``, ``_open_run_dir``), ``run()`` loops until steps, time budget or a stop
    signal (checkpoints as due), ``finish()`` closes it (``_keep_best``, ``choose_decoding``, ``_score_test``,
    ``_write_results``)."""

    def __init__(self, cfg: TrainConfig):
        from accelerate import Accelerator

        self.cfg = cfg
        self.run_dir = Path(cfg.output.dir)
        self._claim_run_dir()
        self.accelerator = Accelerator(cpu=resolve_device(cfg.model).type == "cpu")
        self.main, self.world = self.accelerator.is_main_process, self.accelerator.num_processes
        torch.manual_seed(cfg.optim.seed)
        random.seed(cfg.optim.seed)
        self.task = build_task(cfg)
        self._set_up_data()
        self._set_up_model()
        self._plan_steps()
        self.clock = TrainingClock()
        self._set_up_optimizer()
        self.position = Position()
        self.best_f1 = -1.0
        self.best_step: int | None = None
        self.best_state: dict[str, torch.Tensor] | None = None
        # a dev evaluation that a stop interrupted: recorded in the checkpoint, run first on --resume, so the
        # resumed run is the uninterrupted one whatever the moment of the signal
        self.eval_pending = False
        self.interrupts: Interrupts | None = None
        self.start_scores: dict[str, Any] | None = None
        if self.resume_from is not None:
            self._restore(self.resume_from)
        self.last_checkpoint_s = self.clock.seconds()
        self.checkpointed_step = self.position.step if self.resume_from is not None else None
        self.meter = ThroughputMeter(self.world)
        self.tracker = self._open_run_dir()

    # --- set-up ------------------------------------------------------------------------------------------------

    def _claim_run_dir(self) -> None:
        """The output folder holds no input, and no other run unless resumed or overwritten."""
        cfg, data = self.cfg, self.cfg.data
        check_output_apart(self.run_dir, [data.train, data.dev, data.test, data.labels, *data.mixture,
                                          cfg.model.name_or_path], "--out", writes=RUN_FILES)
        self.resume_from = find_resume_checkpoint(cfg.resume, self.run_dir) if cfg.resume else None
        if self.resume_from is None and (self.run_dir / "nerft.json").exists() and not cfg.output.overwrite:
            raise NerftError(f"{self.run_dir} already holds a run; pass --resume latest, --output.overwrite, "
                             "or another --out")

    def _set_up_data(self) -> None:
        """Documents, labels, prompt and tokenizer; the training examples encoded by the task."""
        cfg = self.cfg
        train_docs, self.dev_docs, self.lexicon = load_training_documents(cfg, self.main)
        self.labels = resolve_label_set(cfg.data, train_docs)
        self.prompt = build_training_prompt(cfg, self.labels, train_docs)
        self.tokenizer = load_tokenizer(cfg.model)
        self.data = self.task.encode(train_docs, self.tokenizer, self.prompt, self.labels, self.main, self.lexicon)

    def _set_up_model(self) -> None:
        self.model, base_config = self.task.build_model(self.labels, self.accelerator.device)
        self.base_record = base_model_record(self.cfg.model, base_config)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        weight_dtype = next(p for p in self.model.parameters() if not p.requires_grad).dtype
        self.autocast, self.autocast_note = resolve_autocast(self.cfg.optim.autocast, self.accelerator.device,
                                                             weight_dtype)

    def _set_up_optimizer(self) -> None:
        """AdamW and the schedule over ``total_steps``; the loss module and optimizer prepared by accelerate."""
        optim = self.cfg.optim
        optimizer = torch.optim.AdamW(self.task.param_groups(self.model), lr=optim.lr,
                                      weight_decay=optim.weight_decay)
        self.scheduler = build_schedule(optimizer, optim, self.total_steps, self.clock.seconds)
        # The scheduler stays outside accelerator.prepare: prepared, it steps once per process and optimizer step
        # (it expects steps counted over the whole dataset), which would run the schedule `world` times too fast.
        self.loss_module, self.optimizer = self.accelerator.prepare(self.task.loss_module(self.model, self.autocast),
                                                                    optimizer)

    def _plan_steps(self) -> None:
        cfg, world = self.cfg.optim, self.world
        self.lengths = [len(ex.input_ids) for ex in self.data.examples]
        # a data.mixture run under data.shared_prefix: each micro-batch from one folder, sharing its whole prefix
        self.groups = [ex.group for ex in self.data.examples] if self.data.prefix_lens else None
        self.batches_per_epoch = len(epoch_batches(self.lengths, cfg.batch_size, 0, 0, False, groups=self.groups)
                                     ) // world * world
        if self.batches_per_epoch == 0:
            raise NerftError(f"{len(self.data.examples)} examples make fewer batches than the {world} processes")
        self.steps_per_epoch = math.ceil(self.batches_per_epoch // world / cfg.grad_accum)
        self.total_steps = cfg.max_steps or self.steps_per_epoch * cfg.epochs
        self.budget_s = cfg.max_minutes * 60 if cfg.max_minutes is not None else None

    def _restore(self, path: Path) -> None:
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        info, tensors, adapter = load_checkpoint(path)
        set_peft_model_state_dict(self.model, adapter)
        self.optimizer.load_state_dict(optimizer_from_files(info["optimizer"], tensors))
        self.scheduler.load_state_dict(info["scheduler"])
        set_rng_state(info["rng"], tensors)
        self.position = Position(info["step"], info["epoch"], info["step_in_epoch"])
        self.best_f1, self.best_step = info["best_f1"], info["best_step"]
        self.eval_pending = info.get("eval_pending", False)
        self.clock.before = info.get("train_seconds", 0.0)
        best_file = adapter_dir(self.run_dir) / "adapter_model.safetensors"
        if best_file.is_file() and self.best_step is not None:
            self.best_state = load_file(str(best_file))

    def _open_run_dir(self) -> Tracker:
        cfg, run_dir = self.cfg, self.run_dir
        if self.main:
            if self.resume_from is None:  # a fresh run: stale checkpoints of an overwritten one must not be resumed
                import shutil

                shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
            run_dir.mkdir(parents=True, exist_ok=True)
            forget_decoding(run_dir)  # chosen for an adapter this session may replace; chosen again at the end
            RunInfo(BaseModelRef(**self.base_record), self.labels, self.prompt, max_length=cfg.data.max_length,
                    trained_prompts=self.data.prompts, **self.task.run_info()).save(run_dir)
            self.lexicon.save(run_dir / LEXICON_FILE)
            self.tokenizer.save_pretrained(tokenizer_dir(run_dir))
            with atomic_write(run_dir / "config.yaml") as f:
                yaml.safe_dump(cfglib.to_dict(cfg), f, allow_unicode=True, sort_keys=False)
        resume_step = self.position.step if self.resume_from is not None else None
        tracker = Tracker(cfg.tracking, run_dir, cfglib.to_dict(cfg), resume_step=resume_step, enabled=self.main)
        if self.main:
            overlong = (f"{self.data.overlong} over max_length {cfg.data.max_length}, {cfg.data.overlong}"
                        if cfg.task == "generate" else
                        f"{self.data.overlong} documents cut into windows of tagger.max_length {cfg.tagger.max_length}")
            logger.info(f"{len(self.data.examples)} examples ({overlong}), {self.data.supervised_tokens} supervised "
                        f"{'tokens' if cfg.task == 'generate' else 'characters'}; {sum(p.numel() for p in self.params):,} trainable parameters; {self.length_note()} "
                        f"of {cfg.optim.batch_size}x{cfg.optim.grad_accum}x{self.world} examples on "
                        f"{self.accelerator.device}; autocast {self.autocast_note}")
        return tracker

    # --- evaluation and checkpoints ----------------------------------------------------------------------------

    def evaluate(self, docs: list[Document], split: str, predictions_file: Path | None = None,
                 decoded: bool = False) -> dict[str, Any]:
        """Score ``docs`` (off the training clock) and log the scores and a few samples; with
        ``predictions_file``, also write the predictions there (what ``nerft evaluate --pred`` reads);
        ``decoded``: the answers finished as RUN/decoding.yaml says, the scores as answered kept beside."""
        with self.clock.paused():
            preds, counts = self.task.predict(self.model, self.tokenizer, self.prompt, self.labels, docs, self.lexicon,
                                              decoded and self.cfg.tune.constrained, self.autocast)
            scores = score(docs, preds, counts)
            if decoded:
                preds = apply_decoding(preds, self.run_dir, self.labels)
                scores = {**score(docs, preds, counts),
                          "as_answered": {k: scores[k] for k in ("precision", "recall", "f1")}}
            if predictions_file is not None:
                write_jsonl(predictions_file, preds)
            self.tracker.log({f"{split}/{k}": v for k, v in scores.items()}, self.position.step)
            self.tracker.log_samples(sample_rows(docs, preds, self.cfg.eval.samples, self.labels), self.position.step)
        return scores

    def evaluate_dev(self) -> None:
        """Dev F1 now; the best adapter so far is kept in memory and in RUN/adapter."""
        from peft import get_peft_model_state_dict

        if self.main:
            scores = self.evaluate(self.dev_docs, "dev")
            # the best so far and the end of the pending evaluation change together: a stop waits for both
            with self.interrupts.critical() if self.interrupts else contextlib.nullcontext():
                if scores["f1"] > self.best_f1:
                    self.best_f1, self.best_step = scores["f1"], self.position.step
                    self.best_state = {k: v.detach().clone()
                                       for k, v in get_peft_model_state_dict(self.model).items()}
                    save_adapter(self.model, adapter_dir(self.run_dir))
                self.eval_pending = False
            self.progress.write(f"step {self.position.step}: dev F1 {scores['f1']:.2f} "
                                f"(best {self.best_f1:.2f} at {self.best_step})")
        self.accelerator.wait_for_everyone()
        self.eval_pending = False

    def checkpoint(self) -> None:
        with self.clock.paused():
            if self.main:
                p = self.position
                save_checkpoint(self.run_dir, self.model, self.optimizer, self.scheduler,
                                {"step": p.step, "epoch": p.epoch, "step_in_epoch": p.step_in_epoch,
                                 "best_f1": self.best_f1, "best_step": self.best_step, "world_size": self.world,
                                 "eval_pending": self.eval_pending,
                                 "train_seconds": self.clock.seconds()},
                                self.cfg.output.keep_checkpoints)
            self.accelerator.wait_for_everyone()
        self.last_checkpoint_s = self.clock.seconds()
        self.checkpointed_step = self.position.step

    def budget_spent(self) -> bool:
        if self.budget_s is None:
            return False
        over = torch.tensor(float(self.clock.seconds() >= self.budget_s), device=self.accelerator.device)
        return bool(self.accelerator.gather(over[None]).max().item())  # every process stops at the same step

    def checkpoint_due(self) -> bool:
        out = self.cfg.output
        if out.save_every and self.position.step % out.save_every == 0:
            return True
        if out.save_every_minutes is None:
            return False
        due = self.clock.seconds() - self.last_checkpoint_s >= out.save_every_minutes * 60
        flag = torch.tensor(float(due), device=self.accelerator.device)
        return bool(self.accelerator.gather(flag[None]).max().item())

    # --- the loop ----------------------------------------------------------------------------------------------

    def steps_of_epoch(self, epoch: int) -> list[list[list[int]]]:
        """This process's micro-batches of ``epoch``, grouped by optimizer step."""
        cfg = self.cfg
        batches = epoch_batches(self.lengths, cfg.optim.batch_size, cfg.optim.seed, epoch, cfg.data.group_by_length,
                                groups=self.groups)
        mine = batches[:self.batches_per_epoch][self.accelerator.process_index::self.world]
        return [mine[s:s + cfg.optim.grad_accum] for s in range(0, len(mine), cfg.optim.grad_accum)]

    def run(self) -> str:
        """Train until done; returns why it stopped ("steps", "time budget", "session limit")."""
        cfg = self.cfg
        if self.resume_from is not None and self.finished_before() and not self.eval_pending:
            return "steps" if self.position.step >= self.total_steps else "time budget"
        if self.main and self.dev_docs and cfg.eval.at_start and self.resume_from is None:
            self.start_scores = self.evaluate(self.dev_docs, "dev")
            logger.info(f"dev before training: F1 {self.start_scores['f1']:.2f} (P "
                        f"{self.start_scores['precision']:.2f}, R {self.start_scores['recall']:.2f})")
        self.session_limit = self.position.step + cfg.stop_after_steps if cfg.stop_after_steps else None
        self.meter.started = time.perf_counter()
        self.clock.start()
        self.model.train()
        with progress(self.expected_steps(), "train", initial=self.position.step, enabled=self.main,
                      log=logger) as self.progress, Interrupts() as interrupts:
            return self._loop(interrupts)

    def length_note(self) -> str:
        """How long the run is: "N steps", or "M training minutes of steps (at most N)" under a time budget."""
        if self.budget_s is None:
            return f"{self.total_steps} steps"
        return f"{self.budget_s / 60:g} training minutes of steps (at most {self.total_steps})"

    def expected_steps(self) -> int | None:
        """The steps the run will end at: max_steps, or under a time budget the steps the pace so far fits into it
        if fewer (None before the first step: the progress shows no share until then)."""
        if self.budget_s is None:
            return self.total_steps
        step, seconds = self.position.step, self.clock.seconds()
        if step == 0 or seconds <= 0:
            return None
        return min(self.total_steps, max(step, math.ceil(step * self.budget_s / seconds)))

    def finished_before(self) -> bool:
        """A resumed run whose training was already done: it goes straight to the end (decoding, test)."""
        if self.position.step >= self.total_steps:
            return True
        return self.budget_s is not None and self.clock.before >= self.budget_s

    def _loop(self, interrupts: Interrupts) -> str:
        pad_id = pad_token_id(self.tokenizer)
        rng_at_step_start = rng_state()
        self.interrupts = interrupts
        try:
            if self.eval_pending:  # the evaluation a stop interrupted, as the uninterrupted run made it
                self.evaluate_dev()
                if self.finished_before():
                    return "steps" if self.position.step >= self.total_steps else "time budget"
            while True:
                steps = self.steps_of_epoch(self.position.epoch)
                for micro_batches in steps[self.position.step_in_epoch:]:
                    collated = [self.task.collate([self.data.examples[i] for i in b], pad_id) for b in micro_batches]
                    stats = accumulate_gradients(self.loss_module, collated, accelerator=self.accelerator)
                    with interrupts.critical():
                        apply_gradients(self.optimizer, self.params, self.cfg.optim.max_grad_norm, self.scheduler,
                                        self.accelerator)
                        self.position.step += 1
                        self.position.step_in_epoch += 1
                        rng_at_step_start = rng_state()  # of the next step: what a stop from here goes back to
                    stop = self._after_step(stats, end_of_epoch=self.position.step_in_epoch == len(steps))
                    if stop:
                        return stop
                self.position.epoch, self.position.step_in_epoch = self.position.epoch + 1, 0
        except TrainingInterrupted:
            self.optimizer.zero_grad(set_to_none=True)
            set_rng_state(*rng_at_step_start)  # the unfinished step is replayed on --resume
            raise

    def _after_step(self, stats: StepStats, end_of_epoch: bool) -> str | None:
        """Log, evaluate and checkpoint as due; the reason to stop, if any."""
        cfg, step = self.cfg, self.position.step
        self.meter.add(stats)
        postfix = {"loss": f"{self.meter.window_loss():.4f}", "tok_s": f"{self.meter.tokens_per_s():.0f}"}
        if self.budget_s is not None:
            postfix["budget_left"] = f"{max(self.budget_s - self.clock.seconds(), 0) / 60:.1f}min"
        self.progress.set_postfix(**postfix)
        self.progress.set_total(self.expected_steps())  # changes only under a time budget
        self.progress.update(1)
        if step % cfg.tracking.log_every == 0 or step == self.total_steps:
            self.tracker.log({**self.meter.record(), "lr": self.scheduler.get_last_lr()[0],
                              "epoch": self.position.epoch, "train_seconds": round(self.clock.seconds(), 3)}, step)
        out_of_time = self.budget_spent()
        due = step % cfg.eval.every == 0 if cfg.eval.every else end_of_epoch
        if self.dev_docs and (due or step == self.total_steps or out_of_time):
            self.eval_pending = True
            self.evaluate_dev()
        if self.checkpoint_due():
            self.checkpoint()
        if out_of_time:
            return "time budget"
        if step >= self.total_steps:
            return "steps"
        if self.session_limit is not None and step >= self.session_limit:
            return "session limit"
        return None

    # --- the end -----------------------------------------------------------------------------------------------

    def finish(self, stopped_by: str) -> dict[str, Any]:
        """Checkpoint an unfinished run; put the best adapter in RUN/adapter; choose the decoding and score test
        when training is done; write metrics and curves."""
        done = stopped_by in ("steps", "time budget")
        if self.checkpointed_step != self.position.step:  # a finished run too: --resume then chooses again
            self.checkpoint()
        if not done and self.main:
            logger.warning(f"stopped at step {self.position.step}/{self.total_steps} ({stopped_by}); "
                           f"checkpoint saved, continue with --resume latest --out {self.run_dir}")
        metrics: dict[str, Any] = {"train": self._train_record(done, stopped_by)}
        if self.main:
            if (dev := self._keep_best()) is not None:
                metrics["dev"] = dev
            decoding = self.choose_decoding() if done else None
            if decoding is not None:
                metrics["decoding"] = decoding
            if done and self.cfg.data.test:
                metrics["test"] = self._score_test(decoded=decoding is not None)
            self._write_results(metrics)
        self.tracker.finish()
        self.accelerator.wait_for_everyone()
        return metrics

    def _train_record(self, done: bool, stopped_by: str) -> dict[str, Any]:
        return {"steps": self.position.step, "total_steps": self.total_steps, "examples": len(self.data.examples),
                "overlong": self.data.overlong, "overlong_action": self.cfg.data.overlong,
                "supervised_tokens": self.data.supervised_tokens, "seconds": round(self.meter.elapsed(), 1),
                "finished": done, "world_size": self.world, "train_seconds": round(self.clock.seconds(), 3),
                "stopped_by": stopped_by, "autocast": self.autocast_note}

    def _keep_best(self) -> dict[str, Any] | None:
        """The best dev adapter back in the model (RUN/adapter holds it already); without dev evaluations the
        last one is saved there. Returns the dev record, or None."""
        from peft import set_peft_model_state_dict

        if self.best_state is None:
            save_adapter(self.model, adapter_dir(self.run_dir))
            return None
        set_peft_model_state_dict(self.model, self.best_state)
        dev: dict[str, Any] = {"best_f1": self.best_f1, "best_step": self.best_step}
        if self.start_scores is not None:
            dev["f1_before_training"] = self.start_scores["f1"]
        return dev

    def _score_test(self, decoded: bool) -> dict[str, Any]:
        """Test scores of the kept adapter (with the run decoding when one was chosen), its predictions written."""
        assert self.cfg.data.test is not None  # called only when the run has a test split
        scores = self.evaluate(read_documents(self.cfg.data.test), "test", self.run_dir / "test_predictions.jsonl",
                               decoded=decoded)
        how = (f" with the run decoding; as answered {scores['as_answered']['f1']:.2f}"
               if "as_answered" in scores else "")
        logger.info(f"test: F1 {scores['f1']:.2f} (P {scores['precision']:.2f}, R {scores['recall']:.2f}){how}")
        return scores

    def _write_results(self, metrics: dict[str, Any]) -> None:
        """RUN/metrics.json and the training curves (curves.png)."""
        from ..plots import safe_plot, training_curves

        write_json(self.run_dir / "metrics.json", metrics)
        log_path = self.run_dir / "train_log.jsonl"
        safe_plot(training_curves, read_records(log_path) if log_path.is_file() else [],
                  self.run_dir / "curves.png", budget_minutes=self.cfg.optim.max_minutes)

    def choose_decoding(self) -> dict[str, Any] | None:
        """RUN/decoding.yaml chosen on dev (``decoding.choose_run_decoding``), or None with the reason printed."""
        if not self.cfg.tune.enabled:
            logger.info("no decoding chosen (--no-tune); predict decodes with the defaults")
            return None
        if not dev_file(self.cfg.data):
            logger.info("no decoding chosen (no dev split); predict decodes with the defaults")
            return None
        with self.clock.paused():
            record = choose_run_decoding(self.cfg, self.run_dir)
        self.tracker.log({f"tune/{k}": 100 * v for k, v in record["dev"]["chosen"].items()}, self.position.step)
        logger.info(f"{describe(record)}; written to {self.run_dir / record['file']}, which predict, serve, "
                    "evaluate --score-with and export use (flags override it, --no-run-decoding ignores it)")
        return record


def train(cfg: TrainConfig) -> Path:
    """Fine-tune, evaluate and write the run directory; returns its path.

    A stop signal (Ctrl-C, SIGTERM) checkpoints the last completed step and re-raises ``TrainingInterrupted``.
    """
    trainer = Trainer(cfg)
    try:
        stopped_by = trainer.run()
    except TrainingInterrupted:
        trainer.finish("interrupted")
        raise
    trainer.finish(stopped_by)
    return trainer.run_dir
