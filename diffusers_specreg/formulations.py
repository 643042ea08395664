"""Kept for old imports: the pipeline kinds now live in `diffusers_specreg.kinds`.

`Formulation` is `kinds.PipelineKind`, `FORMULATIONS` is `kinds.PIPELINE_KINDS`, `select_formulation` is
`kinds.select_kind`, `formulation_of` is `kinds.kind_of` and `formulation_choices` is `kinds.objective_choices`.
`SchedulerSettings` is in `diffusion.base` and `default_sampler` in `diffusion.samplers`. A new objective is
`diffusion/NAME.py` plus one entry of `diffusion.registry.OBJECTIVES`; see `kinds` for the other kinds.
"""

from .diffusion.base import SchedulerSettings
from .diffusion.samplers import default_sampler
from .kinds import PIPELINE_KINDS, PipelineKind, class_name, kind_of, objective_choices, read_card_file, render_usage
from .kinds import select_kind as select_formulation

Formulation = PipelineKind
FORMULATIONS = PIPELINE_KINDS
formulation_of = kind_of
formulation_choices = objective_choices

__all__ = [
    "FORMULATIONS",
    "Formulation",
    "SchedulerSettings",
    "class_name",
    "default_sampler",
    "formulation_choices",
    "formulation_of",
    "read_card_file",
    "render_usage",
    "select_formulation",
]
