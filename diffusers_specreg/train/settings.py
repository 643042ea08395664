"""What a `train_spectral.py` run derives from its flags: the defaults of the built-in demo or of the anchor script,
the parsed noise spectrum and corrupted band, the pipeline kind and the spectral weights.

`derive_settings` runs once, on the parsed flags (`train.arguments.derived_settings` reads the namespace); everything
below the script then takes the resulting `DerivedSettings` or plain values.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from diffusers_specreg.diffusion import registry
from diffusers_specreg.diffusion.registry import objective_class
from diffusers_specreg.kinds import PipelineKind, select_kind
from diffusers_specreg.noise import NoiseSpectrum

# What `accelerate launch train_spectral.py` does with no data named: the product's demo, a run that finishes in
# minutes on a CPU and converges in its budget (lr 5e-4 with a short warm-up), with the paper's amplitude+phase loss
# (Eq. 15) at its default λ and weighting. `--spectral_loss none` gives the MSE baseline of the same run.
BUILTIN_PRESET = dict(
    resolution=32,
    model_preset="small",
    max_train_steps=1500,
    ddpm_num_inference_steps=50,
    learning_rate=5e-4,
    lr_warmup_steps=50,
    spectral_loss=["amplitude_phase"],
)
# What a run that names data uses where the user did not say: train_unconditional.py's defaults (no spectral term).
ANCHOR_DEFAULTS = dict(
    resolution=64,
    model_preset="default",
    ddpm_num_inference_steps=1000,
    learning_rate=1e-4,
    lr_warmup_steps=500,
    spectral_loss=[],
)
# the flags whose value, when not given, comes from the preset (BUILTIN_PRESET or ANCHOR_DEFAULTS)
PRESET_FLAGS = ("resolution", "model_preset", "ddpm_num_inference_steps", "learning_rate", "lr_warmup_steps")
# the flags `derive_settings` reads, by their names (besides `builtin` and `latent`, which it is told)
DERIVED_FROM = (
    *PRESET_FLAGS,
    "spectral_loss",
    "max_train_steps",
    "num_epochs",
    "noise_spectrum",
    "formulation",
    "modality",
    "corrupt_band",
    "prediction_type",
)


@dataclass
class DerivedSettings:
    r"""
    What a run derives from its flags; the flags themselves stay exactly as parsed.

    Args:
        formulation (`PipelineKind`): the pipeline kind (DDPM, EDM, flow, SAGD, audio or latent), `kinds.select_kind`.
        noise_spectrum (`NoiseSpectrum`): `--noise_spectrum`, parsed.
        corrupt_band (`tuple[float, float]`, *optional*): `--corrupt_band`, parsed.
        builtin (`bool`): no data named, so the quick built-in preset applies.
        resolution (`int`): `--resolution`, else the fine-tuned model's sample size, else the preset's.
        model_preset (`str`): `--model_preset`, else the preset's.
        ddpm_num_inference_steps (`int`): `--ddpm_num_inference_steps`, else the preset's.
        prediction_type (`str`): `--prediction_type`, else the fine-tuned scheduler's, else the objective's first.
        max_train_steps (`int`, *optional*): `--max_train_steps`, else the preset's; set from `num_epochs` once the
            data size is known.
        num_epochs (`int`, *optional*): `--num_epochs`, else 100 for named data; recomputed from `max_train_steps`.
        learning_rate (`float`): `--learning_rate`, else the preset's (5e-4 for the built-in demo, 1e-4 otherwise).
        lr_warmup_steps (`int`): `--lr_warmup_steps`, else the preset's (50 for the built-in demo, 500 otherwise).
        spectral_loss (`list[str]`): `--spectral_loss` ("none" -> []), else the preset's (`amplitude_phase` for the
            built-in demo, none otherwise).
    """

    formulation: PipelineKind
    noise_spectrum: NoiseSpectrum
    corrupt_band: tuple[float, float] | None
    builtin: bool
    resolution: int
    model_preset: str
    ddpm_num_inference_steps: int
    prediction_type: str
    max_train_steps: int | None
    num_epochs: int | None
    learning_rate: float
    lr_warmup_steps: int
    spectral_loss: list[str]

    def config(self, flags: Mapping[str, Any]) -> dict:
        """The parsed flags (`vars(args)`) with the derived values and without the Hub token: what the trackers, the
        card and the resume manifest record."""
        config = {k: v for k, v in flags.items() if k != "hub_token"}  # the token never goes into the logs
        derived = (
            "builtin",
            "resolution",
            "model_preset",
            "ddpm_num_inference_steps",
            "prediction_type",
            "learning_rate",
            "lr_warmup_steps",
            "spectral_loss",
            "max_train_steps",
            "num_epochs",
        )
        config.update({key: getattr(self, key) for key in derived})
        return config


def derive_settings(
    *,
    builtin: bool,
    latent: bool,
    formulation: str,
    modality: str,
    noise_spectrum: str,
    corrupt_band: str | None,
    prediction_type: str | None,
    spectral_loss: Sequence[str] | None,
    max_train_steps: int | None,
    num_epochs: int | None,
    **preset_flags,
) -> DerivedSettings:
    """The anchor's defaults, or the quick built-in preset when no data is named; the parsed spectra; the kind.

    Args:
        builtin (`bool`): no data named (neither `--dataset_name` nor `--train_data_dir`).
        latent (`bool`): `--vae_name_or_path` is given (latent diffusion).
        formulation (`str`), modality (`str`), noise_spectrum (`str`), corrupt_band (`str`, *optional*): the flags.
        prediction_type (`str`, *optional*): `--prediction_type`; `None`: the objective's first.
        spectral_loss (`list[str]`, *optional*): `--spectral_loss`; `None`: the preset's; `["none"]`: no term.
        max_train_steps (`int`, *optional*), num_epochs (`int`, *optional*): the run length as given.
        preset_flags: the flags of `PRESET_FLAGS` as given (`None`: the preset's value).
    """
    preset = BUILTIN_PRESET if builtin else ANCHOR_DEFAULTS
    defaults = {key: preset[key] if preset_flags[key] is None else preset_flags[key] for key in PRESET_FLAGS}
    losses = list(preset["spectral_loss"]) if spectral_loss is None else list(spectral_loss)
    if losses == ["none"]:  # `--spectral_loss none` (or the bare flag): the MSE baseline
        losses = []
    if num_epochs is None and max_train_steps is None:
        max_train_steps, num_epochs = (BUILTIN_PRESET["max_train_steps"], None) if builtin else (None, 100)
    spectrum = NoiseSpectrum.parse(noise_spectrum)
    objective = objective_class(formulation)
    if not spectrum.is_white and not objective.supports_noise_spectrum:
        raise ValueError(
            f"--noise_spectrum needs --formulation {capable('supports_noise_spectrum')} (the {objective.name} "
            "sampler draws white noise)."
        )
    return DerivedSettings(
        formulation=select_kind(formulation, modality, not spectrum.is_white, latent=latent),
        noise_spectrum=spectrum,
        corrupt_band=parse_band(corrupt_band) if corrupt_band else None,
        builtin=builtin,
        # the objective's default; a fine-tuned scheduler's replaces it, see train.parts.load_fine_tuned()
        prediction_type=prediction_type or objective.prediction_types[0],
        max_train_steps=max_train_steps,
        num_epochs=num_epochs,
        spectral_loss=losses,
        **defaults,
    )


def capable(attribute: str) -> str:
    """The registered objectives whose class sets `attribute` (e.g. `supports_audio`), as '--formulation' values."""
    return " or ".join(cls.name for cls in registry.OBJECTIVES if getattr(cls, attribute, False))


def spectral_weights(spectral_weight: Sequence[str] | None, losses: list[str]) -> list[float | None]:
    """Parse `--spectral_weight` into one λ per loss (None: that loss's default), with errors that say what is allowed.

    Args:
        spectral_weight (`list[str]`, *optional*): the flag's values as given.
        losses (`list[str]`): the spectral losses they weight.
    """
    values = []
    for raw in spectral_weight if spectral_weight is not None else [None]:
        if raw is None:
            values.append(None)
            continue
        if raw.strip().lower() == "auto":
            raise ValueError(
                "--spectral_weight auto was removed: it set λ from the ratio of loss values, so the spectral pull "
                "faded as the MSE converged. Give a number, or leave --spectral_weight out for the default λ."
            )
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"--spectral_weight {raw!r} is not a number.") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"--spectral_weight must be >= 0 and finite, got {raw}.")
        values.append(value)
    if len(values) == 1:
        return values * len(losses)
    if len(values) != len(losses):
        raise ValueError(
            f"--spectral_weight has {len(values)} values for {len(losses)} losses "
            f"({losses}); give one value for all or one per loss."
        )
    return values


def parse_band(text: str) -> tuple[float, float]:
    """'A-B' -> (A, B) with 0 <= A < B <= 1 (normalised radial frequency)."""
    try:
        low, high = (float(v) for v in text.split("-"))
    except ValueError:
        raise ValueError(f"--corrupt_band {text!r} must look like 'A-B' with 0 <= A < B <= 1, e.g. 0.5-0.8.") from None
    if not 0 <= low < high <= 1:
        raise ValueError(f"--corrupt_band {text!r} must satisfy 0 <= A < B <= 1 (normalised radial frequency).")
    return low, high
