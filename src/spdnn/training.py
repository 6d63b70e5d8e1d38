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


# ---------------------------------------------------------------- the training recipe
SCHEDULES = ("cosine", "constant")
WARMUP_FRACTION = 0.05  # cosine: linear warm-up over the first 5 % of the steps


def learning_rate(step: int, total_steps: int, peak: float, schedule: str) -> float:
    """Learning rate of step `step` (0-based) of `total_steps`.

    `constant`: peak throughout. `cosine`: linear warm-up from peak/W to peak over the first
    W = max(1, round(0.05·T)) steps, times a cosine decay from peak to 0 at step T. Deep plain-ReLU
    networks (24–120 sparse layers) need both: the warm-up keeps the first steps from blowing up,
    the decay lets SGD settle (measured in the README, "Training recipe")."""
    if schedule == "constant":
        return float(peak)
    if schedule != "cosine":
        raise UserError(f"--lr-schedule must be one of {', '.join(SCHEDULES)} (got {schedule!r})")
    warm = max(1, round(WARMUP_FRACTION * total_steps))
    return float(peak * min(1.0, (step + 1) / warm) * 0.5 * (1.0 + np.cos(np.pi * step / max(total_steps, 1))))


DIVERGENCE_FACTOR = 10.0


class DivergenceGuard:
    """Stops a run that diverged: a non-finite loss, or an epoch whose mean loss is more than
    10× the first step's. Every rank sees the same (allreduced) losses, so every rank stops."""

    def __init__(self):
        self.first: float | None = None
        self.epoch_losses: list[float] = []

    def check(self, step: int, epoch: int, loss: float, epoch_done: bool) -> None:
        if not np.isfinite(loss):
            raise UserError(f"training diverged at step {step + 1} (epoch {epoch + 1}): loss is {loss}; "
                            "lower --lr or use --lr-schedule cosine")
        if self.first is None:
            self.first = loss
        self.epoch_losses.append(loss)
        if epoch_done:
            mean = float(np.mean(self.epoch_losses))
            self.epoch_losses = []
            if mean > DIVERGENCE_FACTOR * self.first:
                raise UserError(f"training diverged in epoch {epoch + 1}: mean loss {mean:.4g} is more than "
                                f"{DIVERGENCE_FACTOR:g}x the first step's {self.first:.4g}; lower --lr")


INITS = ("he",)


def reinitialise(src, dst, init: str, seed: int, progress=None) -> dict:
    """The trainable network of the recipe: `src`'s sparsity pattern (so its partitions apply
    unchanged) with He-initialised weights, w ~ N(0, 2/r_i) for a row of r_i nonzeros, and zero
    biases; ymax and widths kept. The Graph Challenge's constant weights (1/16) and bias −0.3 are an
    inference benchmark: trained as they are, a deep RadiX-Net stays at chance on digits (README,
    "Training recipe"). Layer k draws from its own stream, seeded by (seed, k): streamed one layer
    at a time, and the same seed gives the same bytes. Returns the provenance written."""
    from . import __version__
    from .network import NetworkWriter, iter_layers, read_header
    from .read_ahead import read_ahead

    if init not in INITS:
        raise UserError(f"--init must be one of {', '.join(INITS)} (got {init!r})")
    h = read_header(src)
    prov = {"generator": "reinit", "init": init, "seed": seed, "source": str(src),
            "source_provenance": h.provenance, "spdnn_version": __version__}

    def reinitialised():
        for k, w, _ in iter_layers(src):
            rng = np.random.default_rng([seed, k])
            fan_in = np.diff(w.indptr)
            scale = np.repeat(np.sqrt(2.0 / np.maximum(fan_in, 1)), fan_in)
            w.data = (rng.standard_normal(w.nnz) * scale).astype(np.float32)
            yield k, w

    with NetworkWriter(dst, h.widths, h.ymax, h.activation, prov) as out:
        # The next layer read and drawn in a thread while this one is compressed and written.
        for k, w in read_ahead(reinitialised()):
            out.write_layer(k, w, np.zeros(w.shape[0], np.float32))
            if progress:
                progress(k, h.num_layers)
    return prov
