"""Non-finite losses and gradients: skip the step, count it, stop after too many in a row."""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    pass


class NonFiniteGuard:
    """Skips steps whose loss or gradient is not finite and stops after `max_consecutive` such steps in a row.

    Args:
        max_consecutive (`int`, defaults to 5): raise `NonFiniteLossError` after this many non-finite losses or
            gradient norms in a row (a single bad batch is skipped with a warning).
    """

    def __init__(self, max_consecutive: int = 5):
        self.max_consecutive = max_consecutive
        self.consecutive = 0
        self.skipped = 0
        self.skipped_gradients = 0

    def check(self, finite: bool, step: int, terms: dict | None = None, what: str = "loss") -> bool:
        """Returns True when the step may proceed; `what` ("loss" or "gradient") names the check.

        A finite loss only lets the step go on to its gradient check; the run of bad steps ends when an update is
        actually taken (a finite gradient), so finite losses with non-finite gradients still stop the run."""
        if finite:
            if what == "gradient":
                self.consecutive = 0
            return True
        self.consecutive += 1
        self.skipped += 1
        self.skipped_gradients += what == "gradient"
        terms = {k: float(v.detach().float().mean()) for k, v in (terms or {}).items()}
        logger.warning("Non-finite %s at step %d %s: skipping this batch.", what, step, terms)
        if self.consecutive >= self.max_consecutive:
            raise NonFiniteLossError(
                f"The {what} was not finite for {self.consecutive} batches in a row (last at step {step}; terms: "
                f"{terms}). Lower --learning_rate or the spectral weights (--spectral_weight), or use "
                "--mixed_precision no; the last checkpoint is intact and can be resumed."
            )
        return False


def clip_and_step(
    accelerator, model, optimizer, lr_scheduler, guard: NonFiniteGuard, step: int, max_norm: float = 1.0
):
    """Clip the gradient to `max_norm` and take the optimiser and LR-scheduler step, unless its norm is not finite.

    The total norm comes from `accelerator.clip_grad_norm_`, computed after the gradient all-reduce, so every process
    makes the same decision. A non-finite norm (a NaN / inf gradient with a finite loss, for example from an
    unbounded phase gradient) skips the update: weights, optimiser moments and the LR schedule stay exactly as they
    were, the skip is counted and logged by `guard`, and `guard` stops the run after too many in a row. Under fp16
    mixed precision (an `accelerator.scaler`) the step goes to the loss scaler, which skips a step whose gradient
    overflowed or is NaN and lowers its scale (and Accelerate then holds the LR schedule); that skip is counted by
    `guard` in the same way, so NaN gradients stop an fp16 run too. Between gradient-accumulation boundaries this
    only forwards to the (no-op) optimiser step. With DeepSpeed, which returns no norm, the gradient check does not
    apply.

    Returns:
        `bool`: whether the update was taken (True between accumulation boundaries); False for a skipped step, on
        which an EMA must not step either.
    """
    scaler = getattr(accelerator, "scaler", None) if accelerator.sync_gradients else None
    if accelerator.sync_gradients:
        norm = accelerator.clip_grad_norm_(model.parameters(), max_norm)
        finite = norm is None or bool(torch.isfinite(torch.as_tensor(norm)).all())
        # with a loss scaler the step must reach it even when not finite: its update lowers the scale
        if scaler is None and not guard.check(finite, step, {"grad_norm": norm}, "gradient"):
            return False
    optimizer.step()
    lr_scheduler.step()
    if scaler is not None:  # a step the scaler skipped counts as a non-finite gradient
        terms = {"grad_norm": torch.as_tensor(norm), "loss_scale": torch.tensor(scaler.get_scale())}
        if not guard.check(not getattr(optimizer, "step_was_skipped", False), step, terms, "gradient"):
            return False
    return True
