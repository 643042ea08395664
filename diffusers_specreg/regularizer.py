"""Spectral regularization of the diffusion loss, L_total = L_diffusion + Σ_k λ_k·w(t)·L_k (Eq. 17 of arXiv 2603.02447).

`SpectralRegularizer` turns the model output into the predicted clean sample x̂₀, evaluates each configured spectral
loss L_k(x̂₀, x₀) per sample, multiplies it by a timestep weight w(t) and a low-noise gate, and adds it to the
per-sample base diffusion loss computed by the caller. It returns a dict of named per-sample terms (as
improved-diffusion's `training_losses` does), so logging and reduction stay with the caller.

λ without a grid search: the paper's stated limitation is that λ needs careful tuning and that results are
non-monotonic in λ. A weight of "auto" instead sets λ_k = auto_fraction · EMA(mean base) / EMA(mean w·L_k) from
detached running magnitudes, which keeps each spectral term at about `auto_fraction` of the base loss (10% by
default) whatever the scale of the loss, the data or the timestep weighting.
"""

from __future__ import annotations

import copy
import math
import numbers
from collections.abc import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from .reconstruction import predict_original_sample
from .weighting import WEIGHTINGS, low_noise_gate, timestep_weight

AUTO = "auto"
_RESERVED_NAMES = ("base", "loss")


class SpectralRegularizer(nn.Module):
    """Adds weighted spectral terms on x̂₀ to a per-sample diffusion loss (arXiv 2603.02447, Eq. 17).

    Register it for checkpointing (`accelerator.register_for_checkpointing(regularizer)`) when a weight is "auto":
    the running magnitudes are buffers, so `state_dict()` / `load_state_dict()` keep them.

    Args:
        losses (`Mapping[str, nn.Module]`):
            Named spectral losses, each called as `loss(prediction, target)` on `[B, C, ...]` tensors. They are used
            with `reduction="none"` and must then return one value per sample, `[B]`; a module whose `reduction` is
            something else is deep-copied and the copy set to "none" (the caller's module is left untouched). Names
            must differ from "base" and "loss".
        weights (`Mapping[str, float | str]`):
            λ for each name in `losses`: a finite float >= 0, or "auto". "auto" sets
            λ_k = auto_fraction · EMA(mean base) / EMA(mean w·L_k) from detached running means, which keeps the
            weighted term at about `auto_fraction` of the base loss, so no grid search over λ is needed.
        weighting (`str`, defaults to "constant"):
            Timestep weight w(t) of the spectral terms, one of `WEIGHTINGS` ("constant", "edm", "snr", "min_snr").
        gate_t_max (`int`, *optional*):
            Apply the spectral terms only where t <= gate_t_max (DDPM / DDIM schedulers).
        gate_sigma_max (`float`, *optional*):
            Apply the spectral terms only where σ <= gate_sigma_max (any supported scheduler).
        min_snr_gamma (`float`, defaults to 5.0):
            γ of the "min_snr" weighting.
        auto_fraction (`float`, defaults to 0.1):
            Target ratio of each "auto" weighted spectral term to the base loss.
        auto_momentum (`float`, defaults to 0.99):
            Momentum of the bias-corrected running means behind "auto" weights, in [0, 1).
        auto_eps (`float`, defaults to 1e-12):
            Floor of the running spectral magnitude in the "auto" ratio, so a term that is zero gives a finite λ.
        sync_distributed (`bool`, defaults to `True`):
            Average the batch magnitudes over processes (all-reduce) before updating the running means, so that
            every process uses the same "auto" λ. Every process must then call `forward` in training mode equally
            often (as a DDP training loop does).
    """

    def __init__(
        self,
        losses: Mapping[str, nn.Module],
        weights: Mapping[str, float | str],
        weighting: str = "constant",
        gate_t_max: int | None = None,
        gate_sigma_max: float | None = None,
        min_snr_gamma: float = 5.0,
        auto_fraction: float = 0.1,
        auto_momentum: float = 0.99,
        auto_eps: float = 1e-12,
        sync_distributed: bool = True,
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
        if not (math.isfinite(auto_fraction) and auto_fraction > 0):
            raise ValueError(f"Expected auto_fraction > 0 and finite, got {auto_fraction}.")
        if not 0 <= auto_momentum < 1:
            raise ValueError(f"Expected auto_momentum in [0, 1), got {auto_momentum}.")
        if not (math.isfinite(min_snr_gamma) and min_snr_gamma > 0):
            raise ValueError(f"Expected min_snr_gamma > 0 and finite, got {min_snr_gamma}.")
        if not auto_eps > 0:
            raise ValueError(f"Expected auto_eps > 0, got {auto_eps}.")

        self.losses = nn.ModuleDict({name: self._per_sample_loss(losses[name]) for name in names})
        self.weights: dict[str, float | str] = {name: self._check_weight(name, weights[name]) for name in names}
        self.auto_names = [name for name in names if self.weights[name] == AUTO]
        self.weighting = weighting
        self.gate_t_max = gate_t_max
        self.gate_sigma_max = gate_sigma_max
        self.min_snr_gamma = float(min_snr_gamma)
        self.auto_fraction = float(auto_fraction)
        self.auto_momentum = float(auto_momentum)
        self.auto_eps = float(auto_eps)
        self.sync_distributed = sync_distributed

        # running magnitudes for "auto" weights: EMA of the mean base loss and of each mean weighted term, plus the
        # number of updates for the bias correction (Adam-style, ema / (1 - momentum**steps))
        num_auto = len(self.auto_names)
        self.register_buffer("auto_base_ema", torch.zeros((), dtype=torch.float32))
        self.register_buffer("auto_term_ema", torch.zeros(num_auto, dtype=torch.float32))
        self.register_buffer("auto_steps", torch.zeros((), dtype=torch.long))
        # λ used by the latest forward (for logging), not part of the state
        self.register_buffer("_last_auto_weights", torch.full((num_auto,), float("nan")), persistent=False)

    @staticmethod
    def _per_sample_loss(loss: nn.Module) -> nn.Module:
        if getattr(loss, "reduction", "none") != "none":
            loss = copy.deepcopy(loss)
            loss.reduction = "none"
        return loss

    @staticmethod
    def _check_weight(name: str, weight: float | str) -> float | str:
        if isinstance(weight, str):
            if weight != AUTO:
                raise ValueError(f"Invalid weight {weight!r} for {name!r}: expected a float >= 0 or {AUTO!r}.")
            return AUTO
        if isinstance(weight, bool) or not isinstance(weight, numbers.Real):
            raise ValueError(f"Invalid weight {weight!r} for {name!r}: expected a float >= 0 or {AUTO!r}.")
        weight = float(weight)
        if not math.isfinite(weight) or weight < 0:
            raise ValueError(f"Invalid weight {weight!r} for {name!r}: expected a finite float >= 0 or {AUTO!r}.")
        return weight

    @classmethod
    def from_names(
        cls,
        names: Sequence[str],
        weights: Sequence[float | str] | float | str,
        wave: str = "haar",
        levels: int = 3,
        loss_kwargs: Mapping[str, Mapping] | None = None,
        **kwargs,
    ) -> SpectralRegularizer:
        """Build a regularizer from loss names understood by `diffusers_specreg.losses.build_loss`.

        Args:
            names (`Sequence[str]`):
                Loss names, e.g. `["amplitude", "wavelet"]` (see `build_loss`); no duplicates. Empty for no term.
            weights (`Sequence[float | str]` or `float` or `str`):
                One λ per name, or a single value (float >= 0 or "auto") used for every name.
            wave (`str`, defaults to "haar"):
                Wavelet of the "wavelet" loss ("haar", "bior1.3", ...).
            levels (`int`, defaults to 3):
                Decomposition levels of the "wavelet" loss.
            loss_kwargs (`Mapping[str, Mapping]`, *optional*):
                Extra keyword arguments per loss name, passed to `build_loss`.
            **kwargs:
                Passed to `SpectralRegularizer.__init__` (`weighting`, `gate_t_max`, `auto_fraction`, ...).
        """
        from .losses import build_loss

        names = list(names)
        if len(set(names)) != len(names):
            raise ValueError(f"Duplicate spectral loss names in {names}.")
        if isinstance(weights, (str, numbers.Real)):
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
        return cls(losses, dict(zip(names, weights)), **kwargs)

    def extra_repr(self) -> str:
        return (
            f"weights={self.weights}, weighting={self.weighting!r}, gate_t_max={self.gate_t_max},"
            f" gate_sigma_max={self.gate_sigma_max}, auto_fraction={self.auto_fraction}"
        )

    def _auto_lambdas(self, base_mean: torch.Tensor, term_means: torch.Tensor) -> torch.Tensor:
        """λ for the "auto" terms from the running means (from the batch means before any update)."""
        steps = self.auto_steps.to(torch.float32)
        correction = (1 - self.auto_momentum**steps).clamp_min(torch.finfo(torch.float32).tiny)
        has_stats = steps > 0
        base = torch.where(has_stats, self.auto_base_ema / correction, base_mean.to(torch.float32))
        terms = torch.where(has_stats, self.auto_term_ema / correction, term_means.to(torch.float32))
        # 1. λ_k = fraction · E[base] / E[w·L_k], so that λ_k·E[w·L_k] = fraction · E[base]
        return self.auto_fraction * base / terms.clamp_min(self.auto_eps)

    @torch.no_grad()
    def _update_running_means(self, base_mean: torch.Tensor, term_means: torch.Tensor) -> None:
        stats = torch.cat([base_mean.reshape(1), term_means]).to(torch.float32)
        if self.sync_distributed and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(stats)
            stats = stats / dist.get_world_size()
        if not torch.isfinite(stats).all():  # a skipped, non-finite batch must not poison the running means
            return
        m = self.auto_momentum
        self.auto_base_ema.mul_(m).add_((1 - m) * stats[0])
        self.auto_term_ema.mul_(m).add_((1 - m) * stats[1:])
        self.auto_steps.add_(1)

    def current_weights(self) -> dict[str, float]:
        """The λ of every term: the configured constants, and for "auto" terms the value from the running means (the
        one the latest training step used), or the one the latest forward used when no running mean exists yet (NaN
        before any forward).

        Returns:
            `dict[str, float]`: λ per loss name.
        """
        result = {name: weight for name, weight in self.weights.items() if weight != AUTO}
        if self.auto_names:
            if int(self.auto_steps) > 0:
                empty = torch.zeros((), dtype=torch.float32, device=self.auto_base_ema.device)
                auto = self._auto_lambdas(empty, torch.zeros_like(self.auto_term_ema))
            else:
                auto = self._last_auto_weights
            result.update({name: float(value) for name, value in zip(self.auto_names, auto.tolist())})
        return {name: result[name] for name in self.weights}

    def forward(
        self,
        scheduler,
        model_output: torch.Tensor,
        noisy_sample: torch.Tensor,
        timesteps: torch.Tensor | int | float,
        clean_sample: torch.Tensor,
        base_loss: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """Per-sample total loss and its named terms.

        Args:
            scheduler (`SchedulerMixin`):
                The training scheduler (`DDPMScheduler`, `DDIMScheduler`, `EDMEulerScheduler`,
                `EDMDPMSolverMultistepScheduler`); its `config.prediction_type` defines x̂₀.
            model_output (`torch.Tensor` of shape `[B, C, ...]`):
                The network output (for EDM the raw F_θ, before `precondition_outputs`).
            noisy_sample (`torch.Tensor` of shape `[B, C, ...]`):
                The noisy input x_t (for EDM x = x₀ + σ·ε, before `precondition_inputs`).
            timesteps (`torch.Tensor` of shape `[B]`, or a scalar):
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
        result = {"base": base_loss}
        if len(self.losses) == 0:
            result["loss"] = base_loss
            return result

        # 1. predicted clean sample x̂₀ ("Formulations" of arXiv 2603.02447), float32
        pred_original = predict_original_sample(scheduler, model_output, noisy_sample, timesteps)
        target = clean_sample.to(pred_original.dtype)
        device = pred_original.device

        # 2. per-sample timestep weight w(t) times the low-noise gate, [B]
        weight = timestep_weight(self.weighting, scheduler, timesteps, self.min_snr_gamma)
        gate = low_noise_gate(scheduler, timesteps, self.gate_t_max, self.gate_sigma_max)
        weight = (weight * gate).to(device=device, dtype=torch.float32)
        weight = weight.reshape(-1).expand(batch_size) if weight.numel() == 1 else weight.reshape(batch_size)

        # 3. unweighted spectral terms L_k(x̂₀, x₀), [B] each; gated-off samples contribute exactly zero
        weighted_terms = {}
        for name, loss in self.losses.items():
            term = loss(pred_original, target)
            if term.shape != (batch_size,):
                raise ValueError(
                    f"Spectral loss {name!r} must return one value per sample, shape [B] = [{batch_size}], with"
                    f" reduction='none'; got {list(term.shape)}."
                )
            result[name] = term
            weighted_terms[name] = torch.where(weight > 0, weight * term, torch.zeros_like(term))

        # 4. λ for "auto" terms from detached running magnitudes, updated in training mode only
        lambdas = {name: self.weights[name] for name in self.losses if self.weights[name] != AUTO}
        if self.auto_names:
            self._move_state_to(device)
            base_mean = base_loss.detach().mean().to(torch.float32)
            term_means = torch.stack([weighted_terms[name].detach().mean() for name in self.auto_names])
            if self.training:
                self._update_running_means(base_mean, term_means)
            auto = self._auto_lambdas(base_mean, term_means)
            self._last_auto_weights.copy_(auto.to(self._last_auto_weights.dtype))
            lambdas.update({name: auto[i].to(torch.float32) for i, name in enumerate(self.auto_names)})

        # 5. L_total = L_diffusion + Σ_k λ_k·w(t)·L_k, Eq. 17 of arXiv 2603.02447
        total = base_loss
        for name, term in weighted_terms.items():
            total = total + lambdas[name] * term
        result["loss"] = total
        return result

    def _move_state_to(self, device: torch.device) -> None:
        if self.auto_base_ema.device != device:
            for name in ("auto_base_ema", "auto_term_ema", "auto_steps", "_last_auto_weights"):
                setattr(self, name, getattr(self, name).to(device))
