"""The training loop: patches -> degradation -> model -> loss, with logging, checkpoints and resume.

A run lives in one folder::

    run_dir/config.yaml       the config the run was started with (a resume must match it)
    run_dir/log.jsonl         one JSON object per line: training records {step, epoch, loss (mean since
                              the last record), lr, seconds (time spent in training steps, summed over
                              resumes)} and evaluation records {step, eval_bench, eval_images, eval_psnr}
    run_dir/checkpoint.pt     model, optimiser, schedule, RNG states and step (written atomically)
    run_dir/best.safetensors  the weights with the best evaluation PSNR so far (when evaluating)
    run_dir/model.safetensors + model.yaml   the exported model at the end

Every random draw is a pure function of the seed and the step (patch crops and training noise come
from ``PatchDataset``'s per-item generators, the batch order from a per-epoch permutation), so a run
resumed from a checkpoint continues exactly as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader

from converge.atomic import write_atomic, write_text_atomic
from converge.data.patches import PatchDataset
from converge.data.registry import load_images
from converge.data.seeding import evaluation_generator, seed_everything, stable_seed
from converge.errors import ConfigError
from converge.eval.metrics import psnr
from converge.models import Restorer, build_model
from converge.train.config import TrainConfig, config_from_dict, config_to_dict, load_config
from converge.train.losses import get_loss

CHECKPOINT = "checkpoint.pt"
LOG = "log.jsonl"
CONFIG = "config.yaml"
BEST_WEIGHTS = "best.safetensors"
MODEL_WEIGHTS = "model.safetensors"


class Trainer:
    """Runs one training config in ``run_dir``; :meth:`run` trains to the last step and exports the model.

    ``train_images`` replaces the config's training set (a sequence of ``(C, H, W)`` tensors in [0, 1],
    for tests and small experiments); ``progress`` shows a rich progress bar.
    """

    def __init__(
        self,
        config: TrainConfig,
        run_dir: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        train_images: Sequence[Tensor] | None = None,
    ) -> None:
        self.config = config
        self.run_dir = Path(run_dir)
        self.progress = progress
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
        )
        self.steps_per_epoch = len(self.dataset) // config.data.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(
                f"data.batch_size {config.data.batch_size} exceeds the {len(self.dataset)} patches of one epoch: "
                "raise patches_per_image or lower batch_size"
            )
        self.total_steps = config.steps if config.steps is not None else config.epochs * self.steps_per_epoch
        self.loss_fn = get_loss(config.loss)
        self.optimizer = _make_optimizer(self.model, config)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(config, self.total_steps))
        self.step = 0
        self.seconds = 0.0
        self.best_psnr = -math.inf
        self._eval_set: list[tuple[str, Tensor]] | None = None
        if resume:
            if (self.run_dir / CHECKPOINT).exists():
                self._load_checkpoint()
            self._truncate_log()

    def run(self) -> Path:
        """Train until ``total_steps`` (continuing from the checkpoint, if resumed); return ``model.safetensors``."""
        batch_size = self.config.data.batch_size
        progress = _Progress(self.total_steps, self.step, enabled=self.progress)
        running_loss, running_count = 0.0, 0
        with progress:
            while self.step < self.total_steps:
                epoch, offset = divmod(self.step, self.steps_per_epoch)
                self.dataset.set_epoch(epoch)
                for y, x in DataLoader(self.dataset, batch_sampler=self._epoch_batches(epoch, offset, batch_size)):
                    started = time.perf_counter()
                    loss = self._train_step(y, x)
                    self.seconds += time.perf_counter() - started
                    self.step += 1
                    running_loss, running_count = running_loss + loss, running_count + 1
                    progress.update(self.step, loss)
                    if self.step % self.config.log_every == 0 or self.step == self.total_steps:
                        self._log(
                            step=self.step,
                            epoch=epoch,
                            loss=running_loss / running_count,
                            lr=self.scheduler.get_last_lr()[0],
                            seconds=round(self.seconds, 3),
                        )
                        running_loss, running_count = 0.0, 0
                    evaluation = self.config.eval
                    if evaluation is not None and (self.step % evaluation.every == 0 or self.step == self.total_steps):
                        self._evaluate()
                    if self.step % self.config.checkpoint_every == 0 or self.step == self.total_steps:
                        self.save_checkpoint()
                    if self.step >= self.total_steps:
                        break
        return self._export()

    def _train_step(self, y: Tensor, x: Tensor) -> float:
        self.model.train()
        x_hat = self.model(y, sigma=None)
        loss = self.loss_fn(x_hat, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.config.optim.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.optim.grad_clip)
        self.optimizer.step()
        self.scheduler.step()
        return float(loss.detach())

    def _epoch_batches(self, epoch: int, offset: int, batch_size: int) -> list[list[int]]:
        """The epoch's shuffled, full batches of item indices, from batch ``offset`` on."""
        generator = torch.Generator().manual_seed(stable_seed("batch-order", self.config.seed, epoch))
        order = torch.randperm(len(self.dataset), generator=generator)
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
        """Write model, optimiser, schedule, RNG states, step and best PSNR to ``checkpoint.pt`` atomically."""
        state = {
            "step": self.step,
            "seconds": self.seconds,
            "best_psnr": self.best_psnr,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": _rng_state(),
        }
        return write_atomic(self.run_dir / CHECKPOINT, lambda stream: torch.save(state, stream))

    def _load_checkpoint(self) -> None:
        path = self.run_dir / CHECKPOINT
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise ConfigError(f"cannot resume from {path} ({error}): start a new run directory") from None
        self.step, self.seconds, self.best_psnr = int(state["step"]), float(state["seconds"]), float(state["best_psnr"])
        _set_rng_state(state["rng"])

    def _truncate_log(self) -> None:
        """Drop log records written after the checkpoint (a crash between the two), so steps never repeat."""
        path = self.run_dir / LOG
        if not path.exists():
            return
        lines = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in lines if json.loads(line)["step"] <= self.step]
        write_text_atomic(path, "".join(line + "\n" for line in kept))

    def _log(self, **record: Any) -> None:
        with (self.run_dir / LOG).open("a", encoding="utf-8") as stream:
            stream.write(json.dumps(record) + "\n")

    def _prepare_run_dir(self, resume: bool) -> None:
        import yaml

        self.run_dir.mkdir(parents=True, exist_ok=True)
        config_path = self.run_dir / CONFIG
        started = (self.run_dir / CHECKPOINT).exists() or (self.run_dir / LOG).exists()
        if started and not resume:
            raise ConfigError(f"{self.run_dir} already holds a run: resume it or choose a new run directory")
        if resume and config_path.exists():
            saved = config_from_dict(yaml.safe_load(config_path.read_text()))
            if saved != self.config:
                raise ConfigError(
                    f"the config differs from the one {self.run_dir} was started with: resume with {config_path}"
                )
        write_text_atomic(config_path, yaml.safe_dump(config_to_dict(self.config), sort_keys=False))

    def _export(self) -> Path:
        """Write ``model.safetensors`` + ``model.yaml``: the final weights, or the best evaluated ones."""
        from converge.zoo import load_weights, save_weights

        target = self.run_dir / MODEL_WEIGHTS
        if self.config.export == "best" and (self.run_dir / BEST_WEIGHTS).exists():
            best = load_weights(self.run_dir / BEST_WEIGHTS)
            return save_weights(best, _weights_info(self.config, _trained_steps(self.run_dir / BEST_WEIGHTS)), target)
        return save_weights(self.model, _weights_info(self.config, self.step), target)


def train(config_path: str | Path, run_dir: str | Path, resume: bool = False, threads: int | None = None) -> Path:
    """Train the YAML config at ``config_path`` in ``run_dir`` (continuing it with ``resume``); return
    the exported ``model.safetensors``. ``threads`` sets torch's intra-op thread count."""
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"threads must be a positive integer, got {threads}")
        torch.set_num_threads(threads)
    trainer = Trainer(load_config(config_path), run_dir, resume=resume)
    return trainer.run()


def _training_degradation(config: TrainConfig) -> Callable[[Tensor, torch.Generator], Tensor]:
    """The per-patch degradation ``(x, generator) -> y`` of the config's task (or blind noise range)."""
    data = config.data
    if data.sigma_range is not None:
        low, high = data.sigma_range

        def add_blind_noise(x: Tensor, generator: torch.Generator) -> Tensor:
            level = low + (high - low) * float(torch.rand((), generator=generator))
            return x + level / 255.0 * torch.randn(x.shape, generator=generator)

        return add_blind_noise
    from converge.physics.tasks import make_task

    task = make_task(data.task, **data.task_params)

    def degrade(x: Tensor, generator: torch.Generator) -> Tensor:
        return task.degrade(x, generator)[0]

    return degrade


def _make_optimizer(model: Restorer, config: TrainConfig) -> torch.optim.Optimizer:
    optim = config.optim
    cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[optim.name]
    return cls(model.parameters(), lr=optim.lr, betas=optim.betas, weight_decay=optim.weight_decay)


def _lr_factor(config: TrainConfig, total_steps: int) -> Callable[[int], float]:
    """Multiplier of ``optim.lr`` after ``step`` optimiser steps: linear warm-up, then the schedule."""
    schedule, base = config.schedule, config.optim.lr
    warmup = schedule.warmup_steps

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if schedule.name == "constant":
            return 1.0
        if schedule.name == "step":
            return schedule.gamma ** sum(step >= milestone for milestone in schedule.milestones)
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        floor = schedule.min_lr / base
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _weights_info(config: TrainConfig, step: int) -> dict[str, Any]:
    return {"task": config.data.task, "task_params": dict(config.data.task_params), "trained_steps": step}


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
    }


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    kind, keys, *rest = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), *rest))
    random.setstate(_as_tuples(state["python"]))


def _as_tuples(value: Any) -> Any:
    return tuple(_as_tuples(item) for item in value) if isinstance(value, list | tuple) else value


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
