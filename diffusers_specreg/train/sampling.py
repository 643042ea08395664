"""The order of the training data and the run's learning-rate warm-up: a permutation per epoch from (seed,
epoch), so that a resumed run replays its epoch's data exactly."""

from __future__ import annotations

import torch


class EpochShuffleSampler(torch.utils.data.Sampler):
    """A fresh permutation each epoch from (seed, epoch): resuming at an epoch replays exactly its data order."""

    def __init__(self, num_samples: int, seed: int):
        self.num_samples, self.seed, self.epoch = num_samples, seed, 0

    def set_epoch(self, epoch: int):
        self.epoch = epoch

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.num_samples, generator=generator).tolist())

    def __len__(self) -> int:
        return self.num_samples


def warmup_warning(lr_warmup_steps: int, max_train_steps: int) -> str | None:
    """A warning when the learning-rate warm-up is as long as the run: the rate would never reach its value."""
    if lr_warmup_steps >= max_train_steps:
        return (
            f"--lr_warmup_steps {lr_warmup_steps} is not shorter than the run's {max_train_steps} steps: the learning "
            f"rate never reaches --learning_rate. Lower --lr_warmup_steps (e.g. {max(1, max_train_steps // 10)})."
        )
    return None
