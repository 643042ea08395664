"""The old home of what a training run owns and what it was asked to do, kept so that existing imports keep working:
the output folder's record and checks now live in `diffusers_specreg.train.output_dir`, the one-run-at-a-time lock
in `train.lock`, and the settings manifest compared on resume in `train.manifest`."""

from diffusers_specreg.train.lock import LOCK_FILE, OutputDirLock
from diffusers_specreg.train.manifest import (
    INCOMPATIBLE,
    LENGTH_DEPENDENT_SCHEDULES,
    NOT_SETTINGS,
    UNCHECKED,
    check_resume_settings,
    compare_settings,
    dataset_fingerprint,
    settings_of,
)
from diffusers_specreg.train.output_dir import (
    CARD_MARKER,
    DDPM_OUTPUTS,
    EVALUATION_SUFFIXES,
    OUTPUTS_FILE,
    REPLACED_FILES,
    TEMPORARY_PREFIXES,
    check_inputs,
    check_output_dir,
    claim_output_dir,
    previous_outputs,
    read_outputs,
    record_outputs,
    run_outputs,
)

__all__ = [
    "CARD_MARKER",
    "DDPM_OUTPUTS",
    "EVALUATION_SUFFIXES",
    "INCOMPATIBLE",
    "LENGTH_DEPENDENT_SCHEDULES",
    "LOCK_FILE",
    "NOT_SETTINGS",
    "OUTPUTS_FILE",
    "REPLACED_FILES",
    "TEMPORARY_PREFIXES",
    "UNCHECKED",
    "OutputDirLock",
    "check_inputs",
    "check_output_dir",
    "check_resume_settings",
    "claim_output_dir",
    "compare_settings",
    "dataset_fingerprint",
    "previous_outputs",
    "read_outputs",
    "record_outputs",
    "run_outputs",
    "settings_of",
]
