"""``digits-vit``: a small ViT trained from scratch on scikit-learn's 8x8 digits.

The 1797 images (pixel values 0..16, scaled to 0..1) ship with scikit-learn, so nothing is
downloaded. Patches are 2x2: an 8x8 image becomes 16 tokens (plus [CLS]), enough for attention
to matter while an epoch stays around a second on two CPU cores. 4x4 patches would leave only
4 tokens of 16 pixels each, and the model would be little more than an MLP.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from transformers import ViTConfig, ViTForImageClassification

from ._base import Reporter
from ._training import (
    Hyperparameters,
    TrainingJob,
    batches_of,
    check_options,
    fit,
    int_option,
    pick_device,
    resolve_hyperparameters,
    seed_everything,
    stratified_split,
)

__all__ = ["OPTIONS", "PATCH_SIZE", "train"]

OPTIONS = ("max_samples",)
PATCH_SIZE = 2
IMAGE_SIZE = 8
NUM_CLASSES = 10
NUM_IMAGES = 1797
#: a stratified 80/20 split needs a validation example of every digit
MIN_SAMPLES = 50


def load_data(*, max_samples: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, 1, 8, 8) scaled to 0..1 and labels; a stratified sample when capped."""
    digits = load_digits()
    images = digits.images.astype(np.float32) / 16.0
    labels = digits.target.astype(np.int64)
    if max_samples < len(labels):
        images, _, labels, _ = train_test_split(
            images, labels, train_size=max_samples, stratify=labels, random_state=seed
        )
    return torch.from_numpy(images).unsqueeze(1), torch.from_numpy(labels)


def build_model(hp: Hyperparameters) -> ViTForImageClassification:
    config = ViTConfig(
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_channels=1,
        num_labels=NUM_CLASSES,
        hidden_size=hp.hidden_size,
        num_hidden_layers=hp.num_layers,
        num_attention_heads=hp.num_heads,
        intermediate_size=hp.intermediate_size,
        hidden_dropout_prob=hp.dropout,
        attention_probs_dropout_prob=hp.dropout,
    )
    return ViTForImageClassification(config)


def train(
    params: dict[str, Any],
    reporter: Reporter,
    *,
    options: dict[str, Any],
    max_epochs: int,
    seed: int,
) -> dict[str, float] | None:
    """Train the ViT; reports ``val_accuracy``, ``val_loss`` and the epoch metrics."""
    hp = resolve_hyperparameters(params)
    check_options(options, OPTIONS)
    max_samples = int_option(options, "max_samples", default=NUM_IMAGES, minimum=MIN_SAMPLES)
    device = pick_device()
    seed_everything(seed)
    images, labels = load_data(max_samples=max_samples, seed=seed)
    train_idx, val_idx = stratified_split(labels.numpy(), seed=seed)
    train_x, train_y = images[train_idx], labels[train_idx]
    generator = torch.Generator().manual_seed(seed)
    job = TrainingJob(
        model=build_model(hp),
        train_batches=lambda: batches_of(
            {"pixel_values": train_x}, train_y, hp.batch_size, generator=generator
        ),
        train_samples=len(train_y),
        val_batches=batches_of({"pixel_values": images[val_idx]}, labels[val_idx], 256),
    )
    return fit(job, hp, reporter, max_epochs=max_epochs, device=device)
