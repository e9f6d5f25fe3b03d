"""One training loop for every stage, single process or DDP through torchrun.

In: an :class:`~xasr.config.ExperimentConfig` (stage, trainable parts, data, optimiser).
Out: ``<exp_dir>/`` with ``checkpoints/ckpt-<step>/`` (trainable weights as safetensors plus
the optimiser, scheduler, sampler position and RNG states for exact resume, stored without
pickle by :mod:`xasr.utils.state_io`), ``model/`` (the
final model directory, an average of the last checkpoints), ``train.log``, ``metrics.tsv``,
``loss.png``, tensorboard scalars and ``config.yaml`` (the resolved config).

A rerun with the same exp_dir resumes from the newest checkpoint and gives the same parameters
as an uninterrupted run. SIGTERM (what batch schedulers send before they kill a job) saves a
checkpoint after the current update and stops with :class:`~xasr.errors.TrainingTerminated`.
An update whose loss or gradient is not finite is skipped and counted; ``train.max_bad_steps``
of them in a row stop the run with an error naming the last batch's cuts. Under torchrun every
rank draws the same global batches and keeps its share (a rank left without a cut runs a
stand-in counted for nothing); losses are normalised by the global token count, so N processes
compute what one process computes.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Dict, List, Optional

import torch
import torch.distributed as dist
from omegaconf import OmegaConf

from xasr.data.dataset import AsrDataset, Batch, make_loader
from xasr.errors import TrainingTerminated, XasrError
from xasr.models.model import XLLMSpeechModel
from xasr.model_dir import save_model_dir
from xasr.utils.distributed import dist_info, pick_device, setup_distributed
from xasr.utils.logging import setup_logging
from xasr.utils.plots import plot_loss_curve
from xasr.utils.rng import rng_state, seed_all, set_rng_state
from xasr.utils.state_io import STRUCTURE as STATE_STRUCTURE, load_state, save_state
from xasr.utils.usage import peak_memory

logger = logging.getLogger(__name__)

BUDGET_CALIBRATION_STEPS = 20  # steps timed before fitting the schedule to train.max_minutes
VALID_JSON = "valid.json"  # a checkpoint saved right after validation: its validation loss
BUDGET_SAFETY = 0.9  # share of the budget planned for steps (validation and saving take the rest)
SLOWDOWN_WARN = 2.0  # a tenth of a budgeted run this many times slower a step than the fastest tenth: warn


def slowdown_message(recent: float, fastest: float) -> Optional[str]:
    """A warning when the last stretch of a time-budgeted run took ``SLOWDOWN_WARN`` times longer a
    step than its fastest stretch (seconds per step), else None. On a machine whose cores another
    process shares, a budgeted stage quietly takes a fraction of its steps and trains a worse model;
    the warning says so while the run goes on, with the load average that shows it."""
    if not math.isfinite(fastest) or recent < SLOWDOWN_WARN * fastest:
        return None
    load = ""
    if hasattr(os, "getloadavg"):
        load = f"; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    return (f"steps take {recent:.3f} s, {recent / fastest:.1f}x the {fastest:.3f} s of this run's fastest "
            f"stretch{load}: if another process shares these CPUs, this time-budgeted run will take "
            "fewer steps and train a worse model")


def _lr_lambda(cfg, total_steps):
    """Linear warm-up, then cosine decay over ``total_steps()`` (a callable: the trainer may
    shorten the schedule to fit a time budget)."""
    def f(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / max(1, cfg.warmup_steps)
        if cfg.scheduler == "constant":
            return 1.0
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, total_steps() - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    return f


def _check_image_config(cfg) -> None:
    """Stage 3 needs the image path in the model and pictures in the data, and pictures need a
    model that reads them."""
    img, data_images = cfg.model.image.enabled, cfg.data.images
    if cfg.train.stage == 3 and not (img and data_images):
        raise XasrError("stage 3 trains the image path: set model.image.enabled=true and data.images=true "
                        f"(now {img} and {data_images})")
    if data_images and not img:
        raise XasrError("data.images=true loads pictures, but the model has no image path (model.image.enabled)")


def trainable_state(model: torch.nn.Module) -> Dict[str, torch.Tensor]:
    return {n: p.detach().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}


class Trainer:
    def __init__(self, cfg) -> None:
        self.cfg = cfg
        tc = cfg.train
        self.exp_dir = Path(tc.exp_dir)
        if tc.dtype not in ("float32", "bfloat16"):
            raise XasrError(f"train.dtype must be float32 or bfloat16 (autocast), not {tc.dtype!r}")
        if tc.select_by not in ("last", "valid"):
            raise XasrError(f"train.select_by must be last or valid, not {tc.select_by!r}")
        self.device = pick_device(tc.device)
        setup_distributed(self.device)
        self.world_size, self.rank = dist_info()
        if self.rank == 0:
            self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.world_size > 1:
            dist.barrier()
        setup_logging(str(self.exp_dir / "train.log") if self.rank == 0 else None)
        if tc.num_threads > 0:
            torch.set_num_threads(tc.num_threads)
        seed_all(tc.seed)

        import sentencepiece as spm

        self.units = spm.SentencePieceProcessor(model_file=cfg.data.units)
        cfg.model.vocab_size = self.units.get_piece_size()
        _check_image_config(cfg)
        self.model = XLLMSpeechModel(OmegaConf.to_object(cfg.model), models_dir=cfg.models_dir)
        self.model.set_units(self.units)
        if tc.init_from:
            self._init_from(tc.init_from)
        self.model.set_trainable(list(tc.trainable))
        self.model.to(self.device)
        params = [p for p in self.model.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"nothing to train: train.trainable={list(tc.trainable)}")
        n_total = sum(p.numel() for p in self.model.parameters())
        n_train = sum(p.numel() for p in params)
        logger.info("stage %d: %.2fM parameters, %.2fM trainable (%s), %.2fM frozen; device %s, world size %d",
                    tc.stage, n_total / 1e6, n_train / 1e6, ", ".join(tc.trainable), (n_total - n_train) / 1e6,
                    self.device, self.world_size)
        self.param_counts = {"total": n_total, "trainable": n_train}
        self.ddp = None
        if self.world_size > 1:
            self.ddp = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None)
        oc = cfg.optim
        groups = [{"params": params}]
        if oc.encoder_lr_scale != 1.0:  # the encoder's parameters in a group of their own
            named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
            groups = [{"params": [p for n, p in named if n.startswith("encoder.") == enc],
                       "lr": oc.lr * (oc.encoder_lr_scale if enc else 1.0)} for enc in (False, True)]
            groups = [g for g in groups if g["params"]]
        self.optimizer = torch.optim.AdamW(groups, lr=oc.lr, weight_decay=oc.weight_decay, betas=tuple(oc.betas))

        from lhotse import CutSet

        from xasr.data.encoder_cache import experiment_manifests

        train_paths, valid_paths = experiment_manifests(cfg)
        cache = cfg.data.encoder_cache
        self.train_cuts = CutSet.from_files(train_paths) if len(train_paths) > 1 else CutSet.from_file(train_paths[0])
        self.valid_cuts = CutSet.from_file(valid_paths[0]) if valid_paths else None
        if cfg.data.image_shuffle_seed is not None:  # the mismatched-image control
            from xasr.data.images import shuffle_images

            self.train_cuts = shuffle_images(self.train_cuts, cfg.data.image_shuffle_seed)
            if self.valid_cuts is not None:
                self.valid_cuts = shuffle_images(self.valid_cuts, cfg.data.image_shuffle_seed)
        from xasr.models.image_encoder import image_loading

        self.dataset = AsrDataset(cfg.data.units, cfg.data.features, encoded=bool(cache),
                                  images=image_loading(cfg.data, cfg.model.image.encoder))
        self.loader, self.sampler = make_loader(self.train_cuts, self.dataset, cfg.data, train=True, seed=tc.seed,
                                                world_size=self.world_size, rank=self.rank)
        self.batches_per_epoch = sum(1 for _ in self.sampler.inner)
        accum = max(1, oc.accum_grad)
        epoch_steps = self.batches_per_epoch // accum
        self.total_steps = tc.max_steps if tc.max_steps > 0 else epoch_steps * tc.num_epochs
        self.planned_steps = self.total_steps
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_lambda(oc, lambda: self.total_steps))
        self.step = 0
        self.epoch = 0
        self.batch_in_epoch = 0
        self.metrics: List[dict] = []
        self.skipped_updates = 0  # updates skipped for a non-finite loss or gradient
        self.bad_in_row = 0
        self.writer = None
        if tc.tensorboard and self.rank == 0:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.exp_dir / "tensorboard"))
            except ImportError:
                logger.warning("tensorboard is not installed: no tensorboard scalars")
        if self.rank == 0:
            OmegaConf.save(cfg, self.exp_dir / "config.yaml")

    # ------------------------------------------------------------------ checkpoints
    def _init_from(self, model_dir: str) -> None:
        """Start from an earlier stage's model directory: its tensors that this model has (with
        the same shapes) are loaded; this model's other trained parts (e.g. the image path when
        stage 3 starts from a stage-2 model) keep their initialisation. The frozen parts both
        models use must be the same."""
        from xasr.model_dir import init_from_dir

        loaded, fresh = init_from_dir(self.model, model_dir)
        logger.info("initialised %d tensors from %s%s", len(loaded), model_dir,
                    f"; not in it (initialised afresh): {', '.join(fresh)}" if fresh else "")

    def _ckpt_dir(self) -> Path:
        return self.exp_dir / "checkpoints"

    def checkpoints(self) -> List[Path]:
        d = self._ckpt_dir()
        if not d.is_dir():
            return []
        return sorted((p for p in d.glob("ckpt-*") if not p.name.endswith(".partial")),
                      key=lambda p: int(p.name.split("-")[1]))

    def save_checkpoint(self, valid_loss: Optional[float] = None) -> None:
        if self.rank == 0:
            from safetensors.torch import save_file

            final = self._ckpt_dir() / f"ckpt-{self.step}"
            tmp = final.with_name(final.name + ".partial")
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
            save_file({k: v.contiguous() for k, v in trainable_state(self.model).items()},
                      str(tmp / "trainable.safetensors"))
            save_state(tmp, {"optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
                             "step": self.step, "total_steps": self.total_steps,
                             "planned_steps": self.planned_steps, "epoch": self.epoch,
                             "batch_in_epoch": self.batch_in_epoch,
                             "rng": rng_state(), "metrics": self.metrics,
                             "skipped_updates": self.skipped_updates})
            if valid_loss is not None:
                (tmp / VALID_JSON).write_text(json.dumps({"step": self.step, "valid_loss": valid_loss}))
            if final.exists():
                shutil.rmtree(final)
            tmp.rename(final)
            keep = set(self._final_checkpoints()) if self.cfg.train.select_by == "valid" else set()
            for old in self.checkpoints()[:-max(self.cfg.train.keep_last, self.cfg.train.average_last)]:
                if old not in keep:
                    shutil.rmtree(old)
            logger.info("saved %s", final)
        if self.world_size > 1:
            dist.barrier()

    def maybe_resume(self) -> bool:
        """Resume from the newest checkpoint that reads back whole; a damaged newer one (a write
        cut short, a full disk) is skipped with a warning naming it. One holding a pickled
        ``state.pt`` (older xasr) is refused: unpickling a file can run code."""
        ckpts = self.checkpoints()
        for last in reversed(ckpts):
            if (last / "state.pt").is_file() and not (last / STATE_STRUCTURE).is_file():
                raise XasrError(f"{last} keeps its training state as a pickle (state.pt), which xasr does not "
                                "load because unpickling can run arbitrary code; remove that checkpoint (or "
                                f"{self._ckpt_dir()}) to start afresh")
            try:
                weights, state = self._read_checkpoint(last)
            except XasrError as e:
                logger.warning("checkpoint %s cannot be read (%s): trying the one before", last, e)
                continue
            self._resume_from(last, weights, state)
            return True
        if ckpts:
            logger.warning("no checkpoint in %s could be read: training starts afresh", self._ckpt_dir())
        return False

    @staticmethod
    def _read_checkpoint(ckpt: Path):
        from safetensors.torch import load_file

        path = ckpt / "trainable.safetensors"
        if not path.is_file():
            raise XasrError(f"{path} is missing")
        try:
            weights = load_file(str(path))
        except Exception as e:  # safetensors' own error types for damaged files
            raise XasrError(f"{path} is damaged ({e})") from e
        return weights, load_state(ckpt)

    def _resume_from(self, last: Path, weights: Dict[str, torch.Tensor], state: dict) -> None:
        params = dict(self.model.named_parameters())
        trainable = {k for k, p in params.items() if p.requires_grad}
        if set(weights) != trainable:
            extra, missing = sorted(set(weights) - trainable), sorted(trainable - set(weights))
            raise XasrError(
                f"{last} was saved by a run that trained other parameters (there, not here: {extra[:2]}; "
                f"here, not there: {missing[:2]}), so this run cannot resume from it. Remove "
                f"{self._ckpt_dir()} or choose another train.exp_dir")
        saved_groups = [len(g["params"]) for g in state["optimizer"]["param_groups"]]
        groups = [len(g["params"]) for g in self.optimizer.param_groups]
        if saved_groups != groups:
            raise XasrError(f"{last} was saved with other optimizer parameter groups ({saved_groups} parameters per "
                            f"group there, {groups} here: optim.encoder_lr_scale changed?), so this run cannot "
                            f"resume from it. Remove {self._ckpt_dir()} or choose another train.exp_dir")
        with torch.no_grad():
            for k, v in weights.items():
                params[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step, self.epoch, self.batch_in_epoch = state["step"], state["epoch"], state["batch_in_epoch"]
        self.metrics = state["metrics"]
        self.skipped_updates = state.get("skipped_updates", 0)
        if state.get("planned_steps", self.planned_steps) == self.planned_steps:
            self.total_steps = state.get("total_steps", self.total_steps)  # as fitted to the time budget
        else:  # train.max_steps / num_epochs changed since the checkpoint: the new plan holds
            logger.info("the schedule now spans %d steps (the checkpoint's run planned %d)", self.total_steps,
                        state["planned_steps"])
        set_rng_state(state["rng"])
        logger.info("resumed from %s (step %d, epoch %d, batch %d)", last, self.step, self.epoch,
                    self.batch_in_epoch)

    # ------------------------------------------------------------------ loop
    def _forward(self, batch: Batch) -> Dict[str, torch.Tensor]:
        net = self.ddp if self.ddp is not None else self.model
        use_bf16 = self.cfg.train.dtype == "bfloat16"
        with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=use_bf16):
            return net(batch.to(self.device), stage=self.cfg.train.stage)

    def _global_sum(self, x: float) -> float:
        if self.world_size == 1:
            return x
        t = torch.tensor([x], dtype=torch.float64, device=self.device if self.device.type == "cuda" else "cpu")
        dist.all_reduce(t)
        return float(t.item())

    def _clock(self) -> float:
        """Seconds since the epoch on rank 0's clock: under DDP every rank takes the time-budget
        decisions (schedule refits, the stop) from the same readings, or the ranks would part
        ways at different steps and wait for each other forever."""
        if self.world_size == 1:
            return time.time()
        t = torch.tensor([time.time()], dtype=torch.float64,
                         device=self.device if self.device.type == "cuda" else "cpu")
        dist.broadcast(t, src=0)
        return float(t.item())

    def train(self) -> Path:
        with _SigtermFlag() as term:
            return self._train(term)

    def _terminated(self, term: "_SigtermFlag") -> bool:
        """Whether SIGTERM reached any rank (all ranks must stop at the same step)."""
        return self._global_sum(1.0 if term.raised else 0.0) > 0

    def _stop_on_sigterm(self, term: "_SigtermFlag", saved: bool) -> None:
        if not self._terminated(term):
            return
        if not saved:
            self.save_checkpoint()
        self._write_metrics_rank0()
        raise TrainingTerminated(f"SIGTERM: training stopped at step {self.step} after saving "
                                 f"{self._ckpt_dir() / f'ckpt-{self.step}'}; run the same command again to resume")

    def _train(self, term: "_SigtermFlag") -> Path:
        tc = self.cfg.train
        self.maybe_resume()
        budgeted = tc.max_minutes > 0
        start, start_step = self._clock(), self.step
        accum = max(1, self.cfg.optim.accum_grad)
        window = {"loss": 0.0, "tokens": 0.0, "audio": 0.0, "t0": time.time()}
        done = self.step >= self.total_steps
        # (time, step) the step time is measured from, (time, step) of the last fit, fastest s/step
        fit: Optional[tuple] = None
        while not done and self.epoch < tc.num_epochs:
            self.model.train()
            self.sampler.set_epoch(self.epoch)
            self.sampler.skip_batches = self.batch_in_epoch
            pending: List[dict] = []
            for batch in self.loader:
                pending.append(batch)
                self.batch_in_epoch += 1
                if len(pending) < accum:
                    continue
                stats = self._update(pending)
                pending = []
                if stats is None:  # skipped: a non-finite loss or gradient
                    self._stop_on_sigterm(term, saved=False)
                    continue
                window["loss"] += stats["loss_sum"]
                window["tokens"] += stats["tokens"]
                window["audio"] += stats["audio"]
                if self.step % tc.log_interval == 0:
                    self._log_window(window, stats)
                now = self._clock() if budgeted else 0.0
                if budgeted:
                    fit = self._budget_fit(fit, now, start, start_step, tc.max_minutes * 60)
                saved = self.step % tc.save_interval == 0
                if saved:
                    self.save_checkpoint()
                self._stop_on_sigterm(term, saved)
                if self.step >= self.total_steps:
                    done = True
                elif budgeted and (now - start) / 60 > tc.max_minutes:
                    logger.info("time budget of %.1f min reached at step %d", tc.max_minutes, self.step)
                    done = True
                if done:
                    break
            if not done:
                self.epoch += 1
                self.batch_in_epoch = 0
            valid = self.validate()
            self.metrics.append({"step": self.step, "epoch": self.epoch, "valid_loss": valid})
            if self.rank == 0:
                logger.info("epoch %d step %d: validation loss %.4f per token", self.epoch, self.step, valid)
            if self.writer is not None:
                self.writer.add_scalar("valid/loss", valid, self.step)
            self.save_checkpoint(valid_loss=valid)
            self._stop_on_sigterm(term, saved=True)
        wall = time.time() - start
        logger.info("training done: %d steps in %.1f min%s; peak memory: %s", self.step, wall / 60,
                    f" ({self.skipped_updates} updates skipped: non-finite loss)" if self.skipped_updates else "",
                    peak_memory())
        return self.finish()

    def _budget_fit(self, fit: Optional[tuple], now: float, start: float, start_step: int,
                    budget: float) -> Optional[tuple]:
        """Fit the learning-rate schedule to the time budget: first after a few steps, then again
        each time a tenth of the budget has passed, with the step time measured since the first
        fit (start-up excluded; validation and checkpoints included), and at the schedule's last
        step if time is left. The schedule never grows beyond the one planned from num_epochs /
        max_steps. Each tenth's step time is also set against the fastest tenth's so far, with a
        warning when it is far slower (:func:`slowdown_message`). ``now`` and ``start`` are
        readings of :meth:`_clock`."""
        done = self.step - start_step
        if fit is None:
            if done < BUDGET_CALIBRATION_STEPS:
                return None
            self._fit_schedule_to_budget((now - start) / done, now - start, budget)
            return (now, self.step, now, self.step, math.inf)
        t0, s0, last, last_step, fastest = fit
        # refit each tenth of the budget, and whenever the schedule is about to end (the first fit
        # counts start-up and can end the schedule long before the budget does)
        if (now - last < budget / 10 and self.step < self.total_steps) or self.step == s0:
            return fit
        if self.step - last_step >= BUDGET_CALIBRATION_STEPS:
            recent = (now - last) / (self.step - last_step)
            slower = slowdown_message(recent, fastest)
            if slower:
                logger.warning("%s", slower)
            fastest = min(fastest, recent)
        self._fit_schedule_to_budget((now - t0) / (self.step - s0), now - start, budget)
        return (t0, s0, now, self.step, fastest)

    def _fit_schedule_to_budget(self, per_step: float, elapsed: float, budget: float) -> None:
        """Make the learning-rate schedule end when the time budget does."""
        reachable = self.step + int(max(0.0, budget * BUDGET_SAFETY - elapsed) / per_step)
        new = max(self.step + 1, min(reachable, self.planned_steps))
        if abs(new - self.total_steps) > 0.02 * self.total_steps:
            logger.info("%.3f s per step: the %.1f-min budget reaches about step %d (planned: %d); the "
                        "learning-rate schedule now ends there", per_step, budget / 60, new, self.planned_steps)
            self.total_steps = new

    def _update(self, batches: List[dict]) -> Optional[dict]:
        # The loss is summed over tokens and divided by the global token count of the update;
        # DDP averages gradients over ranks, hence the factor world_size.
        # A stand-in batch (a rank left without a cut of a small global batch) runs forward and
        # backward with weight 0.
        loss_sum = 0.0
        outs = [self._forward(batch) for batch in batches]
        weights = [0.0 if batch.stand_in else 1.0 for batch in batches]
        n_global = self._global_sum(sum(w * float(o["num_tokens"]) for w, o in zip(weights, outs)))
        self.optimizer.zero_grad(set_to_none=True)
        for i, (w, out) in enumerate(zip(weights, outs)):
            loss = out["loss"] * (w * self.world_size / max(1.0, n_global))
            sync = self.ddp is None or i == len(outs) - 1
            if self.ddp is not None and not sync:
                with self.ddp.no_sync():
                    loss.backward(retain_graph=False)
            else:
                loss.backward()
            loss_sum += w * float(out["loss"].detach())
        grad_norm = torch.nn.utils.clip_grad_norm_([p for p in self.model.parameters() if p.requires_grad],
                                                   self.cfg.optim.grad_clip)
        # a NaN / inf loss on any rank makes the (all-reduced) gradient norm non-finite on every rank
        if not math.isfinite(float(grad_norm)):
            self._skip_update(batches, loss_sum, float(grad_norm))
            return None
        self.bad_in_row = 0
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        audio = self._global_sum(sum(w * float(b.durations.sum()) for w, b in zip(weights, batches)))
        stats = {"loss_sum": self._global_sum(loss_sum), "tokens": n_global, "audio": audio,
                 "grad_norm": float(grad_norm)}
        counted = [o for w, o in zip(weights, outs) if w > 0]
        for k in ("ctc", "ce", "quantity", "llm", "llm_acc"):
            if counted and k in counted[0]:
                stats[k] = sum(float(o[k]) for o in counted) / len(counted)
        return stats

    def _skip_update(self, batches: List[dict], loss_sum: float, grad_norm: float) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        self.skipped_updates += 1
        self.bad_in_row += 1
        ids = [i for b in batches for i in b.ids]
        shown = ", ".join(ids[:8]) + (f" and {len(ids) - 8} more" if len(ids) > 8 else "")
        if self.rank == 0:
            logger.warning("update skipped after step %d: loss %s, gradient norm %s (%d skipped so far, %d in a "
                           "row); cuts: %s", self.step, loss_sum, grad_norm, self.skipped_updates, self.bad_in_row,
                           shown)
        limit = self.cfg.train.max_bad_steps
        if limit > 0 and self.bad_in_row >= limit:
            self._write_metrics_rank0()
            raise XasrError(f"{self.bad_in_row} updates in a row had a non-finite loss or gradient (train.max_bad_steps"
                            f"={limit}), the last at step {self.step} on the cuts {shown}: check those cuts' audio "
                            f"and transcripts, or lower optim.lr; the last good checkpoint is kept in "
                            f"{self._ckpt_dir()}")

    def _write_metrics_rank0(self) -> None:
        if self.rank == 0 and self.metrics:
            self._write_metrics()

    def _log_window(self, window: dict, stats: dict) -> None:
        elapsed = time.time() - window["t0"]
        loss = window["loss"] / max(1.0, window["tokens"])
        speed = window["audio"] / max(1e-9, elapsed)
        row = {"step": self.step, "epoch": self.epoch, "loss": loss, "lr": self.scheduler.get_last_lr()[0],
               "audio_s_per_s": speed, "grad_norm": stats["grad_norm"]}
        for k in ("ctc", "ce", "quantity", "llm", "llm_acc"):
            if k in stats:
                row[k] = stats[k]
        self.metrics.append(row)
        if self.rank == 0:
            extra = " ".join(f"{k}={row[k]:.3f}" for k in ("ctc", "ce", "quantity", "llm", "llm_acc") if k in row)
            logger.info("epoch %d step %d/%d: loss %.4f per token (%s), lr %.2e, %.1f s of audio per second",
                        self.epoch, self.step, self.total_steps, loss, extra, row["lr"], speed)
            if self.writer is not None:
                for k, v in row.items():
                    if k not in ("step", "epoch"):
                        self.writer.add_scalar(f"train/{k}", v, self.step)
        window.update(loss=0.0, tokens=0.0, audio=0.0, t0=time.time())

    @torch.no_grad()
    def validate(self) -> float:
        if self.valid_cuts is None:
            return float("nan")
        self.model.eval()
        loader, _ = make_loader(self.valid_cuts, self.dataset, self.cfg.data, train=False, seed=0,
                                world_size=self.world_size, rank=self.rank)
        total, tokens = 0.0, 0.0
        for i, batch in enumerate(loader):
            if self.cfg.train.valid_max_batches and i >= self.cfg.train.valid_max_batches:
                break
            if batch.stand_in:  # this rank's copy of a cut another rank scores
                continue
            out = self.model(batch.to(self.device), stage=self.cfg.train.stage)
            total += float(out["loss"])
            tokens += float(out["num_tokens"])
        self.model.train()
        return self._global_sum(total) / max(1.0, self._global_sum(tokens))

    # ------------------------------------------------------------------ end
    def finish(self) -> Path:
        from safetensors.torch import load_file

        out = self.exp_dir / "model"
        if self.rank == 0:
            ckpts = self._final_checkpoints()
            if self.cfg.train.select_by == "valid" and ckpts:
                logger.info("lowest validation loss: %s", ", ".join(
                    f"{c.name} ({_valid_loss(c):.4f})" for c in ckpts))
            # the weights in memory are the last checkpoint's; anything else is loaded (a mean of one is exact)
            if len(ckpts) > 1 or (ckpts and ckpts[0] != self.checkpoints()[-1]):
                avg = None
                for c in ckpts:
                    w = load_file(str(c / "trainable.safetensors"))
                    avg = {k: v.double() for k, v in w.items()} if avg is None else \
                        {k: avg[k] + v.double() for k, v in w.items()}
                params = dict(self.model.named_parameters())
                with torch.no_grad():
                    for k, v in avg.items():
                        params[k].copy_((v / len(ckpts)).to(params[k].dtype))
                logger.info("final model: %s%s", "average of " if len(ckpts) > 1 else "",
                            ", ".join(c.name for c in ckpts))
            save_model_dir(self.model, self.cfg, self.cfg.data.units, str(out))
            self._write_metrics()
            logger.info("model directory: %s", out)
        if self.world_size > 1:
            dist.barrier()
        return out

    def _final_checkpoints(self) -> List[Path]:
        """The checkpoints the final model averages: the last ``average_last``, or with
        ``select_by: valid`` the ``average_last`` of lowest validation loss whose loss is within
        ``average_within`` (a fraction) of the lowest (in step order)."""
        n = max(1, self.cfg.train.average_last)
        ckpts = self.checkpoints()
        if self.cfg.train.select_by == "valid":
            loss = {c: _valid_loss(c) for c in ckpts if (c / VALID_JSON).is_file()}  # each file read once
            if loss:
                best = sorted(loss, key=loss.get)[:n]
                limit = loss[best[0]] * (1.0 + self.cfg.train.average_within)
                return sorted((c for c in best if loss[c] <= limit), key=lambda p: int(p.name.split("-")[1]))
        return ckpts[-n:]

    def _write_metrics(self) -> None:
        rows = self.metrics
        keys = sorted({k for r in rows for k in r}, key=lambda k: (k not in ("step", "epoch"), k))
        with open(self.exp_dir / "metrics.tsv", "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=keys, delimiter="\t")
            w.writeheader()
            for r in rows:
                w.writerow(r)
        plot_loss_curve(rows, self.exp_dir / "loss.png", title=f"stage {self.cfg.train.stage}")


class _SigtermFlag:
    """Within ``with``: SIGTERM sets ``raised`` instead of killing the process (main thread only;
    elsewhere the default handling stays). The previous handler comes back on exit."""

    def __init__(self) -> None:
        self.raised = False
        self._previous = None

    def _handle(self, signum, frame) -> None:
        if not self.raised:
            logger.warning("SIGTERM received: saving a checkpoint after the current update")
        self.raised = True

    def __enter__(self) -> "_SigtermFlag":
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGTERM, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGTERM, self._previous)


def _valid_loss(ckpt: Path) -> float:
    return float(json.loads((ckpt / VALID_JSON).read_text())["valid_loss"])


def train(cfg) -> Path:
    """Train according to ``cfg`` (an ExperimentConfig OmegaConf object); returns the model dir."""
    return Trainer(cfg).train()
