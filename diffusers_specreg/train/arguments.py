"""The command-line argument groups both training scripts share, written once.

Each function adds its flags to an argparse group (or parser) and returns it, so a script can add its own flags to
the same group after them. The flags keep train_unconditional.py's names and meaning; where the two scripts differ
(the optimiser defaults, the resolution's default), the script passes its values.
"""

from __future__ import annotations

import argparse
from typing import Protocol


class ArgumentGroup(Protocol):
    """An argparse parser or argument group (`parser.add_argument_group(...)`): anything with `add_argument`."""

    def add_argument(self, *args, **kwargs) -> argparse.Action: ...


def add_data_arguments(group: ArgumentGroup, resolution_help: str) -> ArgumentGroup:
    """The data flags of train_unconditional.py: a `datasets` dataset or an image folder, its size and augmentation.

    Args:
        group (`ArgumentGroup`): where the flags go.
        resolution_help (`str`): the help of `--resolution` (its default differs per script).
    """
    group.add_argument("--dataset_name", type=str, default=None, help="A `datasets` dataset (Hub id or local).")
    group.add_argument("--dataset_config_name", type=str, default=None)
    group.add_argument("--train_data_dir", type=str, default=None, help="A folder of images (searched recursively).")
    group.add_argument(
        "--image_column",
        type=str,
        default=None,
        help="The --dataset_name column to train on (default 'image', as train_unconditional.py, else the only image "
        "column).",
    )
    group.add_argument("--cache_dir", type=str, default=None)
    group.add_argument("--resolution", type=int, default=None, help=resolution_help)
    group.add_argument("--center_crop", action="store_true", default=False)
    group.add_argument("--random_flip", action="store_true", default=False)
    group.add_argument("--dataloader_num_workers", type=int, default=0)
    return group


def add_optimizer_arguments(
    group: ArgumentGroup,
    *,
    learning_rate: float | None,
    lr_scheduler: str,
    lr_warmup_steps: int | None,
    adam_beta1: float,
    adam_weight_decay: float,
    learning_rate_help: str | None = None,
    lr_warmup_steps_help: str | None = None,
) -> ArgumentGroup:
    """AdamW and its learning-rate schedule (Diffusers' `get_scheduler` names), with the script's defaults.

    Args:
        group (`ArgumentGroup`): where the flags go.
        learning_rate (`float`, *optional*): the default of `--learning_rate` (`None`: the script derives it).
        lr_scheduler (`str`): the default of `--lr_scheduler`.
        lr_warmup_steps (`int`, *optional*): the default of `--lr_warmup_steps` (`None`: the script derives it).
        adam_beta1 (`float`): the default of `--adam_beta1`.
        adam_weight_decay (`float`): the default of `--adam_weight_decay`.
        learning_rate_help (`str`, *optional*): the help of `--learning_rate`.
        lr_warmup_steps_help (`str`, *optional*): the help of `--lr_warmup_steps`.
    """
    group.add_argument("--learning_rate", type=float, default=learning_rate, help=learning_rate_help)
    group.add_argument("--lr_scheduler", type=str, default=lr_scheduler)
    group.add_argument("--lr_warmup_steps", type=int, default=lr_warmup_steps, help=lr_warmup_steps_help)
    group.add_argument("--adam_beta1", type=float, default=adam_beta1)
    group.add_argument("--adam_beta2", type=float, default=0.999)
    group.add_argument("--adam_weight_decay", type=float, default=adam_weight_decay)
    group.add_argument("--adam_epsilon", type=float, default=1e-08)
    return group


def add_hub_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """`--push_to_hub` and where to: train_unconditional.py's Hub flags."""
    group.add_argument("--push_to_hub", action="store_true")
    group.add_argument(
        "--hub_token",
        type=str,
        default=None,
        help="Avoid: a token on the command line shows in `ps`, and `accelerate launch` prints the whole command "
        "when a run fails. By default the token of `hf auth login` or HF_TOKEN is used.",
    )
    group.add_argument("--hub_model_id", type=str, default=None)
    group.add_argument("--hub_private_repo", action="store_true")
    return group


def add_logging_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """The tracker, its folder, the launcher's rank and mixed precision: train_unconditional.py's logging flags."""
    group.add_argument("--logger", type=str, default="tensorboard", choices=["tensorboard", "wandb"])
    group.add_argument("--logging_dir", type=str, default="logs")
    group.add_argument("--local_rank", type=int, default=-1, help="Set by the launcher.")
    group.add_argument("--mixed_precision", type=str, default="no", choices=["no", "fp16", "bf16"])
    return group


def add_checkpoint_arguments(group: ArgumentGroup) -> ArgumentGroup:
    """How often checkpoints are written, how many are kept, and which one to resume."""
    group.add_argument("--checkpointing_steps", type=int, default=500)
    group.add_argument("--checkpoints_total_limit", type=int, default=None)
    group.add_argument("--resume_from_checkpoint", type=str, default=None, help="A checkpoint path or 'latest'.")
    return group
