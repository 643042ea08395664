"""Spectral regularization of the diffusion loss, L_total = L_diffusion + Σ_k λ_k·w(t)·L_k (Eq. 17 of arXiv 2603.02447).

`SpectralRegularizer` turns the model output into the predicted clean sample x̂₀, evaluates each configured spectral
loss L_k(x̂₀, x₀) per sample, multiplies it by a timestep weight w(t) and a low-noise gate, and adds it to the
per-sample base diffusion loss computed by the caller. It returns a dict of named per-sample terms (as
improved-diffusion's `training_losses` does), so logging and reduction stay with the caller.

λ without a grid search: the paper's stated limitation is that λ needs careful tuning. The defaults here,
`DEFAULT_WEIGHTS` with the ᾱ_t timestep weighting, were chosen by the λ × weighting sweep of
`benchmarks/bench_default_run.py` on checkerboards and natural-image crops (see `benchmarks/README.md`). A fixed λ
keeps the pull of an L1 term constant as the MSE converges, which is when the MSE alone stops removing blur; an
earlier "auto" rule that set λ from the ratio of loss values made λ proportional to the model's error, so the
spectral pull faded exactly then, and it was removed.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import nn

from .diffusion.base import NoiseLevels, NoisyBatch
from .diffusion.schedulers import noise_levels, predict_original_sample
from .diffusion.weighting import DEFAULT_WEIGHTING, WEIGHTINGS, noise_gate, spectral_weight

_RESERVED_NAMES = ("base", "loss")
# λ per loss name with the default "alpha_bar" weighting (benchmarks/bench_default_run.py, sweep table)
DEFAULT_WEIGHTS = {"amplitude": 1.0, "amplitude_phase": 1.0, "amplitude_weighted_phase": 1.0, "wavelet": 1.0}
_REMOVED_AUTO = (
    "λ 'auto' was removed: it set λ from the ratio of loss values, which made the spectral pull fade as the MSE "
    "converged. Give a number, or leave the weight out for the default (see DEFAULT_WEIGHTS)."
)


class SpectralRegularizer(nn.Module):
    """Adds weighted spectral terms on x̂₀ to a per-sample diffusion loss (arXiv 2603.02447, Eq. 17).

    Args:
        losses (`Mapping[str, nn.Module]`):
            Named spectral losses, each called as `loss(prediction, target)` on `[B, C, ...]` tensors. They are used
            with `reduction="none"` and must then return one value per sample, `[B]`; a module whose `reduction` is
            something else is deep-copied and the copy set to "none" (the caller's module is left untouched). Names
            must differ from "base" and "loss".
        weights (`Mapping[str, float]`):
            λ for each name in `losses`, a finite float >= 0.
        weighting (`str`, defaults to "alpha_bar"):
            Timestep weight w(t) of the spectral terms, one of `WEIGHTINGS` (see `diffusers_specreg.weighting`).
        gate_t_max (`int`, *optional*):
            Apply the spectral terms only where t <= gate_t_max (DDPM / DDIM schedulers).
        gate_sigma_max (`float`, *optional*):
            Apply the spectral terms only where σ <= gate_sigma_max (any supported scheduler).
        min_snr_gamma (`float`, defaults to 5.0):
            The cap γ of the "min_sqrt_snr" and "min_snr" weightings.
        decoder (`Callable[[torch.Tensor], torch.Tensor]`, *optional*):
            Maps x̂₀ and x₀ into the space where the spectral losses apply before they are compared: latent diffusion
            with `--spectral_space decoded` passes the frozen autoencoder's decoder (scaled latents -> images).
            x̂₀ is decoded with gradients (they flow back through the decoder to the UNet), x₀ without. `None`: the
            losses compare x̂₀ and x₀ themselves.
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module],
        weights: Mapping[str, float],
        weighting: str = DEFAULT_WEIGHTING,
        gate_t_max: int | None = None,
        gate_sigma_max: float | None = None,
        min_snr_gamma: float = 5.0,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        names = list(losses.keys())
        for name in names:
            if not isinstance(name, str) or not name or "." in name or name in _RESERVED_NAMES:
                raise ValueError(
                    f"Invalid spectral loss name {name!r}: expected a non-empty string without '.', other than"
                    f" {', '.join(_RESERVED_NAMES)}."
                )
            if not isinstance(losses[name], nn.Module):
                raise ValueError(
                    f"Expected an nn.Module for spectral loss {name!r}, got {type(losses[name]).__name__}."
                )
        if set(weights.keys()) != set(names):
            missing = sorted(set(names) - set(weights.keys()))
            unknown = sorted(set(weights.keys()) - set(names))
            raise ValueError(
                f"weights must name exactly the configured losses {names}; missing: {missing}, unknown: {unknown}."
            )
        if weighting not in WEIGHTINGS:
            raise ValueError(f"Unknown weighting {weighting!r}; expected one of {', '.join(WEIGHTINGS)}.")
        if not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
            raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")

        self.losses = nn.ModuleDict({name: self._per_sample_loss(losses[name]) for name in names})
        self.weights: dict[str, float] = {name: self._check_weight(name, weights[name]) for name in names}
        self.weighting = weighting
        self.gate_t_max = gate_t_max
        self.gate_sigma_max = gate_sigma_max
        self.min_snr_gamma = float(min_snr_gamma)
        self.decoder = decoder  # a plain callable, not a submodule: its weights stay out of this state_dict

    @staticmethod
    def _per_sample_loss(loss: nn.Module) -> nn.Module:
        if getattr(loss, "reduction", "none") != "none":
            loss = copy.deepcopy(loss)
            loss.reduction = "none"
        return loss

    @staticmethod
    def _check_weight(name: str, weight: float) -> float:
        if isinstance(weight, str) and weight.strip().lower() == "auto":
            raise ValueError(f"Invalid weight for {name!r}: {_REMOVED_AUTO}")
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"Invalid weight {weight!r} for {name!r}: expected a finite float >= 0.")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Invalid weight {weight!r} for {name!r}: expected a finite float >= 0.")
        return weight

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        weights: Sequence[float | None] | float | None = None,
        wave: str = "haar",
        levels: int = 3,
        loss_kwargs: Mapping[str, Mapping] | None = None,
        **kwargs,
    ) -> SpectralRegularizer:
        """Build a regularizer from loss names understood by `diffusers_specreg.losses.build_loss`.

        Args:
            names (`Sequence[str]`):
                Loss names, e.g. `["amplitude", "wavelet"]` (see `build_loss`); no duplicates. Empty for no term.
            weights (`Sequence[float | None]` or `float`, *optional*):
                One λ per name, or a single value used for every name; `None` (for all or for one name) takes the
                default of that loss, `DEFAULT_WEIGHTS[name]` (1.0 for a loss without a default).
            wave (`str`, defaults to "haar"):
                Wavelet of the "wavelet" loss ("haar", "bior1.3", ...).
            levels (`int`, defaults to 3):
                Decomposition levels of the "wavelet" loss.
            loss_kwargs (`Mapping[str, Mapping]`, *optional*):
                Extra keyword arguments per loss name, passed to `build_loss`.
            **kwargs:
                Passed to `SpectralRegularizer.__init__` (`weighting`, `gate_t_max`, ...).
        """
        from .losses import build_loss

        names = list(names)
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate spectral loss names in {names}.")
        if weights is None or isinstance(weights, (str, numbers.Real)):
            weights = [weights] * len(names)
        weights = list(weights)
        if len(weights) != len(names):
            raise ValueError(f"Expected one weight per name ({len(names)}) or a single weight, got {len(weights)}.")
        loss_kwargs = dict(loss_kwargs or {})
        unknown = sorted(set(loss_kwargs) - set(names))
        if unknown:
            raise ValueError(f"loss_kwargs names {unknown} are not among the losses {names}.")
        losses = {}
        for name in names:
            options = {"reduction": "none", **loss_kwargs.get(name, {})}
            if name == "wavelet":
                options = {"wave": wave, "levels": levels, **options}
            losses[name] = build_loss(name, **options)
        weights = [DEFAULT_WEIGHTS.get(name, 1.0) if w is None else w for name, w in zip(names, weights)]
        return cls(losses, dict(zip(names, weights)), **kwargs)

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, weighting={self.weighting!r}, gate_t_max={self.gate_t_max},"
            f" gate_sigma_max={self.gate_sigma_max}"
        )

    def current_weights(self) -> dict[str, float]:
        """The λ of every term, `{loss name: λ}` (for logging and the model card)."""
        return dict(self.weights)

    def term_weight(self, levels: NoiseLevels) -> torch.Tensor:
        """w·gate per sample, `[B]` float32: what multiplies each unweighted term before λ.

        Args:
            levels (`NoiseLevels`): the batch's noise levels (`NoisyBatch.levels`).

        Returns:
            `torch.Tensor` of shape `[B]`, float32: `spectral_weight(weighting, σ, SNR)` times the low-noise gate.
        """
        if self.gate_t_max is not None and levels.alpha_bar is None:
            raise ValueError(
                "gate_t_max applies to integer timesteps on the variance-preserving path (DDPM / DDIM); these noise"
                " levels are indexed by σ, use gate_sigma_max instead."
            )
        # 1. per-sample weight w(σ, SNR) times the low-noise gate
        weight = spectral_weight(self.weighting, levels.sigma, levels.snr, self.min_snr_gamma, levels.sigma_data)
        gate = noise_gate(levels, self.gate_t_max, self.gate_sigma_max)
        return (weight * gate).to(torch.float32)

    def combine(
        self, x0_hat: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor, base_loss: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """The spectral terms of a given x̂₀, weighted and added to the base loss (Eq. 17 of arXiv 2603.02447).

        Args:
            x0_hat (`torch.Tensor` of shape `[B, C, ...]`):
                The predicted clean sample x̂₀ (float32, or float64).
            x0 (`torch.Tensor` of shape `[B, C, ...]`):
                The clean training sample x₀.
            weight (`torch.Tensor` of shape `[B]`):
                The per-sample weight of the terms (`term_weight`); where it is 0 a term contributes exactly zero.
            base_loss (`torch.Tensor` of shape `[B]`):
                The per-sample base diffusion loss.

        Returns:
            `dict[str, torch.Tensor]`: "base" (`base_loss`), one unweighted `[B]` term per loss name (L_k(x̂₀, x₀)),
            and "loss" `[B]` = base + Σ_k λ_k·weight·L_k. With no spectral term "loss" is `base_loss` itself.
        """
        result = {"base": base_loss}
        if len(self.losses) == 0:
            result["loss"] = base_loss
            return result
        batch_size = x0_hat.shape[0]
        target = x0.to(x0_hat.dtype)
        if self.decoder is not None:  # e.g. latents -> images; the target needs no gradient
            x0_hat = self.decoder(x0_hat).float()
            with torch.no_grad():
                target = self.decoder(target).float()
        weight = weight.to(x0_hat.device)

        # 1. unweighted spectral terms L_k(x̂₀, x₀), [B] each; gated-off samples contribute exactly zero
        weighted_terms = {}
        for name, loss in self.losses.items():
            term = loss(x0_hat, target)
            if term.shape != (batch_size,):
                raise ValueError(
                    f"Spectral loss {name!r} must return one value per sample, shape [B] = [{batch_size}], with"
                    f" reduction='none'; got {list(term.shape)}."
                )
            result[name] = term
            weighted_terms[name] = torch.where(weight > 0, weight * term, torch.zeros_like(term))

        # 2. L_total = L_diffusion + Σ_k λ_k·w·L_k, Eq. 17 of arXiv 2603.02447
        total = base_loss
        for name, term in weighted_terms.items():
            total = total + self.weights[name] * term
        result["loss"] = total
        return result

    def terms(self, batch: NoisyBatch, x0_hat: torch.Tensor, base_loss: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-sample total loss and its named terms from what the objective already computed (x̂₀ once per step).

        Args:
            batch (`NoisyBatch`): the step's batch (`objective.noise_batch`); its `clean` and `levels` are read.
            x0_hat (`torch.Tensor` of shape `[B, C, ...]`): `objective.x0_hat(model_output, batch)`.
            base_loss (`torch.Tensor` of shape `[B]`): `objective.base_loss(model_output, batch, x0_hat)`.

        Returns:
            `dict[str, torch.Tensor]`, as `forward`.
        """
        batch_size = batch.clean.shape[0]
        if base_loss.shape != (batch_size,):
            raise ValueError(f"Expected base_loss of shape [B] = [{batch_size}], got {list(base_loss.shape)}.")
        if len(self.losses) == 0:
            return {"base": base_loss, "loss": base_loss}
        return self.combine(x0_hat, batch.clean, self.term_weight(batch.levels), base_loss)

    def forward(
        self,
        scheduler,
        model_output: torch.Tensor,
        noisy_sample: torch.Tensor,
        timesteps: torch.Tensor | int | float,
        clean_sample: torch.Tensor,
        base_loss: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per-sample total loss and its named terms, from a scheduler: the facade for users' own training loops.

        x̂₀ and the noise levels are derived from the scheduler (`diffusion.schedulers`), then `combine` does the rest.

        Args:
            scheduler (`SchedulerMixin`):
                The training scheduler (`DDPMScheduler`, `DDIMScheduler`, `EDMEulerScheduler`,
                `EDMDPMSolverMultistepScheduler`); its `config.prediction_type` defines x̂₀.
            model_output (`torch.Tensor` of shape `[B, C, ...]`):
                The network output (for EDM the raw F_θ, before `precondition_outputs`).
            noisy_sample (`torch.Tensor` of shape `[B, C, ...]`):
                The noisy input x_t (for EDM x = x₀ + σ·ε, before `precondition_inputs`).
            timesteps (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar):
                Integer timesteps (DDPM / DDIM) or σ (EDM).
            clean_sample (`torch.Tensor` of shape `[B, C, ...]`):
                The clean training sample x₀.
            base_loss (`torch.Tensor` of shape `[B]`):
                The per-sample base diffusion loss (for example the per-sample MSE).

        Returns:
            `dict[str, torch.Tensor]`: "base" (`base_loss`), one unweighted `[B]` term per loss name (L_k(x̂₀, x₀)),
            and "loss" `[B]` = base + Σ_k λ_k·w(t)·gate(t)·L_k. With no spectral term "loss" is `base_loss` itself.
        """
        batch_size = noisy_sample.shape[0]
        if base_loss.shape != (batch_size,):
            raise ValueError(f"Expected base_loss of shape [B] = [{batch_size}], got {list(base_loss.shape)}.")
        if clean_sample.shape != noisy_sample.shape:
            raise ValueError(
                f"Expected clean_sample of the noisy sample's shape {list(noisy_sample.shape)}, got"
                f" {list(clean_sample.shape)}."
            )
        if len(self.losses) == 0:
            return {"base": base_loss, "loss": base_loss}

        # 1. predicted clean sample x̂₀ ("Formulations" of arXiv 2603.02447), float32, and the per-sample levels
        x0_hat = predict_original_sample(scheduler, model_output, noisy_sample, timesteps)
        levels = noise_levels(scheduler, timesteps, batch_size)
        # 2. weighted spectral terms added to the base loss
        return self.combine(x0_hat, clean_sample, self.term_weight(levels), base_loss)
