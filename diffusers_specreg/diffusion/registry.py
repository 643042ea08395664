"""The diffusion objectives by name: `--formulation` picks one of them."""

from __future__ import annotations

from .base import NoiseFn
from .ddpm import DDPMObjective
from .edm import EDMObjective


def build_objective(
    formulation: str,
    scheduler,
    noise_fn: NoiseFn | None = None,
    edm_p_mean: float = -1.2,
    edm_p_std: float = 1.2,
):
    """The objective for `formulation` in {"ddpm", "edm"} ("ddim" trains exactly like "ddpm").

    Args:
        formulation (`str`): "ddpm", "ddim" or "edm".
        scheduler (`SchedulerMixin`): the objective's scheduler (`DDPMScheduler` or `EDMEulerScheduler`).
        noise_fn (`callable`, *optional*): `(shape, generator, device) -> noise`; white noise by default.
        edm_p_mean (`float`, defaults to -1.2): mean of ln σ (EDM only).
        edm_p_std (`float`, defaults to 1.2): standard deviation of ln σ (EDM only).

    Returns:
        `DDPMObjective` or `EDMObjective`.
    """
    if formulation in ("ddpm", "ddim"):
        return DDPMObjective(scheduler, noise_fn)
    if formulation == "edm":
        return EDMObjective(scheduler, edm_p_mean, edm_p_std, noise_fn)
    raise ValueError(f"formulation must be 'ddpm', 'ddim' or 'edm', got {formulation!r}.")
