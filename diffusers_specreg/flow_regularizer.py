"""Spectral terms for flow-matching loops: the variables of Diffusers' SD3 / Flux scripts in, per-sample terms out.

`FlowSpectralRegularizer` wraps a `SpectralRegularizer` (its losses, λ, decoder) and replaces what is DDPM / EDM
specific in it, the x̂₀ and the timestep weight, by their flow forms in σ units:

    spectral = FlowSpectralRegularizer.from_names(["wavelet"])
    ...                                                       # the script's loop, unchanged, up to its loss
    base = (weighting.float() * (model_pred.float() - target.float()) ** 2).reshape(bsz, -1).mean(1)   # [B]
    terms = spectral(model_pred, noisy_model_input, sigmas, model_input, base,
                     precondition_outputs=args.precondition_outputs)
    loss = terms["loss"].mean()

x̂₀ is x_t − σ·v̂ (arXiv 2209.03003) for a velocity `model_pred`, or `model_pred` itself after the SD3 scripts'
`model_pred * (-sigmas) + noisy_model_input` (arXiv 2403.03206); either way a perfect prediction gives x̂₀ = x₀ and
every spectral term is 0 there.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from . import flow_matching
from .parametrisation import predict_x0
from .regularizer import SpectralRegularizer


class FlowSpectralRegularizer(nn.Module):
    """Adds λ·w(σ)·gate(σ)·L_k(x̂₀, x₀) to a per-sample flow-matching loss (arXiv 2603.02447 Eq. 17, in σ units).

    Args:
        regularizer (`SpectralRegularizer`):
            Supplies the spectral losses, their λ (`weights`), `min_snr_gamma` and the optional `decoder` (spectral
            terms on decoded images instead of latents). Its `weighting` name is the default weighting here, read in
            flow SNR terms (`flow_matching.spectral_weight`); its `gate_sigma_max`, a variance-exploding σ, becomes the
            flow bound σ_VE/(1 + σ_VE) of the same SNR. `gate_t_max` (integer DDPM timesteps) has no flow meaning and
            is refused.
        weighting (`str`, *optional*):
            One of `flow_matching.FLOW_WEIGHTINGS`; `None` takes `regularizer.weighting` (default "alpha_bar",
            SNR/(1 + SNR), carried over from DDPM, not yet chosen by a measurement on flow models).
        sigma_max (`float`, *optional*):
            Hard gate in flow σ units: the terms apply only where σ <= sigma_max.
        fade_cutoff (`float`, *optional*):
            Smooth gate `flow_matching.sigmoid_fade` with this cutoff (σ where the weight is 1/2); `None`: no fade.
        fade_width (`float`, defaults to 0.4):
            Width of the fade (see `sigmoid_fade`); used only with `fade_cutoff`.
        sigma_data (`float`, defaults to 0.5):
            σ_data of the "edm" weighting.
    """

    def __init__(
        self,
        regularizer: SpectralRegularizer,
        weighting: str | None = None,
        sigma_max: float | None = None,
        fade_cutoff: float | None = None,
        fade_width: float = flow_matching.DEFAULT_FADE_WIDTH,
        sigma_data: float = 0.5,
    ) -> None:
        super().__init__()
        if not isinstance(regularizer, SpectralRegularizer):
            raise ValueError(f"Expected a SpectralRegularizer, got {type(regularizer).__name__}.")
        if regularizer.gate_t_max is not None:
            raise ValueError(
                "The regularizer's gate_t_max counts integer DDPM timesteps, which have no flow meaning; gate a flow"
                " model with sigma_max (flow σ units, e.g. 0.7) or the regularizer's gate_sigma_max (a VE σ)."
            )
        weighting = regularizer.weighting if weighting is None else weighting
        if weighting not in flow_matching.FLOW_WEIGHTINGS:
            raise ValueError(
                f"Unknown flow spectral weighting {weighting!r}; expected one of"
                f" {', '.join(flow_matching.FLOW_WEIGHTINGS)}."
            )
        if sigma_max is not None and not (math.isfinite(sigma_max) and 0 < sigma_max <= 1):
            raise ValueError(f"Expected sigma_max in (0, 1] (flow σ units), got {sigma_max}.")
        if fade_cutoff is not None:
            flow_matching.sigmoid_fade(0.0, fade_cutoff, fade_width)  # validates both
        self.regularizer = regularizer
        self.weighting = weighting
        self.sigma_max = sigma_max
        if regularizer.gate_sigma_max is not None:
            # a VE bound σ_VE <=> flow σ <= σ_VE / (1 + σ_VE): the same SNR
            ve_bound = float(flow_matching.sigma_from_ve(regularizer.gate_sigma_max))
            self.sigma_max = ve_bound if sigma_max is None else min(sigma_max, ve_bound)
        self.fade_cutoff = fade_cutoff
        self.fade_width = float(fade_width)
        self.sigma_data = float(sigma_data)

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        weights: Sequence[float | None] | float | None = None,
        *,
        weighting: str | None = None,
        sigma_max: float | None = None,
        fade_cutoff: float | None = None,
        fade_width: float = flow_matching.DEFAULT_FADE_WIDTH,
        sigma_data: float = 0.5,
        decoder: Callable[[torch.Tensor], torch.Tensor] | None = None,
        **kwargs,
    ) -> FlowSpectralRegularizer:
        """Build from loss names, as `SpectralRegularizer.from_names` (`wave`, `levels`, `loss_kwargs`,
        `min_snr_gamma` go through `**kwargs`); `weighting` is a flow weighting (default "alpha_bar")."""
        regularizer = SpectralRegularizer.from_names(names, weights, decoder=decoder, **kwargs)
        return cls(regularizer, weighting, sigma_max, fade_cutoff, fade_width, sigma_data)

    def extra_repr(self) -> str:
        return (
            f"weighting={self.weighting!r}, sigma_max={self.sigma_max}, fade_cutoff={self.fade_cutoff},"
            f" fade_width={self.fade_width}"
        )

    def term_weight(self, sigmas: torch.Tensor | float) -> torch.Tensor:
        """w(σ)·gate(σ)·fade(σ) per sample, `[B]` float32 (what multiplies each unweighted term before λ)."""
        sigmas = flow_matching.per_sample_sigmas(sigmas)
        weight = flow_matching.spectral_weight(
            self.weighting, sigmas, self.regularizer.min_snr_gamma, self.sigma_data
        ).float()
        if self.sigma_max is not None:
            weight = weight * flow_matching.sigma_gate(sigmas, self.sigma_max)
        if self.fade_cutoff is not None:
            weight = weight * flow_matching.sigmoid_fade(sigmas, self.fade_cutoff, self.fade_width)
        return weight

    @staticmethod
    def _unpack(tensor: torch.Tensor, latent_shape: Sequence[int] | None, name: str) -> torch.Tensor:
        if tensor.ndim != 3:
            return tensor
        if latent_shape is None:
            raise ValueError(
                f"{name} has the packed shape {list(tensor.shape)} ([B, N, 4C] tokens, as Flux's transformer sees"
                " them): pass latent_shape=(H, W) of the latent grid, or unpack it first"
                " (flow_matching.unpack_latents)."
            )
        height, width = (int(size) for size in latent_shape[-2:])
        return flow_matching.unpack_latents(tensor, height, width)

    def forward(
        self,
        model_pred: torch.Tensor,
        noisy_model_input: torch.Tensor,
        sigmas: torch.Tensor | float,
        model_input: torch.Tensor,
        base_loss: torch.Tensor,
        precondition_outputs: bool = False,
        latent_shape: Sequence[int] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Per-sample total loss and its named terms, from the variables of Diffusers' flow-matching scripts.

        Args:
            model_pred (`torch.Tensor` of shape `[B, C, H, W]`, or packed `[B, N, 4C]`):
                The transformer's velocity v̂, or, with `precondition_outputs`, the scripts' `model_pred` after
                `model_pred * (-sigmas) + noisy_model_input` (which is x̂₀).
            noisy_model_input (`torch.Tensor`, same shape as `model_pred`):
                x_t = (1 − σ)·x₀ + σ·ε.
            sigmas (`torch.Tensor` of shape `[B]` or `[B, 1, ..., 1]`, or a scalar):
                σ per sample (the scripts' `sigmas`; `flow_matching.sigmas_from_timesteps` converts `timesteps`).
            model_input (`torch.Tensor` of shape `[B, C, H, W]`, or packed `[B, N, 4C]`):
                The clean latents x₀.
            base_loss (`torch.Tensor` of shape `[B]`):
                The per-sample flow-matching loss (the scripts' weighted MSE before its batch mean).
            precondition_outputs (`bool`, defaults to `False`):
                Whether `model_pred` is already preconditioned (the SD3 scripts' `--precondition_outputs`).
            latent_shape (`Sequence[int]`, *optional*):
                `(H, W)` (or `(C, H, W)`) of the latent grid, needed for packed `[B, N, 4C]` inputs, which are unpacked
                first (`flow_matching.unpack_latents`): spectral losses need the spatial layout.

        Returns:
            `dict[str, torch.Tensor]`, as `SpectralRegularizer`: "base" (`base_loss`), one unweighted `[B]` term per
            loss name, and "loss" `[B]` = base + Σ_k λ_k·w(σ)·gate(σ)·L_k.
        """
        model_pred = self._unpack(model_pred, latent_shape, "model_pred")
        noisy_model_input = self._unpack(noisy_model_input, latent_shape, "noisy_model_input")
        model_input = self._unpack(model_input, latent_shape, "model_input")
        batch_size = model_input.shape[0]
        if base_loss.shape != (batch_size,):
            raise ValueError(f"Expected base_loss of shape [B] = [{batch_size}], got {list(base_loss.shape)}.")
        if model_input.shape != noisy_model_input.shape:
            raise ValueError(
                f"Expected model_input of the noisy input's shape {list(noisy_model_input.shape)}, got"
                f" {list(model_input.shape)}."
            )
        if len(self.regularizer.losses) == 0:
            return {"base": base_loss, "loss": base_loss}

        # 1. x̂₀ in float32: x_t − σ·v̂, or the preconditioned output itself
        sigmas = flow_matching.per_sample_sigmas(sigmas, batch_size, model_input.device)
        parametrisation = "flow_preconditioned" if precondition_outputs else "flow"
        pred_original = predict_x0(parametrisation, model_pred, noisy_model_input, sigmas=sigmas)

        # 2. w(σ) times the gates, [B]; 3. the regularizer's own losses and Eq. 17 of arXiv 2603.02447
        return self.regularizer.combine(pred_original, model_input, self.term_weight(sigmas), base_loss)
