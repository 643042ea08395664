"""The diffusion objectives by name: `--formulation` picks one of them.

A new objective is one file, `diffusion/NAME.py`, with a class that follows `diffusion.base.Objective`, and one entry
in `OBJECTIVES` below. `kinds.PIPELINE_KINDS` then holds a pipeline kind for it, built from its `PipelineSpec`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping

from .base import NoiseFn
from .ddpm import DDPMObjective
from .edm import EDMObjective
from .flow import FlowObjective

# The registered objectives, in the order `--formulation` lists them
OBJECTIVES: tuple[type, ...] = (DDPMObjective, EDMObjective, FlowObjective)

# what else follows the registry (kinds.PIPELINE_KINDS): `listener(cls)` adds cls and returns how to take it out again
_listeners: list[Callable[[type], Callable[[], None]]] = []


def objective_names() -> list[str]:
    """Every name `build_objective` accepts: each objective's `name`, then its `other_names` (e.g. "ddim")."""
    return [name for cls in OBJECTIVES for name in (cls.name, *cls.other_names)]


def objective_options() -> list:
    """Every registered objective's own command-line settings (`Option`s, in registry order): the flags a training
    script adds for them, e.g. `--edm_p_mean` or flow's `--weighting_scheme`."""
    return [option for cls in OBJECTIVES for option in cls.options]


def resume_incompatible_flags() -> list[str]:
    """The flags of the registered objectives' `Option`s that a resumed run may not change (`resume`
    "incompatible"), e.g. flow's `--flow_shift`: `train.manifest` refuses them as its `INCOMPATIBLE` flags."""
    return [option.flag for option in objective_options() if option.resume == "incompatible"]


def objective_class(name: str) -> type:
    """The registered objective class called `name` (or one of its `other_names`).

    Args:
        name (`str`): e.g. "ddpm", "ddim" or "edm".

    Returns:
        `type`: the objective class.
    """
    for cls in OBJECTIVES:
        if name == cls.name or name in cls.other_names:
            return cls
    names = [repr(name) for name in objective_names()]
    listed = names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"
    raise ValueError(f"formulation must be {listed}, got {name!r}.")


def check_model_config(formulation: str, config: Mapping) -> None:
    """Raise `ValueError` when the objective called `formulation` cannot train a network of `config` (its
    `check_model_config`; an objective without one accepts every config).

    Args:
        formulation (`str`): a registered name, e.g. "flow".
        config (`Mapping`): the network's config, e.g. `unet.config`.
    """
    check = getattr(objective_class(formulation), "check_model_config", None)
    if check is not None:
        check(dict(config))


def build_objective(
    formulation: str,
    scheduler,
    noise_fn: NoiseFn | None = None,
    edm_p_mean: float = -1.2,
    edm_p_std: float = 1.2,
    **options,
):
    """The objective called `formulation`, with its scheduler, forward noise and its own options.

    Args:
        formulation (`str`): a registered name, `objective_names()` ("ddpm", "ddim", "edm" or "flow").
        scheduler (`SchedulerMixin`): the objective's scheduler (`cls.make_scheduler(settings)`).
        noise_fn (`callable`, *optional*): `(shape, generator, device) -> noise`; white noise by default.
        edm_p_mean (`float`, defaults to -1.2): `--edm_p_mean`, the EDM objective's mean of ln σ.
        edm_p_std (`float`, defaults to 1.2): `--edm_p_std`, its standard deviation of ln σ.
        **options: further values of the objectives' `Option`s, by flag; an objective reads only its own, and only
            those whose `target` is its constructor (the scheduler's are in `scheduler`'s settings already).

    Returns:
        The objective (`DDPMObjective`, `EDMObjective`, ...).
    """
    cls = objective_class(formulation)
    values = {"edm_p_mean": edm_p_mean, "edm_p_std": edm_p_std, **options}
    constructor = (option for option in cls.options if option.target == "objective")
    kwargs = {option.kwarg: values.get(option.flag, option.default) for option in constructor}
    return cls(scheduler, noise_fn=noise_fn, **kwargs)


def on_register(listener: Callable[[type], Callable[[], None]]) -> None:
    """Call `listener(cls)` for each objective `register_objective` adds from now on; it returns the function that
    takes `cls` out again. (`kinds` adds a pipeline kind per objective this way.)"""
    _listeners.append(listener)


@contextlib.contextmanager
def register_objective(objective_class: type) -> Iterator[type]:
    """Register `objective_class` inside the block (`--formulation` then names it), restore the registry after.

    For a test or an experiment; a shipped objective is one line of `OBJECTIVES`.

    Args:
        objective_class (`type`): a class that follows `diffusion.base.Objective`, whose `name` is not registered.

    Example:

    ```py
    with register_objective(MyObjective):
        train_spectral.main(["--formulation", MyObjective.name, ...])
    ```
    """
    global OBJECTIVES
    taken = [name for name in (objective_class.name, *objective_class.other_names) if name in objective_names()]
    if taken:
        raise ValueError(f"An objective is already registered as {taken[0]!r}.")
    registered = OBJECTIVES
    OBJECTIVES = (*registered, objective_class)
    undo = []
    try:
        for listener in _listeners:
            undo.append(listener(objective_class))
        yield objective_class
    finally:
        for remove in reversed(undo):
            remove()
        OBJECTIVES = registered
