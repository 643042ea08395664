"""x̂₀ for every parametrisation this package trains or hooks into, in one function.

The spectral losses of arXiv 2603.02447 compare x₀ with the x̂₀ the network predicts. `predict_x0` is the one place
that knows each parametrisation:

- "epsilon" (VP, integer t and a VP scheduler): the output is ε̂, x̂₀ = (x_t − √(1 − ᾱ_t)·ε̂) / √ᾱ_t;
- "v_prediction" (VP): the output is v̂, x̂₀ = √ᾱ_t·x_t − √(1 − ᾱ_t)·v̂;
- "sample" (VP): the output is x̂₀;
- "edm" (σ and an EDM scheduler): the output is the raw F_θ, x̂₀ = c_skip(σ)·x + c_out(σ)·F_θ;
- "flow" (σ, or Diffusers' t = σ·1000): the output is the velocity v̂ ≈ ε − x₀, x̂₀ = x_t − σ·v̂;
- "flow_preconditioned" (no noise level needed): the output is the SD3 scripts' `model_pred` after
  `model_pred * (-sigmas) + noisy_model_input`, which is x̂₀.

VP and EDM delegate to `diffusers_specreg.diffusion.schedulers.predict_original_sample` (which matches the schedulers'
`step(...).pred_original_sample` and `precondition_outputs`), flow to `diffusers_specreg.flow_matching`.
"""

from __future__ import annotations

import torch

from . import flow_matching
from .diffusion.ddpm import VP_PREDICTION_TYPES
from .diffusion.schedulers import is_edm_scheduler, is_vp_scheduler, predict_original_sample
from .tensors import compute_dtype

PARAMETRISATIONS = VP_PREDICTION_TYPES + ("edm", "flow", "flow_preconditioned")
FLOW_PARAMETRISATIONS = ("flow", "flow_preconditioned")


def _flow_sigmas(scheduler, timesteps, sigmas) -> torch.Tensor:
    if sigmas is not None and timesteps is not None:
        raise ValueError("Pass either sigmas or timesteps (t = σ·num_train_timesteps) for a flow model, not both.")
    if sigmas is not None:
        return sigmas
    if timesteps is None:
        raise ValueError("A flow parametrisation needs sigmas (σ ∈ [0, 1]) or timesteps (t = σ·num_train_timesteps).")
    num_train_timesteps = int(getattr(getattr(scheduler, "config", None), "num_train_timesteps", 1000))
    return flow_matching.sigmas_from_timesteps(timesteps, num_train_timesteps)


def predict_x0(
    parametrisation: str,
    model_output: torch.Tensor,
    noisy_sample: torch.Tensor,
    *,
    scheduler=None,
    timesteps: torch.Tensor | int | float | None = None,
    sigmas: torch.Tensor | float | None = None,
) -> torch.Tensor:
    """Predicted clean sample x̂₀ for a batch, one noise level per sample, for any parametrisation.

    Args:
        parametrisation (`str`):
            One of `PARAMETRISATIONS` (see the module docstring). "epsilon", "v_prediction" and "sample" must equal the
            VP scheduler's `config.prediction_type`; "edm" reads the sign of c_out from the EDM scheduler's
            `prediction_type` ("epsilon" or "v_prediction").
        model_output (`torch.Tensor` of shape `[B, C, ...]`):
            The network output (for "flow_preconditioned", the already preconditioned output, which is x̂₀).
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`):
            x_t (VP, flow) or x = x₀ + σ·ε (EDM, before `precondition_inputs`).
        scheduler (`SchedulerMixin`, *optional*):
            Required for VP (`DDPMScheduler`, `DDIMScheduler`, ...) and EDM (`EDMEulerScheduler`, ...); for flow only
            its `config.num_train_timesteps` is read, to turn `timesteps` into σ (1000 without a scheduler).
        timesteps (`torch.Tensor` of shape `[B]`, or a scalar, *optional*):
            Integer t (VP), σ (EDM, as its schedulers index them), or flow timesteps t = σ·num_train_timesteps.
        sigmas (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar, *optional*):
            σ for EDM and flow (instead of `timesteps`); not accepted for VP, which is indexed by t.

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀ in float32 (float64 if the inputs are float64).
    """
    if parametrisation not in PARAMETRISATIONS:
        raise ValueError(
            f"Unknown parametrisation {parametrisation!r}; expected one of {', '.join(PARAMETRISATIONS)}."
        )
    if parametrisation == "flow_preconditioned":
        # 1. the SD3 scripts' preconditioned output (arXiv 2403.03206 scripts: model_pred * (-σ) + x_t) is x̂₀
        if model_output.shape != noisy_sample.shape:
            raise ValueError(
                f"Expected model_output of the noisy sample's shape {list(noisy_sample.shape)}, got"
                f" {list(model_output.shape)}."
            )
        return model_output.to(compute_dtype(model_output, noisy_sample))
    if parametrisation == "flow":
        # 2. x̂₀ = x_t − σ·v̂ (arXiv 2209.03003)
        return flow_matching.pred_original_sample(
            model_output, noisy_sample, _flow_sigmas(scheduler, timesteps, sigmas)
        )
    if parametrisation == "edm":
        # 3. EDM denoiser D = c_skip·x + c_out·F (Table 1 of arXiv 2206.00364)
        if not is_edm_scheduler(scheduler):
            raise ValueError(
                f"parametrisation 'edm' needs an EDM scheduler (EDMEulerScheduler, EDMDPMSolverMultistepScheduler),"
                f" got {type(scheduler).__name__}."
            )
        if sigmas is not None and timesteps is not None:
            raise ValueError("Pass either sigmas or timesteps (which are σ for EDM schedulers), not both.")
        sigma = sigmas if sigmas is not None else timesteps
        if sigma is None:
            raise ValueError("parametrisation 'edm' needs sigmas.")
        sigma = flow_matching.per_sample_sigmas(sigma, noisy_sample.shape[0], noisy_sample.device)
        return predict_original_sample(scheduler, model_output, noisy_sample, sigma)
    # 4. VP: ε / v / x₀ (Eq. 15 of arXiv 2006.11239; arXiv 2202.00512)
    if not is_vp_scheduler(scheduler):
        raise ValueError(
            f"parametrisation {parametrisation!r} needs a variance-preserving scheduler (DDPMScheduler, DDIMScheduler,"
            f" ...), got {type(scheduler).__name__}."
        )
    if scheduler.config.prediction_type != parametrisation:
        raise ValueError(
            f"parametrisation {parametrisation!r} differs from the scheduler's prediction_type"
            f" {scheduler.config.prediction_type!r}."
        )
    if sigmas is not None or timesteps is None:
        raise ValueError(
            f"parametrisation {parametrisation!r} is indexed by integer timesteps: pass timesteps, not sigmas."
        )
    return predict_original_sample(scheduler, model_output, noisy_sample, timesteps)
