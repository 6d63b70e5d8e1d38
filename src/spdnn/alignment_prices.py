"""Prices on the alignment cells of a layer, so that the class-count bound counts each neuron once.

The class-count bound (`bound.py`) bounds each part's alignment on its own: part p of layer t owns
some neurons of layer t − 1 and saves a word for each one whose column class p reads. Every part
is allowed the densest cells of M_t (cell (a, c): neurons of layer-(t−1) row class a in layer-t
column class c), so all K parts can claim the same few dense cells, while a neuron has one owner:
Σ_p x_p ≤ M_t cell by cell. Moving that constraint into the objective with a price π ∈ [0, 1] per
cell (weak duality, as for the coverage multipliers μ):

    Σ_p align_p ≤ Σ_p align_p(M_t ∘ (1 − π)) + ⟨π, M_t⟩,

so each part's tables are built on the priced matrix M_t ∘ (1 − π) and ⟨π, M_t⟩ is added back once
for the layer, not once per part. Every π gives a valid bound. A good π makes the cells expensive
where parts compete for them; it is chosen per layer, before the tables, by projected subgradient
steps on

    F(π) = K · max_B Σ_{(a,c) ∈ B} (1 − π_ac) M_ac + ⟨π, M_t⟩

over the smallest blocks a part can hold: one row class a of layer t − 1 times the column classes
that one row class of layer t reads (F is the LP dual of packing K such blocks into M_t).
Larger blocks (a part's typical R/K classes, or a mix of sizes) were measured and bound less: the
bound's Lagrangian parts are mixtures of small and large states, and prices fitted to the large
ones are paid for (⟨π, M⟩) where the small ones do not lose alignment. Where the prices still do
not pay (K = 2 on the real network: the K parts do not compete for cells), `bound.py` keeps the
bound without them.
"""

from __future__ import annotations

import numpy as np

PRICE_STEPS = 150  # subgradient steps per layer
PRICE_BLOCKS = 1 << 16  # most blocks per layer (64 × 64 on Graph Challenge layers); more: no prices


def fits(n_rows_prev: int, n_rows: int) -> bool:
    """Whether a layer has few enough row classes for prices (PRICE_BLOCKS blocks at most)."""
    return n_rows_prev * n_rows <= PRICE_BLOCKS


def single_class_blocks(shape, row_reads) -> np.ndarray | None:
    """The blocks of `cell_prices`, as flat indices into an M_t of `shape` (rows padded with
    M_t.size): every row class of layer t − 1 with every set of column classes that one row class of
    layer t reads (row_reads[g]); None where there are more than PRICE_BLOCKS (layers of singleton
    classes: random and pruned networks, where the class-count bound is 0 anyway)."""
    n_prev, n_c = shape
    if not fits(n_prev, len(row_reads)):
        return None
    width = max(r.size for r in row_reads)
    reads = np.full((len(row_reads), width), -1, np.int64)
    for g, r in enumerate(row_reads):
        reads[g, :r.size] = r
    idx = np.arange(n_prev)[:, None, None] * n_c + reads[None, :, :]  # [row class, reader class, cell]
    idx[np.broadcast_to(reads[None, :, :] < 0, idx.shape)] = n_prev * n_c
    return idx.reshape(-1, width)


def cell_prices(m: np.ndarray, k: int, blocks: np.ndarray, steps: int = PRICE_STEPS) -> np.ndarray:
    """π ∈ [0, 1]^shape(m) minimising F (module doc) over `blocks` (`single_class_blocks`), the best
    of `steps` projected subgradient steps from π = 0. Deterministic: same m, same π."""
    flat = np.append(m.ravel().astype(np.float64), 0.0)  # the last cell pads short blocks: always 0
    pad = flat.size - 1
    pi = np.zeros(flat.size)
    best_pi, best = pi.copy(), k * flat[blocks].sum(axis=1).max()
    for i in range(steps):
        sums = (flat * (1.0 - pi))[blocks].sum(axis=1)
        top = int(np.argmax(sums))
        value = k * sums[top] + float(pi @ flat)
        if value < best:
            best, best_pi = value, pi.copy()
        grad = flat.copy()  # ∂F/∂π: M everywhere, minus K·M on the cells of the densest block
        np.subtract.at(grad, blocks[top], k * flat[blocks[top]])
        grad[pad] = 0.0
        scale = np.abs(grad).max()
        if scale == 0:
            break
        pi = np.clip(pi - 0.2 / np.sqrt(1 + i) * grad / scale, 0.0, 1.0)
    return best_pi[:-1].reshape(m.shape)
