"""A small CNN trained on Fashion-MNIST's training labels: the feature extractor of FD_cls, class coverage and confidence.

No pretrained network can be downloaded here, so the semantic metric is the one the MNIST literature uses in place of
FID: the Fréchet distance on the penultimate features of a classifier trained on the data set itself (FD_cls). A
spectral statistic cannot fake it: only images the classifier reads as the garments of the data move it.

    python benchmarks/fashion_classifier.py            # trains (a few CPU minutes) or loads the cached weights

The weights are cached in `benchmarks/runs/fashion_classifier/` (git-ignored) under a name derived from the training
settings, so a change of recipe retrains; the test accuracy is printed and stored beside them.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from diffusers_specreg.data import load_fashion_mnist  # noqa: E402

CACHE_DIR = ROOT / "benchmarks" / "runs" / "fashion_classifier"
RECIPE = dict(epochs=4, batch_size=128, learning_rate=2e-3, weight_decay=1e-4, seed=0, resolution=32, flip=True)
MIN_ACCURACY = 0.90
NUM_CLASSES = 10


class FashionClassifier(nn.Module):
    r"""
    Three conv blocks (32, 64, 128 channels; batch norm, ReLU, 2x max-pool) and two linear layers.

    `features(x)` is the 128-dimensional penultimate layer (after ReLU) that FD_cls is computed on; `forward(x)` the
    10 logits. Inputs are `[B, 1, 32, 32]` in `[-1, 1]` (the padded Fashion-MNIST of `--builtin_dataset
    fashion_mnist`).
    """

    def __init__(self, feature_dim: int = 128) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

        self.body = nn.Sequential(block(1, 32), block(32, 64), block(64, 128), nn.Flatten())
        self.embed = nn.Sequential(nn.Linear(128 * 4 * 4, feature_dim), nn.ReLU())
        self.head = nn.Sequential(nn.Dropout(0.3), nn.Linear(feature_dim, NUM_CLASSES))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """`[B, 1, 32, 32]` in `[-1, 1]` -> `[B, 128]` penultimate features."""
        return self.embed(self.body(images.float()))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(images))


def recipe_key(recipe: dict = RECIPE) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:12]


@torch.no_grad()
def accuracy(model: FashionClassifier, images: torch.Tensor, labels: torch.Tensor, batch_size: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(images), batch_size):
        logits = model(images[start : start + batch_size])
        correct += int((logits.argmax(1) == labels[start : start + batch_size]).sum())
    return correct / len(images)


def train_classifier(recipe: dict = RECIPE, log=print) -> tuple[FashionClassifier, dict]:
    """Train on the 60,000 training images (Adam, cosine decay, random flips); returns the model and its record."""
    torch.manual_seed(recipe["seed"])
    rng = np.random.default_rng(recipe["seed"])
    images, labels = load_fashion_mnist("train", recipe["resolution"])
    test_images, test_labels = load_fashion_mnist("test", recipe["resolution"])
    model = FashionClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=recipe["learning_rate"], weight_decay=recipe["weight_decay"])
    steps_per_epoch = len(images) // recipe["batch_size"]
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=recipe["learning_rate"], total_steps=recipe["epochs"] * steps_per_epoch
    )
    start = time.perf_counter()
    for epoch in range(recipe["epochs"]):
        model.train()
        order = torch.from_numpy(rng.permutation(len(images)))
        for step in range(steps_per_epoch):
            index = order[step * recipe["batch_size"] : (step + 1) * recipe["batch_size"]]
            batch = images[index]
            if recipe["flip"]:
                flip = torch.from_numpy(rng.random(len(index)) < 0.5)
                batch = torch.where(flip[:, None, None, None], batch.flip(-1), batch)
            loss = nn.functional.cross_entropy(model(batch), labels[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
        log(f"epoch {epoch + 1}/{recipe['epochs']}: test accuracy {accuracy(model, test_images, test_labels):.4f}")
    record = {
        "recipe": recipe,
        "test_accuracy": accuracy(model, test_images, test_labels),
        "train_seconds": time.perf_counter() - start,
        "torch": torch.__version__,
    }
    return model.eval(), record


def load_or_train(cache_dir: Path = CACHE_DIR, log=print) -> tuple[FashionClassifier, dict]:
    """The cached classifier of `RECIPE`, trained first if there is none; raises if it misses `MIN_ACCURACY`."""
    from safetensors.torch import load_file, save_file

    key = recipe_key()
    weights, info = cache_dir / f"classifier-{key}.safetensors", cache_dir / f"classifier-{key}.json"
    model = FashionClassifier()
    if weights.is_file() and info.is_file():
        model.load_state_dict(load_file(weights))
        record = json.loads(info.read_text())
    else:
        model, record = train_classifier(log=log)
        cache_dir.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, weights)
        info.write_text(json.dumps(record, indent=2) + "\n")
    if record["test_accuracy"] < MIN_ACCURACY:
        raise RuntimeError(f"The classifier reached {record['test_accuracy']:.3f} test accuracy (< {MIN_ACCURACY}).")
    return model.eval(), record


class ClassifierScores:
    r"""
    Streaming semantic scores of a set of images under the classifier: feature moments (for FD_cls), the predicted
    class histogram and the mean top-class confidence.
    """

    def __init__(self, model: FashionClassifier) -> None:
        from diffusers_specreg.metrics import FeatureStatistics

        self.model = model
        self.moments = FeatureStatistics(model.features)
        self.counts = np.zeros(NUM_CLASSES, dtype=np.int64)
        self.confidence_sum = 0.0

    @torch.no_grad()
    def update(self, images: torch.Tensor) -> None:
        self.moments.update(images)
        probabilities = torch.softmax(self.model(images.float()), dim=1)
        self.counts += np.bincount(probabilities.argmax(1).numpy(), minlength=NUM_CLASSES)
        self.confidence_sum += float(probabilities.max(1).values.sum())

    def summary(self, reference: ClassifierScores) -> dict:
        r"""
        `fd_cls` (Fréchet distance to `reference`'s features), `class_coverage` (Σ_k min(share_k, 1/10): 1 when
        every class gets its expected tenth, 0.1 for a single class), `confidence` (mean top-class probability) and
        the predicted class counts.
        """
        shares = self.counts / max(self.counts.sum(), 1)
        return {
            "fd_cls": self.moments.distance(reference.moments),
            "class_coverage": float(np.minimum(shares, 1.0 / NUM_CLASSES).sum()),
            "confidence": self.confidence_sum / max(int(self.counts.sum()), 1),
            "class_counts": self.counts.tolist(),
        }


class Features:
    """The cached classifier's penultimate features, for `python -m diffusers_specreg.evaluate --feature_extractor
    fashion_classifier:Features` (run with `PYTHONPATH=benchmarks`): images `[B, 1, 32, 32]` in `[-1, 1]` ->
    `[B, 128]`. Trains the classifier first when no cached one exists."""

    def __init__(self) -> None:
        self.model, _ = load_or_train()

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.features(images.float().cpu())


def main() -> int:
    model, record = load_or_train()
    print(json.dumps({k: v for k, v in record.items()}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
