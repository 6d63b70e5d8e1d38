"""Serial reference: Graph Challenge inference and mini-batch SGD on a sparse network.

Activations are kept neuron-major, X^k of shape (n_k, B): a layer is one CSR × dense SpMM.
These functions are the oracle the distributed runtime is tested against.
"""

from __future__ import annotations

import numpy as np

from .network import Network


# ---------------------------------------------------------------- inference (challenge semantics)
def gc_layer(w, bias, x, ymax):
    """z = W x; bias only on nonzero entries of z (the challenge's stored entries); clip to [0, ymax].

    In place after the SpMM: no Python work per entry, float32 throughout.
    """
    z = w @ x
    np.add(z, bias[:, None], out=z, where=z != 0)
    np.clip(z, 0.0, ymax, out=z)
    return z


def drop_dead(x, ids, alive):
    """Keep only samples still alive: a sample with all-zero activations stays zero (no bias is
    added to zero entries), so its remaining layers are skipped. Copies only when worth it."""
    if alive.all():
        return x, ids
    return np.ascontiguousarray(x[:, alive]), ids[alive]


def gc_infer(net: Network, images, batch: int = 8192):
    """Challenge inference on images (n_images × n_0, sparse or dense).

    Returns (categories: sorted 0-based ids of images with any nonzero output, final activations
    as (n_images × n_L) float32). Activations are dense (n × B) blocks: on these networks they
    become dense within a few layers; dead samples are dropped as they die.
    """
    n_images = images.shape[0]
    out = np.zeros((n_images, net.widths[-1]), dtype=np.float32)
    for lo in range(0, n_images, batch):
        hi = min(n_images, lo + batch)
        x = _dense_block(images[lo:hi]).T.copy()  # (n_0, B)
        ids = np.arange(lo, hi)
        for w, b in zip(net.layers, net.biases):
            x = gc_layer(w, b, x, net.ymax)
            x, ids = drop_dead(x, ids, x.any(axis=0))
            if not ids.size:
                break
        out[ids] = x.T
    return np.flatnonzero(out.any(axis=1)), out


def _dense_block(a):
    return np.asarray(a.toarray() if hasattr(a, "toarray") else a, dtype=np.float32)


# ---------------------------------------------------------------- training
def activation(z, ymax):
    return np.clip(z, 0.0, ymax)


def activation_grad(z, ymax):
    """f'(z) for f = min(max(z, 0), ymax): 1 strictly inside (0, ymax), else 0."""
    return ((z > 0) & (z < ymax)).astype(z.dtype)


def loss_and_delta(logits, y, loss: str, denom: int | None = None):
    """Loss (mean over the batch) and δ^L = ∂loss/∂z^L for logits (n_L, B).

    Cross-entropy: softmax over all n_L outputs, class c ↔ output neuron c.
    MSE: ½‖z − onehot(y)‖² averaged over the batch. `denom` (default B) is the global batch size
    when the batch is split over ranks (data-parallel): the loss returned is then a partial sum.
    """
    n_out, b = logits.shape
    denom = b if denom is None else denom
    if loss == "cross-entropy":
        shifted = logits - logits.max(axis=0, keepdims=True)
        e = np.exp(shifted)
        p = e / e.sum(axis=0, keepdims=True)
        value = float(-np.log(np.maximum(p[y, np.arange(b)], 1e-30)).sum() / denom)
        delta = p
        delta[y, np.arange(b)] -= 1.0
        return value, (delta / denom).astype(np.float32)
    target = np.zeros_like(logits)
    target[y, np.arange(b)] = 1.0
    diff = logits - target
    return float(0.5 * (diff**2).sum() / denom), (diff / denom).astype(np.float32)


def pattern_grad(w, delta, x, chunk_elems: int = 1 << 16):
    """∂L/∂W on W's fixed pattern (an SDDMM): g_e = Σ_b δ[row_e, b] · x[col_e, b].

    Works in chunks whose gathered activations (≈ chunk_elems floats) stay in cache: gathering
    all nnz × B at once was 10× slower at B = 256. Rows of equal length (RadiX-Net, random
    generator) use a batched matvec per row and never gather δ.
    """
    n_rows, b = delta.shape
    counts = np.diff(w.indptr)
    out = np.empty(w.nnz, dtype=np.float32)
    if w.nnz == 0:
        return out
    cols = w.indices
    r = int(counts[0])
    if r > 0 and b >= 8 and np.all(counts == r):  # tiny batches: one einsum is cheaper
        rows_per_chunk = max(1, chunk_elems // (r * b))
        for lo in range(0, n_rows, rows_per_chunk):
            hi = min(n_rows, lo + rows_per_chunk)
            xg = np.take(x, cols[lo * r:hi * r], axis=0).reshape(hi - lo, r, b)
            out[lo * r:hi * r] = np.matmul(xg, delta[lo:hi, :, None]).reshape(-1)
        return out
    rows = np.repeat(np.arange(n_rows), counts)
    step = max(1, chunk_elems // b)
    for lo in range(0, w.nnz, step):
        hi = min(w.nnz, lo + step)
        out[lo:hi] = np.einsum("eb,eb->e", np.take(delta, rows[lo:hi], axis=0), np.take(x, cols[lo:hi], axis=0))
    return out


def forward(net: Network, x0):
    """Training forward pass: hidden layers f(z) = clip(z, 0, ymax), last layer linear (logits)."""
    xs, zs = [x0], []
    for k, (w, b) in enumerate(zip(net.layers, net.biases), start=1):
        z = w @ xs[-1] + b[:, None]
        zs.append(z)
        xs.append(activation(z, net.ymax) if k < net.num_layers else z)
    return xs, zs


def sgd_step(net: Network, x0, y, lr: float, loss: str = "cross-entropy") -> float:
    """One SGD step in place; returns the batch loss. x0: (n_0, B) float32."""
    xs, zs = forward(net, x0)
    value, delta = loss_and_delta(zs[-1], y, loss)
    for k in range(net.num_layers, 0, -1):
        w = net.layers[k - 1]
        grad_w = pattern_grad(w, delta, xs[k - 1])
        grad_b = delta.sum(axis=1)
        if k > 1:  # δ^0 is never needed
            delta = (w.T @ delta) * activation_grad(zs[k - 2], net.ymax)
        w.data -= lr * grad_w
        net.biases[k - 1] -= lr * grad_b
    return value


def predict(net: Network, x):
    """Logits (n_L × samples) of the training forward pass for inputs x (samples × n_0)."""
    _, zs = forward(net, np.ascontiguousarray(x.T, dtype=np.float32))
    return zs[-1]
