"""What serial and distributed training share: the batch schedule, losses, accuracy."""

from __future__ import annotations

import numpy as np

from .errors import UserError

LOSSES = ("cross-entropy", "mse")


def batch_schedule(n_train: int, batch_size: int, epochs: int, seed: int):
    """Yield (step, epoch, sample ids) — identical on every rank and in the serial reference."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be >= 1 (got {batch_size})")
    if epochs < 1:
        raise UserError(f"--epochs must be >= 1 (got {epochs})")
    step = 0
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(n_train)
        for lo in range(0, n_train, batch_size):
            yield step, epoch, order[lo:lo + batch_size]
            step += 1


def check_classes(n_out: int, num_classes: int) -> None:
    if n_out < num_classes:
        raise UserError(f"the last layer has {n_out} outputs but the dataset has {num_classes} classes")


def accuracy(logits: np.ndarray, y: np.ndarray, num_classes: int) -> float:
    """logits (n_L, B); class c ↔ output neuron c (outputs beyond the classes are ignored)."""
    return float((logits[:num_classes].argmax(axis=0) == y).mean())
