"""Pruning stage: train a dense MLP, prune it by magnitude, fine-tune with the pattern fixed.

Rule (documented, tested): **per-layer** scope keeps, in every layer, the
n_keep = max(1, round(density · n_weights)) weights of largest |w|; **global** scope keeps the
round(density · total) largest |w| over all layers (at least one per layer, so the network
stays connected). Ties are broken by the lower flat (row-major) index. Biases are never pruned.

Schedules: `oneshot` prunes once then fine-tunes `finetune_epochs`; `iterative` prunes in
`steps` rounds to geometrically decreasing densities (1 → density), fine-tuning after each with
the pattern fixed (pruned weights stay exactly zero).

Training here is NumPy (dense BLAS with a mask): at these sizes a framework adds install
weight and nothing else.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from . import __version__
from .datasets import Dataset, load_dataset
from .errors import UserError
from .network import Network
from .training import accuracy, batch_schedule, check_classes

SCOPES = ("layer", "global")
SCHEDULES = ("oneshot", "iterative")


# ---------------------------------------------------------------- masked dense training
def forward_dense(ws, bs, x, ymax=np.inf):
    xs, zs = [x], []
    for k, (w, b) in enumerate(zip(ws, bs)):
        z = w @ xs[-1] + b[:, None]
        zs.append(z)
        xs.append(np.clip(z, 0, ymax) if k < len(ws) - 1 else z)
    return xs, zs


def train_masked(ws, bs, masks, data: Dataset, epochs: int, batch: int, lr: float, seed: int, momentum=0.9):
    """Mini-batch SGD with momentum, softmax cross-entropy; masked weights stay zero."""
    vel_w = [np.zeros_like(w) for w in ws]
    vel_b = [np.zeros_like(b) for b in bs]
    for _, _, ids in batch_schedule(len(data.y_train), batch, epochs, seed):
        x = np.ascontiguousarray(data.x_train[ids].T)
        y = data.y_train[ids]
        xs, zs = forward_dense(ws, bs, x)
        z = zs[-1] - zs[-1].max(axis=0)
        p = np.exp(z)
        p /= p.sum(axis=0)
        p[y, np.arange(len(y))] -= 1.0
        delta = p / len(y)
        for k in range(len(ws) - 1, -1, -1):
            gw = delta @ xs[k].T
            gb = delta.sum(axis=1)
            if k > 0:
                delta = (ws[k].T @ delta) * (zs[k - 1] > 0)
            if masks is not None:
                gw *= masks[k]
            vel_w[k] = momentum * vel_w[k] - lr * gw
            vel_b[k] = momentum * vel_b[k] - lr * gb
            ws[k] += vel_w[k]
            bs[k] += vel_b[k]
    return ws, bs


def dense_accuracy(ws, bs, data: Dataset) -> float:
    _, zs = forward_dense(ws, bs, np.ascontiguousarray(data.x_test.T))
    return accuracy(zs[-1], data.y_test, data.num_classes)


def train_dense(widths, dataset, data_path, epochs, seed, lr=0.05, batch=32) -> Network:
    if len(widths) < 2:
        raise UserError("--widths needs at least an input and an output width")
    data = load_dataset(dataset, data_path, widths[0], seed)
    check_classes(widths[-1], data.num_classes)
    rng = np.random.default_rng(seed)
    ws = [rng.normal(0, np.sqrt(2.0 / widths[k]), (widths[k + 1], widths[k])).astype(np.float32)
          for k in range(len(widths) - 1)]
    bs = [np.zeros(widths[k + 1], np.float32) for k in range(len(widths) - 1)]
    ws, bs = train_masked(ws, bs, None, data, epochs, batch, lr, seed)
    acc = dense_accuracy(ws, bs, data)
    prov = {"generator": "train-dense", "dataset": data.name, "data": data_path, "widths": list(widths),
            "epochs": epochs, "seed": seed, "lr": lr, "batch_size": batch, "test_accuracy": acc,
            "spdnn_version": __version__}
    return Network([sp.csr_matrix(w) for w in ws], bs, provenance=prov)


# ---------------------------------------------------------------- magnitude pruning
def magnitude_masks(ws, density: float, scope: str = "layer") -> list[np.ndarray]:
    """Boolean keep-masks by the rule in the module docstring."""
    if not 0 < density <= 1:
        raise UserError(f"--density must be in (0, 1] (got {density})")
    if scope not in SCOPES:
        raise UserError(f"--scope must be one of {', '.join(SCOPES)}")
    if scope == "layer":
        return [_keep_largest(np.abs(w).ravel(), max(1, round(density * w.size))).reshape(w.shape) for w in ws]
    flat = np.concatenate([np.abs(w).ravel() for w in ws])
    keep = _keep_largest(flat, max(len(ws), round(density * flat.size)))
    masks, pos = [], 0
    for w in ws:
        m = keep[pos:pos + w.size].reshape(w.shape)
        if not m.any():  # keep the layer connected
            m.ravel()[np.argmax(np.abs(w).ravel())] = True
        masks.append(m)
        pos += w.size
    return masks


def _keep_largest(values: np.ndarray, n_keep: int) -> np.ndarray:
    order = np.argsort(-values, kind="stable")  # ties: lower index first
    keep = np.zeros(values.size, bool)
    keep[order[:n_keep]] = True
    return keep


def prune(dense: Network, density: float, scope: str, schedule: str, finetune_epochs: int, steps: int,
          dataset: str | None, data_path: str | None, seed: int, lr: float = 0.02, source: str = "") -> Network:
    if schedule not in SCHEDULES:
        raise UserError(f"--schedule must be one of {', '.join(SCHEDULES)}")
    ws = [w.toarray().astype(np.float32) for w in dense.layers]
    bs = [b.copy() for b in dense.biases]
    masks = magnitude_masks(ws, density, scope)  # validates density/scope before any work
    need_data = finetune_epochs > 0
    data = None
    if need_data:
        prov = dense.provenance
        dataset = dataset or (prov.get("dataset") if not prov.get("data") else None)
        data_path = data_path or prov.get("data")
        if dataset is None and data_path is None:
            raise UserError("fine-tuning needs --dataset or --data (the dense file records neither)")
        data = load_dataset(dataset, data_path, dense.widths[0], seed)
    densities = [density] if schedule == "oneshot" else list(np.geomspace(1.0, density, steps + 1)[1:])
    for n, d in enumerate(densities):
        masks = magnitude_masks(ws, float(d), scope)
        ws = [w * m for w, m in zip(ws, masks)]
        if need_data:
            ws, bs = train_masked(ws, bs, masks, data, finetune_epochs, 32, lr, seed + n + 1)
    acc = dense_accuracy(ws, bs, data) if data is not None else None
    prov = {"generator": "prune", "dense_source": source, "dense_provenance": dense.provenance,
            "density": density, "scope": scope, "schedule": schedule, "steps": steps if schedule == "iterative" else 1,
            "finetune_epochs": finetune_epochs, "seed": seed, "test_accuracy": acc, "spdnn_version": __version__}
    layers = [_masked_csr(w, m) for w, m in zip(ws, masks)]
    return Network(layers, bs, ymax=dense.ymax, provenance=prov)


def _masked_csr(w: np.ndarray, mask: np.ndarray) -> sp.csr_matrix:
    """CSR over the mask itself: a kept weight that fine-tuning drove to exactly 0 stays in the pattern."""
    rows, cols = np.nonzero(mask)
    return sp.csr_matrix((w[rows, cols], (rows, cols)), shape=w.shape)


def file_sha256(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


# ---------------------------------------------------------------- bring your own model
def import_npz(path, transpose: bool = False) -> Network:
    """Layers W1..WL (dense 2-D arrays, or CSR as Wk_data/Wk_indices/Wk_indptr/Wk_shape), biases bk."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such file")
    try:
        z = np.load(path)
    except (OSError, ValueError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    with z:
        layers, biases = [], []
        k = 1
        while f"W{k}" in z.files or f"W{k}_data" in z.files:
            if f"W{k}" in z.files:
                w = z[f"W{k}"]
                if w.ndim != 2:
                    raise UserError(f"{path}: W{k} is not a 2-D array (shape {w.shape})")
                w = sp.csr_matrix(w.T if transpose else w)
            else:
                shape = tuple(int(s) for s in z[f"W{k}_shape"])
                w = sp.csr_matrix((z[f"W{k}_data"], z[f"W{k}_indices"], z[f"W{k}_indptr"]), shape=shape)
                w = w.T.tocsr() if transpose else w
            w.eliminate_zeros()
            layers.append(w)
            b = z[f"b{k}"] if f"b{k}" in z.files else np.zeros(w.shape[0], np.float32)
            if b.shape != (w.shape[0],):
                raise UserError(f"{path}: b{k} has shape {b.shape}, layer {k} has {w.shape[0]} outputs")
            biases.append(b)
            k += 1
    if not layers:
        raise UserError(f"{path}: no layers (expected arrays W1, W2, ... in the paper orientation (out × in))")
    _check_chain(layers, path, transpose)
    return Network(layers, biases, provenance={"generator": "import-npz", "source": path.name,
                                               "sha256": file_sha256(path), "transpose": transpose,
                                               "spdnn_version": __version__})


def _check_chain(layers, path, transpose):
    for k in range(1, len(layers)):
        if layers[k].shape[1] != layers[k - 1].shape[0]:
            hint = "" if transpose else " (arrays stored as in × out? use --transpose)"
            raise UserError(f"{path}: layer {k + 1} expects {layers[k].shape[1]} inputs but layer {k} has "
                            f"{layers[k - 1].shape[0]} outputs{hint}")


def import_mtx(paths, transpose: bool = False) -> Network:
    """One Matrix Market file per layer, in order."""
    from scipy.io import mmread

    layers = []
    for p in paths:
        if not Path(p).exists():
            raise UserError(f"{p}: no such file")
        try:
            w = sp.csr_matrix(mmread(p))
        except (ValueError, OSError) as e:
            raise UserError(f"{p}: not a Matrix Market matrix ({e})") from None
        layers.append(w.T.tocsr() if transpose else w)
    _check_chain(layers, paths[-1], transpose)
    return Network(layers, [np.zeros(w.shape[0], np.float32) for w in layers],
                   provenance={"generator": "import-mtx", "sources": [Path(p).name for p in paths],
                               "sha256": [file_sha256(p) for p in paths], "spdnn_version": __version__})
