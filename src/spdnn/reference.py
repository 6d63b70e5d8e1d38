"""Serial reference: Graph Challenge inference and mini-batch SGD on a sparse network.

Activations are kept neuron-major, X^k of shape (n_k, B): a layer is one CSR × dense SpMM.
These functions are the oracle the distributed runtime is tested against.
"""

from __future__ import annotations

import numpy as np

from .kernels import layer_kernels, masked_delta, row_sums
from .network import Network


# ---------------------------------------------------------------- inference (challenge semantics)
def gc_layer(w, bias, x, ymax):
    """z = W x; bias only on nonzero entries of z (the challenge's stored entries); clip to [0, ymax].

    In place after the SpMM: no Python work per entry, float32 throughout. The definition the
    compiled kernel (`kernels.SparseLayer.gc`, used by `gc_infer` and the MPI runtime) is tested against.
    """
    z = w @ x
    np.add(z, bias[:, None], out=z, where=z != 0)
    np.clip(z, 0.0, ymax, out=z)
    return z


def drop_dead(x, ids, alive):
    """Keep only samples still alive: a sample with all-zero activations stays zero (no bias is
    added to zero entries), so its remaining layers are skipped. Copies only when worth it, and
    then once: np.compress writes the kept columns row by row, where x[:, alive] made a strided
    array that a second copy made contiguous (12× slower, and one more activation block in memory:
    0.96 against 0.08 s at N = 65536, 1,797 samples)."""
    if alive.all():
        return x, ids
    return np.compress(alive, x, axis=1), ids[alive]


def gc_infer(net: Network, images, batch: int = 8192):
    """Challenge inference on images (n_images × n_0, sparse or dense).

    Returns (categories: sorted 0-based ids of images with any nonzero output, final activations
    as (n_images × n_L) float32). Activations are dense (n × B) blocks: on these networks they
    become dense within a few layers; dead samples are dropped as they die.
    """
    n_images = images.shape[0]
    out = np.zeros((n_images, net.widths[-1]), dtype=np.float32)
    for lo in range(0, n_images, batch):
        ids, x = gc_infer_batch(zip(net.layers, net.biases), net.ymax, images[lo:lo + batch], lo)
        if ids.size:
            out[ids] = x.T
    return np.flatnonzero(out.any(axis=1)), out


def gc_infer_batch(layers, ymax: float, images, lo: int = 0):
    """One batch of images (rows lo, lo + 1, …) through `layers`, an iterable of (W^k, b^k): from a
    file (`network.iter_layers`) one layer is in memory at a time, and a batch whose samples all
    died reads no further. Returns (ids of the samples alive at the end, their final activations
    as an n_L × survivors block; no ids when all died, whatever the block's height)."""
    x = samples_as_columns(images)  # (n_0, B)
    ids = np.arange(lo, lo + images.shape[0])
    for w, b in layers:
        x, alive = layer_kernels(w).gc(b, x, ymax)  # = gc_layer, compiled and fused (kernels.py)
        x, ids = drop_dead(x, ids, alive)
        if not ids.size:
            break
    return ids, x


def samples_as_columns(a) -> np.ndarray:
    """Samples × n_0 (sparse or dense) → a contiguous float32 n_0 × samples block, written once
    (a sparse block's transpose is made dense directly, not dense then transposed and copied)."""
    if hasattr(a, "toarray"):
        return a.T.astype(np.float32).toarray(order="C")
    return np.ascontiguousarray(np.asarray(a, dtype=np.float32).T)


# ---------------------------------------------------------------- training
def class_loss(logits, rows, y, loss: str, num_classes: int, denom: int, reduce=None):
    """Loss and δ^L = ∂loss/∂z^L for the output rows `rows` (sorted global ids) of logits (r, B).

    The readout is the first `num_classes` outputs: class c ↔ output neuron c; outputs ≥ C take no
    part in the loss and get δ = 0 (a square Graph Challenge network trains on 10 classes).
    Cross-entropy: softmax over the class outputs; MSE: ½‖z − onehot(y)‖² over them. The loss is
    summed over the samples and divided by `denom` (the global batch size).
    `reduce(array, op)` (op "max" or "sum") combines across ranks when the output rows are spread
    over ranks (row-wise); serially (None) it is the identity. Returns (loss, δ float32)."""
    reduce = reduce or (lambda a, op: a)
    b = logits.shape[1]
    is_class = rows < num_classes
    z = logits[is_class]
    delta = np.zeros(logits.shape, np.float32)
    pos = np.searchsorted(rows[is_class], y)  # where each sample's target row sits, if I own it
    mine = np.flatnonzero((pos < z.shape[0]) & (rows[is_class][np.minimum(pos, max(z.shape[0] - 1, 0))] == y)
                           if z.shape[0] else np.zeros(b, bool))
    if loss == "cross-entropy":
        zmax = reduce(z.max(axis=0) if z.shape[0] else np.full(b, -np.inf, z.dtype), "max")
        e = np.exp(z - zmax[None, :])
        # The denominator in float64 for the same reason as the backward pass: the ranks' partial
        # sums added in another order give the serial result once rounded.
        d = e / reduce(e.sum(axis=0, dtype=np.float64), "sum")[None, :]  # softmax probabilities
        part = float(-np.log(np.maximum(d[pos[mine], mine], 1e-30)).sum())
        d[pos[mine], mine] -= 1.0
    else:
        d = z.copy()
        d[pos[mine], mine] -= 1.0
        part = float(0.5 * (d**2).sum())
    delta[is_class] = d / denom
    value = float(reduce(np.array([part]), "sum")[0]) / denom
    return value, delta


def loss_and_delta(logits, y, loss: str, num_classes: int | None = None, denom: int | None = None):
    """`class_loss` of a whole output layer on one process (all rows held). C defaults to all outputs."""
    rows = np.arange(logits.shape[0])
    c = logits.shape[0] if num_classes is None else num_classes
    return class_loss(logits, rows, y, loss, c, logits.shape[1] if denom is None else denom)


def pattern_grad(w, delta, x):
    """∂L/∂W on W's fixed pattern (an SDDMM): g_e = Σ_b δ[row_e, b] · x[col_e, b], in float64.

    The products of float32 values are exact in float64 and the sum over the batch nearly so:
    rounded once by the caller, a gradient summed over the batch in parts (data-parallel ranks,
    each with its share of the samples) equals the one summed at once. Compiled, rows of a group
    together (`kernels.SparseLayer.pattern_grad`)."""
    return layer_kernels(w).pattern_grad(delta, x)


def forward(net: Network, x0, keep: bool = True):
    """Training forward pass: hidden layers f(z) = clip(z, 0, ymax), last layer linear (logits);
    keep=False for evaluation (`forward_layers`)."""
    return forward_layers(net.layers, net.biases, x0, net.ymax, keep=keep)


def forward_layers(layers, biases, x0, ymax, expand=None, keep: bool = True):
    """xs[k−1] = what layer k reads, zs[k−1] = its pre-activations. `expand(k, x)` turns a layer's
    owned activations into the vector layer k reads (row-wise: the expand exchange). keep=False
    (evaluation: no backward pass follows): xs = [] and zs = [z_L], each layer's blocks dropped
    once the next is computed, so memory is one layer's activations, not L layers' (a 16384×120
    row-wise run's evaluation of 360 test digits took 3.3 GB a rank more)."""
    xs, zs, x = [], [], x0
    for k, (w, b) in enumerate(zip(layers, biases), start=1):
        x = expand(k, x) if expand else x
        z, h = layer_kernels(w).forward(b, x, ymax, hidden=k < len(layers))  # z = W x + b, h = f(z)
        if keep:
            xs.append(x)
        if keep or k == len(layers):
            zs.append(z)
        x = h
    return xs, zs


def backpropagate(layers, xs, zs, delta, ymax, update, fold=None):
    """From δ^L down to layer 1: update(k, ∂L/∂W^k on the pattern, ∂L/∂b^k) for k = L..1.

    δ^{k−1} = fold(W^kᵀ δ^k) ⊙ f'(z^{k−1}) uses W^k before its update. `fold(k, y)` returns the
    partial sums to the owners of layer k−1's neurons (row-wise); serially it is the identity.
    δ^0 is never needed: layer 1 has no fold. The one backward pass of the serial reference, the
    row-wise runtime and the data-parallel runtime."""
    for k in range(len(layers), 0, -1):
        # ∂L/∂W (float64: see pattern_grad) and Wᵀ δ, summed in float64 and rounded to float32
        # once: the products of float32 values are exact in float64 and the sums nearly so, so the
        # fold's other order of summation (own partial sums plus each neighbour's) rounds to the
        # serial float32 result. In float32 the orders differ in the last bit, and a deep network
        # amplifies that step after step.
        grad_w, back = layer_kernels(layers[k - 1]).backward(delta, xs[k - 1], transpose=k > 1)
        grad_b = row_sums(delta)
        if k > 1:
            delta = masked_delta(fold(k, back) if fold else back, zs[k - 2], ymax)
        update(k, grad_w, grad_b)


def sgd_apply(w_data, bias, lr: float, grad_w, grad_b) -> None:
    """W ← W − lr·∂L/∂W on the fixed pattern, b ← b − lr·∂L/∂b, in float32, gradients rounded to
    float32 first (they arrive as float64 sums). The one update of every runtime."""
    w_data -= np.float32(lr) * grad_w.astype(np.float32)
    bias -= np.float32(lr) * grad_b.astype(np.float32)


def sgd_update(layers, biases, lr: float):
    """The update callback of plain SGD for `backpropagate`."""
    def update(k, grad_w, grad_b):
        sgd_apply(layers[k - 1].data, biases[k - 1], lr, grad_w, grad_b)

    return update


def sgd_step(net: Network, x0, y, lr: float, loss: str = "cross-entropy", num_classes: int | None = None) -> float:
    """One SGD step in place; returns the batch loss. x0: (n_0, B) float32."""
    xs, zs = forward(net, x0)
    value, delta = loss_and_delta(zs[-1], y, loss, num_classes)
    backpropagate(net.layers, xs, zs, delta, net.ymax, sgd_update(net.layers, net.biases, lr))
    return value


def predict(net: Network, x):
    """Logits (n_L × samples) of the training forward pass for inputs x (samples × n_0)."""
    _, zs = forward(net, np.ascontiguousarray(x.T, dtype=np.float32), keep=False)
    return zs[-1]
