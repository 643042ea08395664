"""The training loop both scripts run: epochs, resume, skipped batches, the non-finite guard, checkpoints, signals.

A script builds its model, data and optimiser, then:

    parts, schedule = prepare(accelerator, model, optimizer, dataset, batch_size=..., ...)
    loop = TrainingLoop(parts, schedule, CheckpointPolicy(output_dir, every, total_limit, manifest), ...)
    loop.resume(resume_from_checkpoint, learning_rate, optimizer_settings)
    with loop:                                        # frees the models and ends the trackers, also on a signal
        code = loop.run(step, LoopHooks(...))          # step(batch) -> {"loss": [B], ...}
        if code is not None:
            return code                                # SIGINT / SIGTERM: the checkpoint is saved, the signal's code
        if accelerator.is_main_process and not loop.interrupt.raised:
            with loop.main_process_work(unet):         # a signal stops it within one forward call
                ...                                    # evaluation, card, Hub upload
        return loop.finish("Saved ...")

The data order is a function of (seed, epoch) (`EpochShuffleSampler`) and the noise has its own checkpointed generator
(`CheckpointedGenerator`), so a resumed run replays the uninterrupted one step for step.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from diffusers_specreg.train.checkpoint import (
    CheckpointedGenerator,
    apply_optimizer_settings,
    load_checkpoint,
    resolve_resume,
    save_checkpoint,
)
from diffusers_specreg.train.guard import NonFiniteGuard, clip_and_step
from diffusers_specreg.train.manifest import check_resume_settings
from diffusers_specreg.train.runtime import release_distributed_models, wait_for_main_process
from diffusers_specreg.train.sampling import EpochShuffleSampler, warmup_warning
from diffusers_specreg.train.signals import (
    InterruptFlag,
    TrainingInterrupted,
    ignore_interrupts_in_worker,
    interrupted_anywhere,
    stop_on_interrupt,
)


@dataclass(frozen=True)
class Schedule:
    """The run's length in optimiser updates.

    Args:
        updates_per_epoch (`int`): optimiser updates per pass over the data (all processes together).
        max_train_steps (`int`): updates of the whole run.
        num_epochs (`int`): epochs needed for `max_train_steps`.
        accumulation (`int`): batches per update (`--gradient_accumulation_steps`).
    """

    updates_per_epoch: int
    max_train_steps: int
    num_epochs: int
    accumulation: int

    def position(self, step: int) -> tuple[int, int]:
        """`(epoch, batches of that epoch already trained)` after `step` updates: where a resumed run continues."""
        return step // self.updates_per_epoch, (step % self.updates_per_epoch) * self.accumulation


def plan_schedule(
    num_examples: int,
    batch_size: int,
    num_processes: int,
    accumulation: int,
    max_train_steps: int | None,
    num_epochs: int | None,
) -> Schedule:
    """The run's `Schedule`: `max_train_steps` when given, else `num_epochs` passes over the data.

    Args:
        num_examples (`int`): training examples.
        batch_size (`int`): examples per batch and process.
        num_processes (`int`): processes of the run.
        accumulation (`int`): batches per optimiser update.
        max_train_steps (`int`, *optional*): the run's length in updates, when set.
        num_epochs (`int`, *optional*): the run's length in epochs, when `max_train_steps` is not set.
    """
    updates_per_epoch = math.ceil(math.ceil(num_examples / (batch_size * num_processes)) / accumulation)
    max_train_steps = max_train_steps or num_epochs * updates_per_epoch
    return Schedule(updates_per_epoch, max_train_steps, math.ceil(max_train_steps / updates_per_epoch), accumulation)


@dataclass
class LoopParts:
    """What the loop trains: the prepared (`accelerator.prepare`) model, optimiser, LR scheduler and data loader, the
    data order and the noise generator. `TrainingLoop.__exit__` drops the prepared objects (see
    `release_distributed_models`), so a script reaches them through this object, never through its own variables."""

    accelerator: object
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    lr_scheduler: object
    dataloader: torch.utils.data.DataLoader
    sampler: EpochShuffleSampler
    dataset: object
    rng: CheckpointedGenerator


def prepare(
    accelerator,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    dataset,
    *,
    batch_size: int,
    num_workers: int,
    seed: int | None,
    lr_scheduler: str,
    lr_warmup_steps: int,
    max_train_steps: int | None,
    num_epochs: int | None,
    logger,
) -> tuple[LoopParts, Schedule]:
    """The data loader in (seed, epoch) order, the schedule, the LR scheduler, `accelerator.prepare`, the noise RNG.

    Args:
        accelerator (`Accelerator`): the run's accelerator (its `gradient_accumulation_steps` is the accumulation).
        model (`torch.nn.Module`): the module whose forward the step calls (not prepared yet).
        optimizer (`torch.optim.Optimizer`): its optimiser.
        dataset (`torch.utils.data.Dataset`): the training data.
        batch_size (`int`): `--train_batch_size`.
        num_workers (`int`): `--dataloader_num_workers` (workers ignore SIGINT / SIGTERM: the main process acts).
        seed (`int`, *optional*): `--seed`: the data order (0 when unset) and the noise generator (random when unset).
        lr_scheduler (`str`): `--lr_scheduler`, a name of Diffusers' `get_scheduler`.
        lr_warmup_steps (`int`): `--lr_warmup_steps` (a warning when it is not shorter than the run).
        max_train_steps (`int`, *optional*): the run's length in updates.
        num_epochs (`int`, *optional*): its length in epochs when `max_train_steps` is not set.
        logger: where the warm-up warning goes (the script's logger).
    """
    accumulation = accelerator.gradient_accumulation_steps
    sampler = EpochShuffleSampler(len(dataset), seed or 0)
    dataloader = torch.utils.data.DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=num_workers,
        worker_init_fn=ignore_interrupts_in_worker if num_workers else None,
    )
    schedule = plan_schedule(
        len(dataset), batch_size, accelerator.num_processes, accumulation, max_train_steps, num_epochs
    )
    warning = warmup_warning(lr_warmup_steps, schedule.max_train_steps)
    if warning:
        logger.warning(warning)
    # Schedule lengths in optimiser updates; Accelerate steps the LR scheduler once per process per update.
    scheduler = get_scheduler(
        lr_scheduler,
        optimizer=optimizer,
        num_warmup_steps=lr_warmup_steps * accelerator.num_processes,
        num_training_steps=schedule.max_train_steps * accelerator.num_processes,
    )
    model, optimizer, dataloader, scheduler = accelerator.prepare(model, optimizer, dataloader, scheduler)
    noise_seed = seed if seed is not None else int(torch.randint(0, 2**31 - 1, ()))
    rng = CheckpointedGenerator(accelerator.device, noise_seed * 1000 + accelerator.process_index)
    return LoopParts(accelerator, model, optimizer, scheduler, dataloader, sampler, dataset, rng), schedule


@dataclass
class CheckpointPolicy:
    """Where and how often the loop writes checkpoints, and what goes into them besides the prepared objects.

    Args:
        output_dir (`str`): the run's folder (`checkpoint-N/` inside it).
        every (`int`): `--checkpointing_steps`.
        total_limit (`int`, *optional*): `--checkpoints_total_limit`.
        manifest (`dict`): the run's settings (`train.manifest.settings_of`), saved and compared on resume.
        extra_state (`dict`, *optional*): `{name: object}` saved without pickle (an `EMAModel`, the regularizer).
    """

    output_dir: str
    every: int
    total_limit: int | None
    manifest: dict
    extra_state: dict | None = None


@dataclass
class LoopHooks:
    """What a script adds to the loop.

    Args:
        after_update (`callable`, *optional*): `(updated, step) -> dict` at each optimiser update, once `step` (the
            new global step) is counted: `updated` is False for a skipped (non-finite) update. It returns values
            to log besides the terms and the learning rate (e.g. the EMA's decay) and may log images itself.
        end_of_epoch (`callable`, *optional*): `(epoch, step, last)` after each epoch on every process (samples,
            pipeline); the other processes then wait for the main one, and a signal it caught stops the run.
    """

    after_update: Callable[[bool, int], dict] = lambda updated, step: {}
    end_of_epoch: Callable[[int, int, bool], None] | None = None


class TrainingLoop:
    r"""
    The epochs and steps of a run, resumable at any step, stopped cleanly by SIGINT / SIGTERM.

    Args:
        parts (`LoopParts`): from `prepare`.
        schedule (`Schedule`): from `prepare`.
        checkpoints (`CheckpointPolicy`): where checkpoints go and what they hold.
        max_nonfinite_steps (`int`): `--max_nonfinite_steps` (`NonFiniteGuard`).
        max_grad_norm (`float`, defaults to 1.0): the gradient clip.
        logger: the script's logger (the loop's lines keep the script's name).
        state (`dict`): the script's `{"training_started": bool}`, set once training begins (errors before it are
            bad input: one line, exit code 2).
    """

    def __init__(
        self,
        parts: LoopParts,
        schedule: Schedule,
        checkpoints: CheckpointPolicy,
        *,
        max_nonfinite_steps: int,
        max_grad_norm: float = 1.0,
        logger,
        state: dict,
    ):
        self.parts, self.schedule, self.checkpoints = parts, schedule, checkpoints
        self.accelerator = parts.accelerator
        self.max_grad_norm, self.logger, self.state = max_grad_norm, logger, state
        self.guard = NonFiniteGuard(max_nonfinite_steps)
        self.global_step = 0
        self.interrupt: InterruptFlag | None = None
        self.progress_bar = None
        self.saved_step: int | None = None  # the step of the checkpoint on disk (resumed or written by this run)

    def resume(
        self,
        resume_from_checkpoint: str | None,
        learning_rate: float,
        optimizer_settings: dict,
        incompatible: Sequence[str] = (),
    ) -> int:
        """Restore the latest (or named) checkpoint, if any, after comparing its settings with this run's.

        Args:
            resume_from_checkpoint (`str`, *optional*): a checkpoint path or "latest".
            learning_rate (`float`): this run's learning rate (it wins over the checkpoint's).
            optimizer_settings (`dict`): this run's other AdamW settings (betas, weight_decay, eps).
            incompatible (`Sequence[str]`, defaults to `()`): the script's own flags that cannot change.

        Returns:
            `int`: the global step to continue from (0 for a new run).
        """
        output_dir = self.checkpoints.output_dir
        checkpoint = resolve_resume(output_dir, resume_from_checkpoint)
        if checkpoint is None:
            if resume_from_checkpoint:
                self.logger.info(f"No checkpoint in {output_dir} to resume from; starting a new training run.")
            return 0
        check_resume_settings(checkpoint, self.checkpoints.manifest, incompatible)
        parts = self.parts
        resumed = load_checkpoint(self.accelerator, checkpoint, self.checkpoints.extra_state)
        apply_optimizer_settings(parts.optimizer, parts.lr_scheduler, learning_rate, **optimizer_settings)
        if resumed.rank_state is not None:
            parts.rng.load_state_dict(resumed.rank_state["noise_rng"])
        self.global_step = self.saved_step = resumed.global_step
        epoch, _ = self.schedule.position(self.global_step)
        self.logger.info(f"Resumed from {checkpoint} at step {self.global_step} (epoch {epoch}).")
        return self.global_step

    def begin(self) -> None:
        """Catch SIGINT / SIGTERM from now on and show the progress; training has started (`run` calls it)."""
        if self.interrupt is not None:
            return
        self.interrupt = InterruptFlag().install()
        self.progress_bar = tqdm(
            total=self.schedule.max_train_steps,
            initial=self.global_step,
            disable=not self.accelerator.is_local_main_process,
            desc="Steps",
        )
        self.state["training_started"] = True

    def run(self, step: Callable[[dict], dict[str, torch.Tensor]], hooks: LoopHooks) -> int | None:
        """Train to `max_train_steps`: `None` when done, or the signal's exit code once its checkpoint is saved.

        Args:
            step (`callable`): `batch -> {"loss": [B], name: [B], ...}`, called inside `accelerator.accumulate`; the
                mean of "loss" is minimised, every term's mean is logged.
            hooks (`LoopHooks`): the script's work after each update and each epoch.
        """
        self.begin()
        parts, schedule, accelerator = self.parts, self.schedule, self.accelerator
        first_epoch, skip = schedule.position(self.global_step)
        for epoch in range(first_epoch, schedule.num_epochs):
            if self.global_step >= schedule.max_train_steps:
                break
            parts.model.train()
            loader = parts.dataloader
            if epoch == first_epoch and skip:
                loader = accelerator.skip_first_batches(parts.dataloader, skip)
            # The data order is a function of (seed, epoch), so a resumed run replays the uninterrupted one. Accelerate
            # also calls `sampler.set_epoch(loader.iteration)` as iteration starts (single process): keep them equal.
            parts.sampler.set_epoch(epoch)
            getattr(parts.dataset, "set_epoch", lambda epoch: None)(epoch)  # augmentations: seeded per epoch/sample
            loader.iteration = epoch
            for batch in loader:
                updated, terms = self.train_step(step, batch)
                if not accelerator.sync_gradients:
                    continue
                self.global_step += 1
                self.log_update(terms, hooks.after_update(updated, self.global_step))
                if self.global_step % self.checkpoints.every == 0:
                    self.checkpoint_now()
                if interrupted_anywhere(accelerator, self.interrupt):
                    return self.stop_on_signal()
                if self.global_step >= schedule.max_train_steps:
                    break
            self.progress_bar.refresh()
            if hooks.end_of_epoch is not None:
                last = self.global_step >= schedule.max_train_steps or epoch == schedule.num_epochs - 1
                hooks.end_of_epoch(epoch, self.global_step, last)
                wait_for_main_process(accelerator)  # its samples, pipeline and Hub push: no collective timeout
                if interrupted_anywhere(accelerator, self.interrupt):  # during the samples or the pipeline save
                    return self.stop_on_signal()
        self.progress_bar.close()
        return None

    def train_step(self, step: Callable[[dict], dict[str, torch.Tensor]], batch: dict) -> tuple[bool, dict]:
        """One batch: the terms, the reduced finite check, backward, clip and step. `(updated, terms)`: a skipped
        batch (non-finite loss or gradient) changes no weight, and `updated` tells the EMA not to step either."""
        parts, accelerator = self.parts, self.accelerator
        updated = False
        with accelerator.accumulate(parts.model):
            terms = step(batch)
            loss = terms["loss"].mean()
            finite = accelerator.reduce(torch.isfinite(loss.detach()).float(), reduction="sum")
            if self.guard.check(bool(finite.item() == accelerator.num_processes), self.global_step, terms):
                accelerator.backward(loss)
                updated = clip_and_step(
                    accelerator,
                    parts.model,
                    parts.optimizer,
                    parts.lr_scheduler,
                    self.guard,
                    self.global_step,
                    self.max_grad_norm,
                )
            parts.optimizer.zero_grad()
        return updated, terms

    def log_update(self, terms: dict[str, torch.Tensor], extra: dict) -> None:
        """The progress bar and the tracker: each term's mean, the learning rate and the script's `extra` values."""
        # one device-to-host copy for all terms (a float() per term would sync the GPU once each)
        means = torch.stack([v.detach().float().mean() for v in terms.values()]).tolist()
        logs = dict(zip(terms, means))
        logs["lr"] = self.parts.lr_scheduler.get_last_lr()[0]
        logs.update(extra)
        self.progress_bar.update(1)
        self.progress_bar.set_postfix({k: f"{v:.4g}" for k, v in logs.items() if "/" not in k})
        self.accelerator.log(logs, step=self.global_step)

    def checkpoint_now(self) -> None:
        """Save `checkpoint-{global_step}` (every process), unless it is on disk already: a checkpointing step, or
        the checkpoint this run resumed from (a second save would replace it)."""
        if self.saved_step == self.global_step:
            return
        policy = self.checkpoints
        save_checkpoint(
            self.accelerator,
            policy.output_dir,
            self.global_step,
            {"global_step": self.global_step},
            policy.total_limit,
            rank_state={"noise_rng": self.parts.rng.state_dict()},
            extra_state=policy.extra_state,
            settings=policy.manifest,
        )
        self.saved_step = self.global_step

    def stop_on_signal(self) -> int:
        """Save the checkpoint of this step and return the signal's exit code (every process)."""
        self.checkpoint_now()
        self.logger.warning(
            f"Interrupted ({self.interrupt.signal_name or 'signal on another process'}): saved "
            f"checkpoint-{self.global_step}. Resume with --resume_from_checkpoint latest."
        )
        return self.interrupt.exit_code

    @contextlib.contextmanager
    def main_process_work(self, *modules: torch.nn.Module):
        """The main process's own work after training (evaluation, card, upload): a SIGINT / SIGTERM stops every
        forward call of `modules` (the sampling loop's UNet: one call per step) and the rest of the block is skipped;
        `finish` then saves the checkpoint of the last step, so resuming finishes the work."""
        try:
            with stop_on_interrupt(self.interrupt, *modules):
                yield
        except TrainingInterrupted:
            pass

    def finish(self, message: str) -> int:
        """After the main process's work (every process): 0 with `message` logged, or the signal's exit code once the
        checkpoint of the last step is saved."""
        wait_for_main_process(self.accelerator)  # however long the evaluation and upload take
        if interrupted_anywhere(self.accelerator, self.interrupt):
            return self.stop_on_signal()
        self.logger.info(message)
        return 0

    def __enter__(self) -> TrainingLoop:
        return self

    def __exit__(self, exc_type, exc, traceback) -> bool:
        """Uninstall the signal handler, close the progress bar; free the prepared models on every process when the
        run finished or stopped on a signal (all processes are here together), then end the trackers."""
        if self.interrupt is not None:
            self.interrupt.uninstall()
        if self.progress_bar is not None:
            self.progress_bar.close()
        if exc_type is None:
            parts = self.parts
            parts.model = parts.optimizer = parts.lr_scheduler = parts.dataloader = None
            release_distributed_models(self.accelerator)
        self.accelerator.end_training()  # also ends the process group: nothing collective after this
        return False
