"""Rectified flow / flow matching in σ units, as Diffusers' `FlowMatchEulerDiscreteScheduler` and its scripts hold it.

Rectified flow (arXiv 2209.03003) in the form Stable Diffusion 3 trains it (arXiv 2403.03206, Sec. 2-3) and Diffusers'
flow-matching schedulers and training scripts (SD3, Flux, Sana, ...) use it:

- noising: x_t = (1 − σ)·x₀ + σ·ε with σ ∈ [0, 1] (σ = 1 is pure noise), ε ~ N(0, I);
- target: the velocity v = dx_t/dσ = ε − x₀, so the predicted clean sample is x̂₀ = x_t − σ·v̂;
- Diffusers' timesteps are t = σ·num_train_timesteps (1000), and the scheduler's `shift` remaps σ to
  shift·σ / (1 + (shift − 1)·σ) (SD3's resolution-dependent shift, arXiv 2403.03206 Sec. 5.3.2);
- the SD3 scripts' "preconditioned" output `model_pred * (-sigmas) + noisy_model_input` is x̂₀ itself (trained
  against `model_input` = x₀).

This module holds that maths, the scripts' timestep sampling (`density_for_timestep_sampling`, `sample_sigmas`) and
base-loss weighting (`loss_weighting`) under the scripts' names, the spectral-term weightings and gates in σ units
(`spectral_weight`, `sigma_gate`, `sigmoid_fade`), and the Flux sequence packing of latents (`pack_latents`,
`unpack_latents`).

The spectral weightings mean the same in every formulation because they are functions of the signal-to-noise ratio:
dividing x_t by (1 − σ) gives x₀ + σ/(1 − σ)·ε, a variance-exploding sample with noise level σ_VE = σ/(1 − σ), so
SNR = 1/σ_VE² = ((1 − σ)/σ)², and each weighting of `diffusers_specreg.weighting` ("alpha_bar" = SNR/(1 + SNR),
"sqrt_snr", "edm", ...) takes the value it has for a DDPM or EDM sample of the same SNR. Only "velocity" is
flow-specific (see `spectral_weight`).

Shapes: σ is one value per sample, `[B]` (a scalar, or the scripts' `[B, 1, 1, 1]`, is accepted too); it is
broadcast once to `[B, 1, ..., 1]` where it multiplies a sample.
"""

from __future__ import annotations

import math

import torch

from .diffusion.weighting import WEIGHTINGS
from .tensors import as_per_sample, compute_dtype, per_sample

# The choices of `--weighting_scheme` in Diffusers' SD3 / Flux training scripts. One flag drives both the timestep
# density and the base-loss weight: "logit_normal" and "mode" shape the density (loss weight 1), "sigma_sqrt" and
# "cosmap" weight the loss (uniform density), "none" is neither.
WEIGHTING_SCHEMES = ("sigma_sqrt", "logit_normal", "mode", "cosmap", "none")
# Accepted by `density_for_timestep_sampling` besides the scripts' names: the density those names fall back to.
DENSITY_SCHEMES = ("uniform",) + WEIGHTING_SCHEMES
# Spectral-term weightings: those of `diffusers_specreg.weighting`, in SNR terms, plus the flow-specific "velocity".
FLOW_WEIGHTINGS = WEIGHTINGS + ("velocity",)
# The range of the SD3 "mode" density's scale s for which f_mode(u) = 1 − u − s·(cos²(πu/2) − 1 + u) is monotone on
# [0, 1]: f'(u) = −1 − s + (sπ/2)·sin(πu) ≤ 0 for all u ⇔ −1 ≤ s ≤ 2/(π − 2) (arXiv 2403.03206, Sec. 3.1).
MODE_SCALE_RANGE = (-1.0, 2.0 / (math.pi - 2.0))
# Defaults of the Diffusers scripts' flags (train_dreambooth_sd3.py and siblings)
DEFAULT_LOGIT_MEAN = 0.0
DEFAULT_LOGIT_STD = 1.0
DEFAULT_MODE_SCALE = 1.29
# Defaults of the sigmoid fade, in flow σ units (the values of the wavelet-loss library that fades its term this way)
DEFAULT_FADE_CUTOFF = 0.7
DEFAULT_FADE_WIDTH = 0.4


def per_sample_sigmas(
    sigmas: torch.Tensor | float, batch_size: int | None = None, device: torch.device | str | None = None
) -> torch.Tensor:
    """One σ per sample, `[B]`, float32 at least.

    Args:
        sigmas (`torch.Tensor` or `float`):
            A scalar, a `[B]` tensor, or the `[B, 1, ..., 1]` tensor that the Diffusers scripts' `get_sigmas` returns.
        batch_size (`int`, *optional*):
            B; a scalar is expanded to it and a tensor must match it.
        device (`torch.device` or `str`, *optional*):
            Device of the result; that of `sigmas` (CPU for a float) if `None`.

    Returns:
        `torch.Tensor` of shape `[B]` (`[1]` for a scalar without `batch_size`).
    """
    sigmas = torch.as_tensor(sigmas, device=device)
    return as_per_sample(sigmas, batch_size, dtype=compute_dtype(sigmas), name="sigmas")


def sigmas_from_timesteps(timesteps: torch.Tensor | float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """σ = t / num_train_timesteps: Diffusers' flow-matching timesteps (`FlowMatchEulerDiscreteScheduler.timesteps`,
    what the SD3 scripts pass to the transformer) are σ·num_train_timesteps.

    Args:
        timesteps (`torch.Tensor` or `float`): t, any shape.
        num_train_timesteps (`int`, defaults to 1000): the scheduler's `config.num_train_timesteps`.

    Returns:
        `torch.Tensor`, same shape as `timesteps`, float32 at least.
    """
    timesteps = torch.as_tensor(timesteps)
    return timesteps.to(compute_dtype(timesteps)) / num_train_timesteps


def timesteps_from_sigmas(sigmas: torch.Tensor | float, num_train_timesteps: int = 1000) -> torch.Tensor:
    """t = σ·num_train_timesteps, the timestep a Diffusers flow-matching model receives (same shape as `sigmas`)."""
    sigmas = torch.as_tensor(sigmas)
    return sigmas.to(compute_dtype(sigmas)) * num_train_timesteps


def shift_sigmas(sigmas: torch.Tensor | float, shift: float) -> torch.Tensor:
    """The scheduler's static shift σ' = shift·σ / (1 + (shift − 1)·σ) (arXiv 2403.03206, Sec. 5.3.2).

    `shift` > 1 moves every σ towards noise (SD3 trains with 3.0); σ = 0 and σ = 1 stay fixed. The same expression,
    in the same order, as `FlowMatchEulerDiscreteScheduler` with `use_dynamic_shifting=False`, so float32 results are
    bit-identical to its `sigmas`.

    Args:
        sigmas (`torch.Tensor` or `float`): σ ∈ [0, 1], any shape.
        shift (`float`): the shift, > 0 (1.0: no shift).

    Returns:
        `torch.Tensor`, same shape as `sigmas`, float32 at least.
    """
    if not (math.isfinite(shift) and shift > 0):
        raise ValueError(f"Expected shift > 0 and finite, got {shift}.")
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def add_noise(clean: torch.Tensor, noise: torch.Tensor, sigmas: torch.Tensor | float) -> torch.Tensor:
    """x_t = (1 − σ)·x₀ + σ·ε, the rectified-flow interpolation (arXiv 2209.03003; arXiv 2403.03206 Sec. 3).

    Args:
        clean (`torch.Tensor` of shape `[B, C, ...]`): x₀.
        noise (`torch.Tensor` of shape `[B, C, ...]`): ε.
        sigmas (`torch.Tensor` of shape `[B]`, or a scalar): σ per sample.

    Returns:
        `torch.Tensor` of the shape and dtype of `clean` (as the scripts' `noisy_model_input`).
    """
    sigma = per_sample(per_sample_sigmas(sigmas, clean.shape[0], clean.device), clean).to(clean.dtype)
    return sigma * noise + (1.0 - sigma) * clean


def velocity(clean: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """The flow-matching target v = dx_t/dσ = ε − x₀ (the scripts' `target = noise - model_input`)."""
    return noise - clean


def pred_original_sample(
    model_output: torch.Tensor, noisy_sample: torch.Tensor, sigmas: torch.Tensor | float
) -> torch.Tensor:
    """x̂₀ = x_t − σ·v̂ from a velocity prediction: the Euler step from σ to 0 (`FlowMatchEulerDiscreteScheduler` with
    σ_next = 0) and the SD3 scripts' preconditioning `model_pred * (-sigmas) + noisy_model_input`.

    No division by 1 − σ: x_t − σ·(ε − x₀) = x₀ exactly, so a perfect velocity gives x̂₀ = x₀ at every σ.

    Args:
        model_output (`torch.Tensor` of shape `[B, C, ...]`): the network's velocity v̂.
        noisy_sample (`torch.Tensor` of shape `[B, C, ...]`): x_t.
        sigmas (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar): σ per sample.

    Returns:
        `torch.Tensor` of shape `[B, C, ...]`: x̂₀ in float32 (float64 if an input is float64).
    """
    if model_output.shape != noisy_sample.shape:
        raise ValueError(
            f"Expected model_output of the noisy sample's shape {list(noisy_sample.shape)}, got"
            f" {list(model_output.shape)}."
        )
    dtype = compute_dtype(model_output, noisy_sample, torch.as_tensor(sigmas))
    sigma = per_sample(per_sample_sigmas(sigmas, noisy_sample.shape[0], noisy_sample.device), noisy_sample)
    # 1. x̂₀ = x_t − σ·v̂ with v = ε − x₀ (the linear path of arXiv 2209.03003)
    return noisy_sample.to(dtype) - sigma.to(dtype) * model_output.to(dtype)


def _check_scheme(weighting_scheme: str, allowed: tuple[str, ...]) -> None:
    if weighting_scheme not in allowed:
        raise ValueError(f"Unknown weighting_scheme {weighting_scheme!r}; expected one of {', '.join(allowed)}.")


def density_for_timestep_sampling(
    weighting_scheme: str,
    batch_size: int,
    logit_mean: float = DEFAULT_LOGIT_MEAN,
    logit_std: float = DEFAULT_LOGIT_STD,
    mode_scale: float = DEFAULT_MODE_SCALE,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw u ∈ [0, 1] per sample as Diffusers' `compute_density_for_timestep_sampling` (arXiv 2403.03206 Sec. 3.1).

    Same names, defaults of the scripts' flags and the same random draws (one `torch.normal` or `torch.rand` call of
    size `[B]`), so a generator in the same state gives the same u as Diffusers. Differences: an unknown scheme is an
    error (Diffusers falls back to uniform), and `mode_scale` outside the range where f_mode is monotone is refused
    (there f_mode leaves [0, 1] and the scripts' index `(u * 1000).long()` wraps around).

    - "logit_normal": u = sigmoid(n), n ~ N(logit_mean, logit_std²) (SD3's rf/lognorm(m, s));
    - "mode": u = f_mode(r) = 1 − r − s·(cos²(πr/2) − 1 + r), r ~ U[0, 1) (SD3's rf/mode(s)); s = 0 is uniform and
      s > 0 puts more mass at the middle, density 1/(1 − s(π/2 − 1)) at 1/2 against 1/(1 + s) at the ends;
    - "uniform", and the scripts' loss-weighting names "sigma_sqrt", "cosmap", "none": u ~ U[0, 1).

    Diffusers' scripts then take σ = sigmas[(u·N).long()] from a scheduler whose sigmas DEcrease, so σ ≈ 1 − u
    (`sample_sigmas` does this): a positive `logit_mean` puts more samples at LOW noise there.

    Args:
        weighting_scheme (`str`): one of `DENSITY_SCHEMES`.
        batch_size (`int`): B.
        logit_mean (`float`, defaults to 0.0): mean of the normal of "logit_normal".
        logit_std (`float`, defaults to 1.0): standard deviation of the normal of "logit_normal", >= 0.
        mode_scale (`float`, defaults to 1.29): the scale s of "mode", in `MODE_SCALE_RANGE`.
        device (`torch.device` or `str`, defaults to "cpu"): where to draw (the scripts draw on the CPU).
        generator (`torch.Generator`, *optional*): the random generator.

    Returns:
        `torch.Tensor` of shape `[B]`, float32, in [0, 1].
    """
    _check_scheme(weighting_scheme, DENSITY_SCHEMES)
    if weighting_scheme == "logit_normal":
        if not (math.isfinite(logit_mean) and math.isfinite(logit_std) and logit_std >= 0):
            raise ValueError(f"Expected a finite logit_mean and logit_std >= 0, got {logit_mean} and {logit_std}.")
        # 1. logit-normal: u = sigmoid(n), n ~ N(m, s²) (arXiv 2403.03206 Sec. 3.1)
        normal = torch.normal(
            mean=float(logit_mean), std=float(logit_std), size=(batch_size,), device=device, generator=generator
        )
        return torch.sigmoid(normal)
    uniform = torch.rand(size=(batch_size,), device=device, generator=generator)
    if weighting_scheme == "mode":
        low, high = MODE_SCALE_RANGE
        if not low <= mode_scale <= high:
            raise ValueError(
                f"Expected mode_scale in [{low}, {high:.4f}] (-1 <= s <= 2/(pi - 2), where f_mode is monotone on"
                f" [0, 1]), got {mode_scale}."
            )
        # 2. mode sampling with heavy tails, f_mode(u; s) = 1 − u − s·(cos²(πu/2) − 1 + u) (arXiv 2403.03206 Sec. 3.1)
        return 1 - uniform - mode_scale * (torch.cos(math.pi * uniform / 2) ** 2 - 1 + uniform)
    return uniform


def sample_sigmas(
    weighting_scheme: str,
    batch_size: int,
    logit_mean: float = DEFAULT_LOGIT_MEAN,
    logit_std: float = DEFAULT_LOGIT_STD,
    mode_scale: float = DEFAULT_MODE_SCALE,
    shift: float = 1.0,
    num_train_timesteps: int = 1000,
    device: torch.device | str = "cpu",
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """σ per sample exactly as Diffusers' SD3 / Flux scripts draw it: u from `density_for_timestep_sampling`, then
    `noise_scheduler.sigmas[(u * num_train_timesteps).long()]` of a fresh `FlowMatchEulerDiscreteScheduler(
    num_train_timesteps, shift)`.

    That scheduler's training sigmas are shift((N − i)/N) for i = 0..N−1, so σ = shift(1 − ⌊u·N⌋/N) ∈ [shift(1/N), 1]:
    never 0, and the σ⁻² of "sigma_sqrt" stays finite. Computed here from that formula (bit-identical to the
    scheduler's float32 table, without one). The model's timesteps are
    `timesteps_from_sigmas(sigmas, num_train_timesteps)`.

    Args:
        weighting_scheme (`str`): one of `DENSITY_SCHEMES` (see `density_for_timestep_sampling`).
        batch_size (`int`): B.
        logit_mean (`float`, defaults to 0.0), logit_std (`float`, defaults to 1.0), mode_scale (`float`, defaults to
            1.29): see `density_for_timestep_sampling`.
        shift (`float`, defaults to 1.0): the scheduler's `shift` (SD3: 3.0).
        num_train_timesteps (`int`, defaults to 1000): N, the scheduler's `config.num_train_timesteps`.
        device (`torch.device` or `str`, defaults to "cpu"): device of the draw and of the result.
        generator (`torch.Generator`, *optional*): the random generator.

    Returns:
        `torch.Tensor` of shape `[B]`, float32.
    """
    if not (isinstance(num_train_timesteps, int) and num_train_timesteps >= 1):
        raise ValueError(f"Expected num_train_timesteps as an int >= 1, got {num_train_timesteps!r}.")
    u = density_for_timestep_sampling(
        weighting_scheme, batch_size, logit_mean, logit_std, mode_scale, device=device, generator=generator
    )
    # 1. the scripts' index into the descending training table; u = 1 exactly (sigmoid saturating) is clamped
    index = (u * num_train_timesteps).long().clamp(0, num_train_timesteps - 1)
    # 2. the table itself: linspace(1, N, N)[::-1] / N, then the static shift
    sigmas = (num_train_timesteps - index).to(torch.float32) / num_train_timesteps
    return shift_sigmas(sigmas, shift)


def loss_weighting(weighting_scheme: str, sigmas: torch.Tensor | float) -> torch.Tensor:
    """Base-loss weight per sample as Diffusers' `compute_loss_weighting_for_sd3` (arXiv 2403.03206 Sec. 3.1).

    - "sigma_sqrt": σ⁻²;
    - "cosmap": 2 / (π·(1 − 2σ + 2σ²)), the cosine-map density of SD3;
    - "none", and the density-only names "logit_normal", "mode", "uniform": 1.

    An unknown name is an error (Diffusers returns ones).

    Args:
        weighting_scheme (`str`): one of `DENSITY_SCHEMES`.
        sigmas (`torch.Tensor`, any shape, or a scalar): σ; the scripts pass `[B, 1, ..., 1]` so the weight
            broadcasts over the squared error.

    Returns:
        `torch.Tensor` of the shape of `sigmas`, float32 at least.
    """
    _check_scheme(weighting_scheme, DENSITY_SCHEMES)
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    if weighting_scheme == "sigma_sqrt":
        return sigmas**-2.0
    if weighting_scheme == "cosmap":
        return 2 / (math.pi * (1 - 2 * sigmas + 2 * sigmas**2))
    return torch.ones_like(sigmas)


def flow_snr(sigmas: torch.Tensor | float) -> torch.Tensor:
    """SNR of a flow sample, ((1 − σ)/σ)²: x_t/(1 − σ) = x₀ + σ/(1 − σ)·ε (same shape as `sigmas`; ∞ at σ = 0)."""
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    return ((1 - sigmas) / sigmas) ** 2


def ve_sigma(sigmas: torch.Tensor | float) -> torch.Tensor:
    """The equivalent variance-exploding noise level σ_VE = σ/(1 − σ) = 1/√SNR (EDM's σ; ∞ at σ = 1)."""
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    return sigmas / (1 - sigmas)


def sigma_from_ve(sigma_ve: torch.Tensor | float) -> torch.Tensor:
    """Flow σ of the same SNR as a variance-exploding noise level: σ = σ_VE / (1 + σ_VE) (inverse of `ve_sigma`).

    Use it to carry a gate between formulations: an EDM σ or a DDPM `sigma_from_timesteps` value of 1 (SNR = 1) is
    flow σ = 0.5.
    """
    sigma_ve = torch.as_tensor(sigma_ve)
    sigma_ve = sigma_ve.to(compute_dtype(sigma_ve))
    return sigma_ve / (1 + sigma_ve)


def sigma_from_snr(snr: torch.Tensor | float) -> torch.Tensor:
    """Flow σ with the given SNR: σ = 1 / (1 + √SNR) (inverse of `flow_snr`; e.g. from a DDPM timestep's SNR)."""
    snr = torch.as_tensor(snr)
    snr = snr.to(compute_dtype(snr))
    return 1 / (1 + snr.sqrt())


def spectral_weight(
    kind: str,
    sigmas: torch.Tensor | float,
    min_snr_gamma: float = 5.0,
    sigma_data: float = 0.5,
) -> torch.Tensor:
    """Per-sample weight w(σ) of a spectral term on a flow x̂₀, with the meaning it has for DDPM and EDM.

    With SNR = ((1 − σ)/σ)² (`flow_snr`), each kind of `diffusers_specreg.weighting.WEIGHTINGS` is the same function
    of SNR as there, written in closed form in σ (finite at σ = 1, where SNR = 0):

    - "alpha_bar": SNR/(1 + SNR) = (1 − σ)² / ((1 − σ)² + σ²), ᾱ_t's analogue, bounded in [0, 1];
    - "sqrt_snr": √SNR = (1 − σ)/σ, the ε-space equivalent of an L1 term: x̂₀ − x₀ = −σ/(1 − σ)·(ε̂ − ε);
    - "min_sqrt_snr": min(√SNR, γ);
    - "constant": 1;
    - "edm": λ_EDM(σ_VE) = (σ_VE² + σ_data²)/(σ_VE·σ_data)² = 1/σ_data² + SNR at σ_VE = σ/(1 − σ);
    - "snr", "min_snr": SNR and min(SNR, γ), the squared-error forms;
    - "velocity" (flow only): 1/σ = 1 + √SNR, the velocity-space equivalent: x̂₀ − x₀ = −σ·(v̂ − v), so
      ‖x̂₀ − x₀‖₁/σ = ‖v̂ − v‖₁, the L1 analogue of the flow-matching loss itself.

    Args:
        kind (`str`): one of `FLOW_WEIGHTINGS`.
        sigmas (`torch.Tensor`, any shape, or a scalar): flow σ ∈ [0, 1].
        min_snr_gamma (`float`, defaults to 5.0): the cap γ of "min_sqrt_snr" (on √SNR) and "min_snr" (on SNR).
        sigma_data (`float`, defaults to 0.5): σ_data of "edm".

    Returns:
        `torch.Tensor` of the shape of `sigmas`, float32 at least.
    """
    if kind not in FLOW_WEIGHTINGS:
        raise ValueError(f"Unknown flow spectral weighting {kind!r}; expected one of {', '.join(FLOW_WEIGHTINGS)}.")
    if kind in ("min_sqrt_snr", "min_snr") and not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
        raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    signal = 1 - sigmas
    if kind == "constant":
        return torch.ones_like(sigmas)
    if kind == "alpha_bar":
        # 1. ᾱ's analogue SNR/(1 + SNR), multiplied through by σ² so that σ = 0 gives 1
        return signal**2 / (signal**2 + sigmas**2)
    if kind == "sqrt_snr":
        # 2. √SNR = (1 − σ)/σ: the ε-space factor of an L1 term on x̂₀
        return signal / sigmas
    if kind == "min_sqrt_snr":
        return (signal / sigmas).clamp(max=min_snr_gamma)
    if kind == "velocity":
        # 3. 1/σ: x̂₀ − x₀ = −σ·(v̂ − v), so w·‖x̂₀ − x₀‖₁ = ‖v̂ − v‖₁
        return 1 / sigmas
    snr = (signal / sigmas) ** 2
    if kind == "edm":
        # 4. λ(σ_VE) = 1/σ_data² + 1/σ_VE² (Table 1 of arXiv 2206.00364) with 1/σ_VE² = SNR
        return 1 / sigma_data**2 + snr
    if kind == "snr":
        return snr
    return snr.clamp(max=min_snr_gamma)


def sigma_gate(sigmas: torch.Tensor | float, sigma_max: float) -> torch.Tensor:
    """0/1 mask keeping a term where σ <= sigma_max (flow units; e.g. 0.7 for a term at t < 700 of 1000).

    Args:
        sigmas (`torch.Tensor`, any shape, or a scalar): flow σ.
        sigma_max (`float`): the largest σ kept, in (0, 1]. `sigma_from_ve` converts an EDM / DDPM σ bound.

    Returns:
        `torch.Tensor` of the shape of `sigmas`, float32 of 0 and 1.
    """
    if not (math.isfinite(sigma_max) and 0 < sigma_max <= 1):
        raise ValueError(f"Expected sigma_max in (0, 1] (flow σ units), got {sigma_max}.")
    sigmas = torch.as_tensor(sigmas)
    return (sigmas <= sigma_max).to(compute_dtype(sigmas))


def sigmoid_fade(
    sigmas: torch.Tensor | float, cutoff: float = DEFAULT_FADE_CUTOFF, width: float = DEFAULT_FADE_WIDTH
) -> torch.Tensor:
    """Smooth gate w(σ) = 1 / (1 + exp(4·(σ − cutoff)/width)): about 1 at low noise, 1/2 at σ = cutoff, about 0 above.

    `width` is the σ span over which w falls from sigmoid(2) ≈ 0.88 to sigmoid(−2) ≈ 0.12 (cutoff ∓ width/2). The
    defaults, cutoff 0.7 and width 0.4, give sigmoid(10·(0.3 − σ)), the fade of a wavelet-loss library for flow
    models; they were not chosen by a measurement of this package.

    Args:
        sigmas (`torch.Tensor`, any shape, or a scalar): flow σ.
        cutoff (`float`, defaults to 0.7): σ where the weight is 1/2.
        width (`float`, defaults to 0.4): width of the transition, > 0.

    Returns:
        `torch.Tensor` of the shape of `sigmas`, float32 at least, in (0, 1).
    """
    if not (math.isfinite(cutoff) and math.isfinite(width) and width > 0):
        raise ValueError(f"Expected a finite cutoff and width > 0, got cutoff {cutoff} and width {width}.")
    sigmas = torch.as_tensor(sigmas)
    sigmas = sigmas.to(compute_dtype(sigmas))
    return torch.sigmoid(4 * (cutoff - sigmas) / width)


def pack_latents(latents: torch.Tensor) -> torch.Tensor:
    """Flux's sequence layout: `[B, C, H, W]` -> `[B, (H/2)·(W/2), 4C]`, each token a 2x2 patch (channel-major).

    The layout of `FluxPipeline._pack_latents`: token (i, j) in row-major order holds the patch
    `latents[:, :, 2i:2i+2, 2j:2j+2]` flattened as (channel, row, column).

    Args:
        latents (`torch.Tensor` of shape `[B, C, H, W]`): H and W even.

    Returns:
        `torch.Tensor` of shape `[B, H·W/4, 4C]`.
    """
    if latents.ndim != 4 or latents.shape[2] % 2 or latents.shape[3] % 2:
        raise ValueError(f"Expected latents [B, C, H, W] with even H and W, got shape {list(latents.shape)}.")
    batch, channels, height, width = latents.shape
    patches = latents.reshape(batch, channels, height // 2, 2, width // 2, 2)
    # [B, C, H/2, 2, W/2, 2] -> [B, H/2, W/2, C, 2, 2]: tokens row-major, features (channel, row, column)
    return patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, (height // 2) * (width // 2), channels * 4)


def unpack_latents(packed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of `pack_latents`: `[B, (H/2)·(W/2), 4C]` -> `[B, C, H, W]`.

    `height` and `width` are the LATENT grid (`model_input.shape[2:]` in the Flux scripts), not the pixel size that
    `FluxPipeline._unpack_latents` takes (there: pixels / vae_scale_factor, rounded down to even).

    Args:
        packed (`torch.Tensor` of shape `[B, N, 4C]`): Flux tokens, N = H·W/4.
        height (`int`): latent height H, even.
        width (`int`): latent width W, even.

    Returns:
        `torch.Tensor` of shape `[B, C, H, W]`.
    """
    if height % 2 or width % 2 or height <= 0 or width <= 0:
        raise ValueError(f"Expected an even latent height and width, got {height} x {width}.")
    if packed.ndim != 3 or packed.shape[1] != (height // 2) * (width // 2) or packed.shape[2] % 4:
        raise ValueError(
            f"Expected packed latents [B, {(height // 2) * (width // 2)}, 4C] for a {height} x {width} latent, got"
            f" shape {list(packed.shape)}."
        )
    batch, _, features = packed.shape
    channels = features // 4
    patches = packed.reshape(batch, height // 2, width // 2, channels, 2, 2)
    # [B, H/2, W/2, C, 2, 2] -> [B, C, H/2, 2, W/2, 2]
    return patches.permute(0, 3, 1, 4, 2, 5).reshape(batch, channels, height, width)
