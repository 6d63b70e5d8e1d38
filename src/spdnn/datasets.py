"""Real datasets for training and MNIST-like Graph Challenge inputs.

`digits` is scikit-learn's bundled 8×8 handwritten digits (1,797 images, no download),
upsampled by nearest neighbour to √N×√N so that it fits any square input width N.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from .errors import UserError


@dataclass
class Dataset:
    x_train: np.ndarray  # (samples, n_0) float32
    y_train: np.ndarray  # int64 class ids
    x_test: np.ndarray
    y_test: np.ndarray
    name: str

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def upsample_square(images8: np.ndarray, neurons: int) -> np.ndarray:
    """(samples, 64) 8×8 images → (samples, neurons) by nearest neighbour; neurons must be square."""
    side = round(np.sqrt(neurons))
    if side * side != neurons:
        raise UserError(f"input width {neurons} is not a square number: digits images need √N×√N pixels")
    src = (np.arange(side) * 8) // side  # nearest source pixel per target row/column
    img = images8.reshape(-1, 8, 8)[:, src][:, :, src]
    return img.reshape(images8.shape[0], neurons)


DIGITS_CSV = ("datasets", "data", "digits.csv.gz")  # inside scikit-learn's package: 64 pixels 0..16, then the digit


def digits_raw() -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as (pixels / 16, digit). Read straight from the file scikit-learn ships:
    importing `sklearn.datasets` costs ~2 s of every training run and test (more than a tiny run's
    training); `load_digits` reads the same file, and stays the fallback should the file move."""
    spec = importlib.util.find_spec("sklearn")  # locates the package without importing it
    csv = Path(spec.submodule_search_locations[0], *DIGITS_CSV) if spec and spec.submodule_search_locations else None
    if csv is not None and csv.is_file():
        table = np.loadtxt(csv, delimiter=",", dtype=np.float32)
        return table[:, :-1] / np.float32(16.0), table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.data.astype(np.float32) / 16.0, d.target.astype(np.int64)


TEST_FRACTION = 0.2  # of the samples, held out as the test set (train and evaluate: --test-fraction)


def load_dataset(name: str | None, data: str | None, width: int, seed: int,
                 test_fraction: float = TEST_FRACTION) -> Dataset:
    """`digits` (upsampled to `width`) or an .npz with X (samples × width) and y; seeded split, a
    `test_fraction` of the samples held out."""
    if not 0 < test_fraction < 1:
        raise UserError(f"--test-fraction {test_fraction}: must be between 0 and 1")
    if data is not None:
        x, y = _load_npz(Path(data), width)
        name = Path(data).name
    elif name == "digits":
        x, y = digits_raw()
        x = upsample_square(x, width)
    else:
        raise UserError(f"unknown dataset {name!r}: use --dataset digits or --data FILE.npz")
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    n_test = max(1, round(test_fraction * len(y)))
    test, train = order[:n_test], order[n_test:]
    return Dataset(x[train], y[train], x[test], y[test], name)


def _load_npz(path: Path, width: int):
    if not path.exists():
        raise UserError(f"{path}: no such data file")
    try:
        with np.load(path) as z:
            if "X" not in z or "y" not in z:
                raise UserError(f"{path}: needs arrays X and y (has {sorted(z.files)})")
            x, y = z["X"], z["y"]
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    if x.ndim != 2 or x.shape[1] != width:
        raise UserError(f"{path}: X has shape {x.shape}, the network's input layer has width {width}")
    if y.shape != (x.shape[0],) or not np.issubdtype(y.dtype, np.integer) or y.min() < 0:
        raise UserError(f"{path}: y must hold one non-negative integer class per row of X")
    return x.astype(np.float32), y.astype(np.int64)


def digits_images(neurons: int, threshold: float) -> sp.csr_matrix:
    """Binarised, upsampled digits in the Graph Challenge image format (values 1)."""
    if not 0.0 <= threshold < 1.0:
        raise UserError(f"--threshold must be in [0, 1) (got {threshold})")
    x, _ = digits_raw()
    binary = (upsample_square(x, neurons) > threshold).astype(np.float32)
    return sp.csr_matrix(binary)
