"""The training loop: patches -> degradation -> model -> loss, with logging, checkpoints and resume.

A run lives in one folder::

    run_dir/config.yaml       the config the run was started with (a resume must match it, but for
                              EXECUTION_SETTINGS, whose changes the log records)
    run_dir/log.jsonl         one JSON object per line: training records {step, epoch, loss (mean since
                              the last record; a subclass may add other means), lr, seconds (time spent
                              in training steps, summed over resumes)}, evaluation records
                              {step, eval_bench, eval_images, eval_psnr} and, with backtracking,
                              {step, backtrack, window_loss, snapshot_loss, lr_scale} when it reloads
    run_dir/checkpoint.pt     model, optimiser, schedule, RNG states and step (written atomically)
    run_dir/best.safetensors  the weights with the best evaluation PSNR so far (when evaluating)
    run_dir/model.safetensors + model.yaml   the exported model at the end (or at ``until``)

Every random draw is a pure function of the seed and the step (patch crops and training noise come
from ``PatchDataset``'s per-item generators, the batch order from a per-epoch permutation), so a run
resumed from a checkpoint continues exactly as if it had never stopped.

Each patch carries the degradation level that made it (noise sigma, JPEG quality, NaN for other
tasks; the noise sigma for every patch of multi-task data) and the operator that degraded it; a
batch's operators form one
:class:`~converge.physics.batch.OperatorBatch` (:func:`~converge.data.patches.collate_patches`), and
the model is fitted through ``model.training_forward(y, operator, level)``. A fresh run first loads
``init_weights`` when the config names them, or else calls the model's
``initialise_from_data(images, generator)`` (a no-op for most models); a resumed run takes everything from its
checkpoint (with backtracking also the snapshot, the loss window and the learning-rate scale).

Under ``torchrun --nproc-per-node N`` (:mod:`converge.distributed`) N processes train one model
with DistributedDataParallel: each takes every N-th patch of the same global batch (``batch_size``,
which N must divide) and the gradients are averaged, so the run follows the single-process one
(exactly, up to float rounding, for models without BatchNorm; on CUDA BatchNorm is synchronised
across processes, on CPU each process normalises its own share). The first process logs, evaluates,
checkpoints and exports; the checkpoint keeps every process's random state, and a run resumes with
any number of processes (exactly with the same number).

A run longer than one sitting stops early with ``until`` (a step) or ``time_limit`` (minutes of wall
time): it checkpoints and exports the weights trained so far; a later ``resume`` of the same folder
(or of a copy of its ``checkpoint.pt``, ``config.yaml`` and ``log.jsonl``) goes on exactly as if it
had never stopped. (Restarting from the exported weights alone would not: Adam's first steps with
fresh moments move every weight by the full learning rate, and two of them took a DURR unit at step
750 from 27.3 to 22.4 dB.)
:class:`Trainer` (``trainer: supervised``) is also the base of DURR's policy trainer
(:mod:`converge.models.durr.training`, ``trainer: dqn``; :mod:`converge.train.registry` finds it),
which overrides the hooks ``_initialise_model``, ``_trainable_parameters``, ``_prepare_training``,
``_train_step``, ``_extra_state`` and ``_load_extra_state``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import io
import json
import math
import pickle
import random
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from converge import distributed
from converge.atomic import write_atomic, write_text_atomic
from converge.data.patches import Degrade, PatchDataset, collate_patches
from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator, seed_everything, stable_seed
from converge.devices import cpu_has_native_bf16, resolve_device
from converge.errors import ConfigError, TrainingError, WeightsError
from converge.eval.metrics import psnr
from converge.models import Restorer, build_model, model_class, registered_models, saved_params
from converge.physics.base import Identity, Operator
from converge.plain import plain_data
from converge.physics.batch import OperatorBatch, as_operator_batch
from converge.train.config import TrainConfig, config_from_dict, config_to_dict, load_config
from converge.train.losses import get_loss
from converge.train.registry import register_trainer, trainer_class

if TYPE_CHECKING:
    from converge.physics.tasks import Task

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.yaml"
BEST_WEIGHTS = "best.safetensors"
MODEL_WEIGHTS = "model.safetensors"
# Config entries that say how the steps run on this machine, not what is trained: a resumed run may
# change them (a machine without native bf16 goes on in fp32), and its log records the change.
EXECUTION_SETTINGS = ("precision", "channels_last")


def peak_memory_mib(device: torch.device) -> float:
    """The peak memory of this process so far in MiB: on a GPU, what torch allocated there; on the CPU,
    the peak resident set (``ru_maxrss``, which counts evaluations and data loading too)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@register_trainer("supervised")
class Trainer:
    """Runs one training config in ``run_dir``; :meth:`run` trains to the last step and exports the model.

    ``train_images`` replaces the config's training set (a sequence of ``(C, H, W)`` tensors in [0, 1],
    for tests and small experiments); ``progress`` shows a rich progress bar. ``until`` stops (and
    exports) after that step; ``time_limit`` (minutes of wall time from the start of :meth:`run`)
    stops and exports after the first step past it. ``device``: where the model trains (``cpu``,
    ``cuda``, ``cuda:1``, ...); patches are drawn on the CPU and moved.
    """

    kind: str
    """The config's ``trainer`` value this class runs (set by
    :func:`~converge.train.registry.register_trainer`)."""
    data_parallel = True
    """Whether several ``torchrun`` processes can share this trainer's batches."""
    exploded_loss_factor: float | None = 100.0
    """A loss over this many times the lowest so far counts as exploded (:meth:`_check_loss`);
    ``None`` for a trainer whose loss is no reconstruction error (only non-finite losses count)."""

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        train_images: Sequence[Tensor] | None = None,
        until: int | None = None,
        time_limit: float | None = None,
        device: str | torch.device = "cpu",
    ) -> None:
        if config.trainer != self.kind:
            raise ConfigError(
                f"this config asks for trainer {config.trainer!r}, not {self.kind!r}: run it with converge train"
            )
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
        self.workers = distributed.workers()
        self.device = _training_device(device, self.workers)
        if config.precision == "bf16" and self.device.type == "cpu" and not cpu_has_native_bf16():
            raise ConfigError(
                "this CPU has no native bfloat16 (no AVX512-BF16 or AMX): bf16 autocast would be emulated, "
                "tens of times slower; train with --set precision=fp32"
            )
        if time_limit is not None and not time_limit > 0:
            raise ConfigError(f"time_limit must be a positive number of minutes, got {time_limit}")
        if self.workers.parallel:
            if not self.data_parallel:
                raise ConfigError(f"the {self.kind} trainer runs in one process: start it without torchrun")
            if config.data.batch_size % self.workers.world_size:
                raise ConfigError(
                    f"data.batch_size {config.data.batch_size} does not split evenly among "
                    f"{self.workers.world_size} processes: make it a multiple of --nproc-per-node"
                )
            distributed.join(self.device)
        self.time_limit = time_limit
        self._prepare_run_dir(resume)
        seed_everything(config.seed)
        self.model = build_model(config.model.name, config.model.params)
        self.dataset = PatchDataset(
            train_images if train_images is not None else config.data.train_set,
            patch_size=config.data.patch_size,
            patches_per_image=config.data.patches_per_image,
            degrade=_training_degradation(config),
            augment=config.data.augment,
            seed=config.seed,
            channels=config.data.channels,
            per_crop=1 if config.data.multitask is None else config.data.multitask.per_crop,
            saturation=config.data.saturation_range,
            saturation_share=config.data.saturation_share,
        )
        self.steps_per_epoch = len(self.dataset) // config.data.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size {config.data.batch_size} exceeds the {len(self.dataset)} patches of one epoch: "
                "raise patches_per_image or lower batch_size"
            )
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        if until is not None and until < 1:
            raise ConfigError(f"until must be a positive step, got {until}")
        self.stop_step = self.total_steps if until is None else min(until, self.total_steps)
        self.loss_fn = get_loss(config.loss)
        resuming = resume and (self.run_dir / CHECKPOINT).exists()
        if not resuming:
            self._initialise_model()
        self.model.to(self.device, memory_format=self._memory_format)
        if self.workers.parallel and self.device.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
        self.optimizer = _make_optimizer(self._trainable_parameters(), config)
        schedule = _lr_factor(config, self.total_steps)
        # Backtracking lowers the learning rate for the rest of the run by this factor.
        self.lr_scale = 1.0
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda step: self.lr_scale * schedule(step))
        self._window_loss = 0.0
        self._window_steps = 0
        self._snapshot: dict[str, Any] | None = None
        self.step = 0
        self.seconds = 0.0
        self.best_psnr = -math.inf
        self.lowest_loss = math.inf
        self._bad_steps = 0
        self._eval_set: list[tuple[str, Tensor]] | None = None
        self._prepare_training()
        if self.workers.parallel:
            seed_everything(stable_seed("worker", config.seed, self.workers.rank))
        if resume:
            if resuming:
                self._load_checkpoint()
            self._truncate_log()
            if self._changed_settings:
                self._log(step=self.step, execution_changed=self._changed_settings)
        self._replica = None
        if self.workers.parallel:
            from torch.nn.parallel import DistributedDataParallel

            gpu = [self.device.index] if self.device.type == "cuda" else None
            skips = self.model.training_skips_parameters
            self._replica = DistributedDataParallel(
                _TrainingForward(self.model), device_ids=gpu, find_unused_parameters=skips
            )

    def run(self) -> Path:
        """Train until ``total_steps`` or ``until`` (continuing from the checkpoint, if resumed); return
        ``model.safetensors``."""
        batch_size = self.config.data.batch_size
        progress = _Progress(self.stop_step, self.step, enabled=self.progress and self.workers.is_main)
        sums: dict[str, float] = {}
        summed_steps = 0
        deadline = None if self.time_limit is None else time.monotonic() + 60.0 * self.time_limit
        with progress:
            while self.step < self.stop_step:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                self.dataset.set_epoch(epoch)
                batches = [self.workers.share(batch) for batch in self._epoch_batches(epoch, offset, batch_size)]
                loader = DataLoader(self.dataset, batch_sampler=batches, collate_fn=collate_patches)
                for y, x, operator, level in loader:
                    started = time.perf_counter()
                    layout = self._memory_format
                    y, x = y.to(self.device, memory_format=layout), x.to(self.device, memory_format=layout)
                    level = level.to(self.device)
                    metrics = self._train_step(y, x, operator.to(self.device), level)
                    self.seconds += time.perf_counter() - started
                    self.step += 1
                    sums = {key: sums.get(key, 0.0) + value for key, value in metrics.items()}
                    summed_steps += 1
                    progress.update(self.step, metrics["loss"])
                    if deadline is not None and distributed.any_of(time.monotonic() >= deadline):
                        self.stop_step = self.step
                    last = self.step == self.stop_step
                    if self.step % self.config.log_every == 0 or last:
                        self._log(
                            step=self.step,
                            epoch=epoch,
                            **{key: total / summed_steps for key, total in sums.items()},
                            lr=self.scheduler.get_last_lr()[0],
                            seconds=round(self.seconds, 3),
                            peak_memory_mib=round(peak_memory_mib(self.device), 1),
                        )
                        sums, summed_steps = {}, 0
                    self._check_loss(metrics["loss"])
                    if self.config.backtrack is not None:
                        self._watch_divergence(metrics["loss"])
                    evaluation = self.config.eval
                    if evaluation is not None and (self.step % evaluation.every == 0 or last) and self.workers.is_main:
                        self._evaluate()
                    if self.step % self.config.checkpoint_every == 0 or last:
                        self.save_checkpoint()
                    if last:
                        break
        exported = self._export() if self.workers.is_main else self.run_dir / MODEL_WEIGHTS
        distributed.wait_for_all()
        return exported

    def _train_step(self, y: Tensor, x: Tensor, operator: OperatorBatch, level: Tensor) -> dict[str, float]:
        """One optimiser step on a batch: ``y``, ``x`` ``(B, C, p, p)``, the batch's operators, ``level``
        ``(B,)``; returns the metrics to average into the log (``loss`` at least)."""
        self.model.train()
        with self.autocast():
            if self._replica is None:
                x_hat = self.model.training_forward(y, operator, level)
            else:
                x_hat = self._replica(y, operator, level)
        loss = self.loss_fn(x_hat.float(), x, y, self.model.training_loss_weights(x_hat))
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return {"loss": distributed.mean_of(float(loss.detach())), **self.model.training_metrics()}

    @property
    def _memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.config.channels_last else torch.contiguous_format

    def autocast(self) -> torch.autocast:
        """The context of the model's training forward: bfloat16 autocast with ``precision: bf16``."""
        return torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.config.precision == "bf16")

    def _check_loss(self, loss: float) -> None:
        """Stop the run (:class:`TrainingError`, nothing exported) after ``max_bad_steps`` consecutive
        losses that are not finite or exceed :attr:`exploded_loss_factor` times the lowest loss so far."""
        factor = self.exploded_loss_factor
        if math.isfinite(loss) and (factor is None or loss <= factor * self.lowest_loss):
            self.lowest_loss = min(self.lowest_loss, loss)
            self._bad_steps = 0
            return
        self._bad_steps += 1
        if self._bad_steps >= self.config.max_bad_steps:
            self._log(step=self.step, diverged=True, loss=loss, lowest_loss=self.lowest_loss)
            best = self.run_dir / BEST_WEIGHTS
            kept = f" (the best evaluated weights are in {best})" if best.exists() else ""
            raise TrainingError(
                f"training diverged: loss {loss:.4g} at step {self.step} after {self._bad_steps} bad steps "
                f"(lowest {self.lowest_loss:.4g}); lower optim.lr and start again{kept}"
            )

    def _watch_divergence(self, loss: float) -> None:
        """Backtracking (``config.backtrack``): add this step's ``loss`` to the window; at the end of
        a window, reload the snapshot and lower the learning rate if the window's mean loss jumped
        above ``factor`` times the snapshot's or is not finite, else take a new snapshot."""
        backtrack = self.config.backtrack
        self._window_loss += loss
        self._window_steps += 1
        if self.step % backtrack.every != 0:
            return
        mean = self._window_loss / self._window_steps
        self._window_loss, self._window_steps = 0.0, 0
        diverged = not math.isfinite(mean) or (
            self._snapshot is not None and mean > backtrack.factor * self._snapshot["loss"]
        )
        if diverged and self._snapshot is None:
            return
        if diverged:
            self.model.load_state_dict(self._snapshot["model"])
            self.optimizer.load_state_dict(copy.deepcopy(self._snapshot["optimizer"]))
            self.lr_scale *= backtrack.lr_factor
            rates = zip(self.optimizer.param_groups, self.scheduler.base_lrs, self.scheduler.lr_lambdas)
            for group, base, factor in rates:
                group["lr"] = base * factor(self.scheduler.last_epoch)
            self._log(
                step=self.step,
                backtrack="reloaded",
                window_loss=mean,
                snapshot_loss=self._snapshot["loss"],
                lr_scale=self.lr_scale,
            )
            return
        self._snapshot = {
            "loss": mean,
            "model": {name: value.detach().clone() for name, value in self.model.state_dict().items()},
            "optimizer": copy.deepcopy(self.optimizer.state_dict()),
        }

    def _backtrack_state(self) -> dict[str, Any]:
        """What a resumed run needs to backtrack as this one would: only when backtracking is on."""
        if self.config.backtrack is None:
            return {}
        return {
            "backtrack": {
                "lr_scale": self.lr_scale,
                "window_loss": self._window_loss,
                "window_steps": self._window_steps,
                "snapshot": self._snapshot,
            }
        }

    def _initialise_model(self) -> None:
        """Fresh start: load ``init_weights``, or else let the model initialise itself from the clean images."""
        if self.config.init_weights is not None:
            load_init_weights(self.model, self.config.init_weights)
            return
        generator = torch.Generator().manual_seed(stable_seed("initialise-from-data", self.config.seed))
        self.model.initialise_from_data(self.dataset.clean_images(), generator)

    def _trainable_parameters(self) -> Iterable[torch.nn.Parameter]:
        """The parameters the optimiser updates (all of the model's here)."""
        return self.model.parameters()

    def _prepare_training(self) -> None:
        """Hook for subclasses: build extra training state once the model and optimiser exist."""

    def _extra_state(self) -> dict[str, Any]:
        """Hook for subclasses: extra tensors and plain values to store in the checkpoint."""
        return {}

    def _load_extra_state(self, state: dict[str, Any]) -> None:
        """Hook for subclasses: restore what :meth:`_extra_state` stored."""

    def _epoch_batches(self, epoch: int, offset: int, batch_size: int) -> list[list[int]]:
        """The epoch's shuffled, full batches of item indices, from batch ``offset`` on.

        Items sharing one crop (``per_crop`` of the multi-task data) are shuffled as groups and stay
        together, so a batch holds whole groups (``batch_size`` is a multiple of ``per_crop``).
        """
        generator = torch.Generator().manual_seed(stable_seed("batch-order", self.config.seed, epoch))
        group = self.dataset.per_crop
        order = torch.randperm(len(self.dataset) // group, generator=generator)
        if group > 1:
            order = (order[:, None] * group + torch.arange(group)).reshape(-1)
        usable = order[: self.steps_per_epoch * batch_size].reshape(self.steps_per_epoch, batch_size)
        return usable[offset:].tolist()

    def evaluate(self) -> float:
        """Mean PSNR (dB) of the model on the eval set under its seeded evaluation degradation."""
        from converge.physics.tasks import make_task

        evaluation = self.config.eval
        if evaluation is None:
            raise ConfigError("this training config has no eval section: add one with a bench name")
        task = make_task(evaluation.task, **evaluation.task_params)
        if self._eval_set is None:
            images = list(load_images(evaluation.bench, channels=self.config.data.channels))
            self._eval_set = images if evaluation.max_images is None else images[: evaluation.max_images]
        sigma = None if task.noise is None else float(task.noise.sigma)
        scores = []
        self.model.eval()
        for name, clean in self._eval_set:
            observed, operator = task.degrade(clean, evaluation_generator(evaluation.bench, name, task.tag))
            observed, operator, clean = observed.to(self.device), operator.to(self.device), clean.to(self.device)
            if evaluation.mode == "training":
                level = torch.full((observed.shape[0],), task_level(task), device=self.device)
                with torch.no_grad():
                    batch = as_operator_batch(operator, observed.shape[0])
                    restored = self.model.training_forward(observed, batch, level).clamp(0.0, 1.0)
            else:
                restored, _ = self.model.restore(observed, physics=operator, sigma=sigma)
            scores.append(float(psnr(restored, clean)[0]))
        return sum(scores) / len(scores)

    def _evaluate(self) -> None:
        value = self.evaluate()
        bench, images = self.config.eval.bench, len(self._eval_set)
        self._log(step=self.step, eval_bench=bench, eval_images=images, eval_psnr=round(value, 4))
        if value > self.best_psnr:
            self.best_psnr = value
            from converge.zoo import save_weights

            save_weights(self.model, _weights_info(self.config, self.step), self.run_dir / BEST_WEIGHTS)

    def save_checkpoint(self) -> Path:
        """Write model, optimiser, schedule, RNG states, step and best PSNR to ``checkpoint.pt`` atomically
        (the first process writes; every process takes part, to hand over its RNG state)."""
        rng_states = distributed.gathered(_rng_state())
        path = self.run_dir / CHECKPOINT
        if not self.workers.is_main:
            return path
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "best_psnr": self.best_psnr,
            "lowest_loss": self.lowest_loss,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_states[0],
            **({"worker_rng": rng_states} if self.workers.parallel else {}),
            **self._backtrack_state(),
            **self._extra_state(),
        }
        return write_checkpoint(path, state)

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        state = read_checkpoint(path)
        broken = [name for name, tensor in state.get("model", {}).items() if not torch.isfinite(tensor).all()]
        if broken:
            raise ConfigError(f"{path} holds NaN or infinite weights (in {broken[0]}): resume from an earlier copy")
        try:
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            if self.config.backtrack is not None:
                backtrack = state["backtrack"]
                self.lr_scale = float(backtrack["lr_scale"])
                self._window_loss, self._window_steps = float(backtrack["window_loss"]), int(backtrack["window_steps"])
                self._snapshot = backtrack["snapshot"]
            self.scheduler.load_state_dict(state["scheduler"])
            self._load_extra_state(state)
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise ConfigError(f"cannot resume from {path} ({error}): start a new run directory") from None
        self.step, self.seconds, self.best_psnr = int(state["step"]), float(state["seconds"]), float(state["best_psnr"])
        self.lowest_loss = float(state.get("lowest_loss", math.inf))
        rng_states = state.get("worker_rng", [state["rng"]])
        if len(rng_states) == self.workers.world_size:
            _set_rng_state(rng_states[self.workers.rank])
        else:
            seed_everything(stable_seed("worker", self.config.seed, self.workers.rank, self.step))

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint (a crash between the two), so steps never repeat."""
        path = self.run_dir / LOG
        if not (path.exists() and self.workers.is_main):
            return
        records = [(line, _parsed(line)) for line in path.read_text().splitlines() if line.strip()]
        # A line cut short by a crash (not JSON) is dropped with the records after the checkpoint.
        kept = [line for line, record in records if record is not None and record.get("step", 0) <= self.step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def _log(self, **record: Any) -> None:
        if not self.workers.is_main:
            return
        with (self.run_dir / LOG).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def _prepare_run_dir(self, resume: bool) -> None:
        import yaml

        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / CONFIG
        started = (self.run_dir / CHECKPOINT).exists() or (self.run_dir / LOG).exists()
        if started and not resume:
            raise ConfigError(f"{self.run_dir} already holds a run: resume it or choose a new run directory")
        if resume and not (self.run_dir / CHECKPOINT).exists():
            raise ConfigError(
                f"{self.run_dir} has no {CHECKPOINT} to resume from: start the run without --resume "
                "(or copy its checkpoint.pt, config.yaml and log.jsonl there)"
            )
        if resume and self.workers.is_main:
            # Temporaries of writes that a crash interrupted (the files they were to replace are intact).
            for stale in self.run_dir.glob(".*.tmp"):
                stale.unlink(missing_ok=True)
        self._changed_settings: dict[str, Any] = {}
        if resume and config_path.exists():
            saved = config_from_dict(yaml.safe_load(config_path.read_text()))
            # init_weights only seeds a fresh start, and its resolved path names the checkout that
            # started the run: a copy of the run resumed elsewhere may read it from another folder.
            # How the steps run (EXECUTION_SETTINGS) may change with the machine: the log records it.
            kept = {"init_weights": None, **{name: getattr(self.config, name) for name in EXECUTION_SETTINGS}}
            if dataclasses.replace(saved, **kept) != dataclasses.replace(self.config, init_weights=None):
                raise ConfigError(
                    f"the config differs from the one {self.run_dir} was started with: resume with {config_path}"
                )
            self._changed_settings = {
                name: getattr(self.config, name)
                for name in EXECUTION_SETTINGS
                if getattr(saved, name) != getattr(self.config, name)
            }
        distributed.wait_for_all()
        if self.workers.is_main:
            write_text_atomic(config_path, yaml.safe_dump(config_to_dict(self.config), sort_keys=False))

    def _export(self) -> Path:
        """Write ``model.safetensors`` + ``model.yaml``: the final weights, or the best evaluated ones."""
        from converge.zoo import load_weights, save_weights

        target = self.run_dir / MODEL_WEIGHTS
        if self.config.export == "best" and (self.run_dir / BEST_WEIGHTS).exists():
            best = load_weights(self.run_dir / BEST_WEIGHTS)
            return save_weights(best, _weights_info(self.config, _trained_steps(self.run_dir / BEST_WEIGHTS)), target)
        return save_weights(self.model, _weights_info(self.config, self.step), target)


def train(
    config_path: str | Path,
    run_dir: str | Path,
    resume: bool = False,
    threads: int | None = None,
    overrides: Sequence[str] = (),
    until: int | None = None,
    time_limit: float | None = None,
    device: str = "cpu",
) -> Path:
    """Train the YAML config at ``config_path`` (with ``dotted.key=value`` ``overrides``, see
    :func:`~converge.train.config.load_config`) in ``run_dir``, continuing it with ``resume``; return
    the exported ``model.safetensors``. ``threads`` sets torch's intra-op thread count; ``until`` and
    ``time_limit`` stop it early, ``device`` picks where it trains (:class:`Trainer`)."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    config = load_config(config_path, overrides)
    runner = trainer_class(config.trainer)
    try:
        trainer = runner(config, run_dir, resume=resume, until=until, time_limit=time_limit, device=device)
        return trainer.run()
    finally:
        distributed.leave()


def write_checkpoint(path: Path, state: dict[str, Any]) -> Path:
    """Save ``state`` to ``path`` atomically with the SHA-256 of its bytes, which :func:`read_checkpoint`
    verifies: ``{"sha256": hex, "payload": uint8 tensor of torch.save(state)}``."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    payload = buffer.getvalue()
    wrapped = {
        "sha256": hashlib.sha256(payload).hexdigest(),
        "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8),
    }
    return write_atomic(path, lambda stream: torch.save(wrapped, stream))


def read_checkpoint(path: Path) -> dict[str, Any]:
    """The state :func:`write_checkpoint` saved at ``path``, once its digest is verified (a checkpoint
    saved before digests were kept is read as it is). Never unpickles arbitrary objects; a file that
    is missing, truncated, altered or not a checkpoint raises :class:`ConfigError`."""
    try:
        wrapped = torch.load(path, map_location="cpu", weights_only=True)
        if not (isinstance(wrapped, dict) and "payload" in wrapped):
            if isinstance(wrapped, dict) and "step" in wrapped:
                return wrapped
            raise _DamagedCheckpoint("not a converge checkpoint")
        payload = wrapped["payload"].numpy().tobytes()
        if hashlib.sha256(payload).hexdigest() != wrapped["sha256"]:
            raise _DamagedCheckpoint("its bytes do not match the SHA-256 saved with them: the file is corrupt")
        return torch.load(io.BytesIO(payload), map_location="cpu", weights_only=True)
    except _DamagedCheckpoint as error:
        reason = str(error)
    except FileNotFoundError:
        reason = "no such file"
    except (OSError, RuntimeError, KeyError, ValueError, TypeError, EOFError, pickle.UnpicklingError):
        reason = "unreadable: truncated, damaged or not written by converge train"
    raise ConfigError(f"cannot resume from {path} ({reason}): resume from an earlier copy or start a new run directory")


class _DamagedCheckpoint(ValueError):
    """A checkpoint file that loads but is not what :func:`write_checkpoint` wrote."""


def _parsed(line: str) -> dict[str, Any] | None:
    """A log line as its record, or ``None`` for a line that is not a JSON object."""
    try:
        record = json.loads(line)
    except ValueError:
        return None
    return record if isinstance(record, dict) else None


def _training_device(device: str | torch.device, workers: distributed.Workers) -> torch.device:
    """``device`` as a :class:`torch.device` this machine has (under ``torchrun``, ``cuda`` is the
    GPU of the process's local rank); otherwise :class:`ConfigError`."""
    chosen = resolve_device(device)
    if chosen.type == "cuda" and workers.parallel:
        if chosen.index is not None:
            raise ConfigError(f"device {device!r}: under torchrun each process takes its own GPU, pass --device cuda")
        return torch.device("cuda", workers.local_rank)
    return chosen


def load_init_weights(model: Restorer, path: str | Path) -> None:
    """Load the safetensors file at ``path`` into ``model`` in place (strictly: every tensor, no extra).

    The file's header (model name and parameters, as :func:`converge.zoo.save_weights` writes it) must
    describe ``model`` exactly, or else weights that ``model.adopt_weights`` can start from, given the
    saved model's registry name and parameters (GroupSC: itself at other noise levels; MTDEQ: a
    ``unet`` file of its prior's parameters). A missing or unreadable file or a mismatch raises
    :class:`ConfigError`.
    """
    from converge.zoo import load_tensors, read_safetensors

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"init_weights {path} does not exist: train that model first or fix the path")
    try:
        load_tensors(model, path, "this config", "give the model the same parameters or start from other weights")
        return
    except WeightsError as error:
        mismatch = ConfigError(f"init_weights: {error}")
    try:
        metadata, tensors = read_safetensors(path)
    except WeightsError:
        raise mismatch from None
    saved_model = metadata.get("model")
    if saved_model not in registered_models():
        raise mismatch
    try:
        params = json.loads(metadata.get("params") or "")
    except ValueError:
        raise mismatch from None
    if not isinstance(params, dict):
        raise mismatch
    try:
        model.adopt_weights(tensors, saved_params(model_class(saved_model), params), saved_model)
    except ConfigError as error:
        raise ConfigError(f"{mismatch}; {error}") from None


def task_level(task: Task) -> float:
    """The degradation level of ``task`` that training records per patch: noise sigma (8-bit levels)
    for ``denoise``, quality for ``deblock``, NaN for the other tasks."""
    parameter = {"denoise": "sigma", "deblock": "quality"}.get(task.name)
    return math.nan if parameter is None else float(task.params[parameter])


def _training_degradation(config: TrainConfig) -> Degrade:
    """The per-patch degradation ``(x, generator) -> (y, operator, level)`` of the config's task, of
    its blind noise or quality range (one level drawn per patch), or of its multi-task section (one
    problem and noise level drawn per patch; the level is the noise sigma)."""
    from converge.physics.tasks import make_task

    data = config.data
    if data.multitask is not None:
        from converge.data.multitask import MultiTaskDegradation

        section = data.multitask
        return MultiTaskDegradation(
            sr_factors=section.sr_factors,
            blur_sigmas=section.blur_sigmas,
            drop_probabilities=section.drop_probabilities,
            noise_sigmas=section.noise_sigmas,
            blur_size=section.blur_size,
        )
    if data.sigma_range is not None:
        low, high = data.sigma_range
        logarithmic = data.sigma_sampling == "log_uniform"
        identity = Identity()

        def add_blind_noise(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Identity, float]:
            fraction = float(torch.rand((), generator=generator))
            level = low * (high / low) ** fraction if logarithmic else low + (high - low) * fraction
            return x + level / 255.0 * torch.randn(x.shape, generator=generator), identity, level

        return add_blind_noise
    if data.quality_range is not None:
        low, high = data.quality_range
        tasks = {quality: make_task(data.task, quality=quality, **data.task_params) for quality in range(low, high + 1)}

        def compress_blind(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Operator, float]:
            quality = int(torch.randint(low, high + 1, (), generator=generator))
            return *tasks[quality].degrade(x, generator), float(quality)

        return compress_blind
    task = make_task(data.task, **data.task_params)
    level = task_level(task)

    def degrade(x: Tensor, generator: torch.Generator) -> tuple[Tensor, Operator, float]:
        return *task.degrade(x, generator), level

    return degrade


def _make_optimizer(parameters: Iterable[torch.nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    if optim.name == "rmsprop":
        return torch.optim.RMSprop(parameters, lr=optim.lr, eps=optim.eps, weight_decay=optim.weight_decay)
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.name]
    return cls(parameters, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay)


def _lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` after ``step`` optimiser steps: linear warm-up, then the schedule."""
    schedule, base = config.schedule, config.optim.lr
    warmup = schedule.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.name == "constant":
            return 1.0
        if schedule.name == "step" and schedule.every is not None:
            return schedule.gamma ** (step // schedule.every)
        if schedule.name == "step":
            return schedule.gamma ** sum(step >= milestone for milestone in schedule.milestones)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        floor = schedule.min_lr / base
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _weights_info(config: TrainConfig, step: int) -> dict[str, Any]:
    data = config.data
    ranges = {"sigma_range": data.sigma_range, "quality_range": data.quality_range}
    # Weights trained on a mix of tasks name none (any task may be restored with them) and list the mix.
    multitask = {} if data.multitask is None else {"multitask": plain_data(dataclasses.asdict(data.multitask))}
    return {
        "task": data.task if data.multitask is None else None,
        "task_params": dict(data.task_params),
        **{name: list(value) for name, value in ranges.items() if value is not None},
        **multitask,
        "trained_steps": step,
        # What chose these weights: the evaluation set of export: best, else the run's last step.
        "chosen_on": config.eval.bench if config.export == "best" else "the last step",
        "precision": config.precision,
        "channels_last": config.channels_last,
    }


def _trained_steps(weights: Path) -> int:
    import yaml

    return int(yaml.safe_load(weights.with_suffix(".yaml").read_text())["trained_steps"])


def _rng_state() -> dict[str, Any]:
    """Every global random state, as tensors and plain values (loadable with ``weights_only=True``)."""
    numpy_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": [numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]],
        "python": random.getstate(),
        **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


class _TrainingForward(torch.nn.Module):
    """``model.training_forward`` as a module's ``forward``, which DistributedDataParallel wraps."""

    def __init__(self, model: Restorer) -> None:
        super().__init__()
        self.model = model

    def forward(self, y: Tensor, operator: OperatorBatch, level: Tensor) -> Tensor:
        return self.model.training_forward(y, operator, level)


class _Progress:
    """A rich progress bar over steps showing the last loss; a no-op when disabled."""

    def __init__(self, total: int, completed: int, enabled: bool) -> None:
        self.enabled = enabled
        if enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn("train"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
            )
            self._task = self._bar.add_task("train", total=total, completed=completed, loss="-")

    def __enter__(self) -> _Progress:
        if self.enabled:
            self._bar.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.enabled:
            self._bar.stop()

    def update(self, step: int, loss: float) -> None:
        if self.enabled:
            self._bar.update(self._task, completed=step, loss=f"{loss:.4g}")
