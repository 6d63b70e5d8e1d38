"""Network generators: RadiX-Net in the Graph Challenge construction, and random sparse.

RadiX-Net (README, "Design reference"): N = 16·2^m neurons, G = N/16 groups, g(n) = n mod G. Base layer
t = 1..m has stride s = 2^(t-1); the Graph Challenge TSV entry (input i -> output j) is 1/16
iff g(i) = g(j) or g(i) = (g(j) + s) mod G. Layer k uses base ((k-1) mod m) + 1; layers of
block b = (k-1) // m >= 1 have their input neurons permuted by one seeded permutation per block.

Other butterfly bases (`radices`, b_1·…·b_m = G; the Graph Challenge is b_i = 2): base layer t has
radix b = b_t and stride s = b_1·…·b_(t−1), and output group g reads input groups g + j·s mod G,
j = 0..b−1, each entry 2/(16·b) so that every row still sums to 2. The m base layers together
connect every output group to every input group by exactly one path (mixed-radix digits).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from . import __version__
from .errors import UserError
from .network import GC_YMAX, Network, NetworkWriter, gc_bias
from .read_ahead import read_ahead


def radixnet_base_layer(neurons: int, stride: int, radix: int = 2) -> sp.csr_matrix:
    """Base layer in paper orientation: W[j, i] = 2/(16·b) iff g(i) = g(j) + r·s mod G, r = 0..b−1
    (b = 2: the Graph Challenge's 1/16 iff g(i) in {g(j), g(j)+s mod G})."""
    groups = neurons // 16
    per_row = 16 * radix
    out = np.arange(neurons, dtype=np.int64)
    g_out = out % groups
    members = np.arange(16, dtype=np.int64) * groups  # neurons of group 0; group g = members + g
    g_in = (g_out[:, None] + stride * np.arange(radix, dtype=np.int64)[None, :]) % groups  # (N, b)
    cols = (g_in[:, :, None] + members[None, None, :]).reshape(neurons, per_row)
    cols.sort(axis=1)
    indptr = np.arange(0, per_row * neurons + 1, per_row, dtype=np.int64)
    data = np.full(per_row * neurons, 2.0 / per_row, dtype=np.float32)
    return sp.csr_matrix((data, cols.reshape(-1).astype(np.int32), indptr), shape=(neurons, neurons))


def radix_strides(neurons: int, radices: list[int] | None = None) -> list[tuple[int, int]]:
    """(radix, stride) of each base layer; `radices` None is the Graph Challenge's all-2 choice.
    Raises UserError unless every radix is ≥ 2 and their product is G = N/16."""
    m = _log2_groups(neurons)
    if radices is None:
        radices = [2] * m
    groups = neurons // 16
    if any(b < 2 for b in radices) or math.prod(radices) != groups:
        raise UserError(f"--radices must be integers >= 2 whose product is N/16 = {groups}; got "
                        f"{','.join(map(str, radices))}")
    strides = [math.prod(radices[:i]) for i in range(len(radices))]
    return list(zip(radices, strides))


@dataclass
class LayerStream:
    """A network produced one layer at a time: `write` streams it to a file holding one layer in
    memory (what `spdnn generate` does), `network()` builds it whole (for tests and small uses).
    Both draw the same random numbers in the same order: same seed, same bytes."""

    widths: list[int]
    ymax: float
    provenance: dict
    layers: Callable[[], Iterator[tuple[sp.csr_matrix, np.ndarray]]]

    def network(self) -> Network:
        """The whole network; every layer owns its arrays (the generator reuses a base layer's, and
        training updates a layer's values in place: shared arrays would be updated once per layer)."""
        ws, bs = zip(*self.layers())
        return Network([w.copy() for w in ws], list(bs), ymax=self.ymax, provenance=self.provenance)

    def write(self, path, progress=None) -> int:
        """Write the network file; returns the number of nonzeros."""
        nnz = 0
        with NetworkWriter(path, self.widths, self.ymax, "relu", self.provenance) as out:
            # The next layer is made in a thread while this one is compressed (−20 % at 65536 × 48).
            for k, (w, b) in enumerate(read_ahead(self.layers()), start=1):
                out.write_layer(k, w, b)
                nnz += w.nnz
                if progress:
                    progress(k, len(self.widths) - 1)
        return nnz


def radixnet_stream(neurons: int, layers: int, seed: int, bias: float | None = None, ymax: float = GC_YMAX,
                    radices: list[int] | None = None) -> LayerStream:
    base_shapes = radix_strides(neurons, radices)
    m = len(base_shapes)
    if layers < 1:
        raise UserError(f"--layers must be >= 1 (got {layers})")
    b = gc_bias(neurons, bias)

    def produce():
        rng = np.random.default_rng(seed)
        bases = [radixnet_base_layer(neurons, stride, radix) for radix, stride in base_shapes]
        perm = None
        for k in range(1, layers + 1):
            block, t = divmod(k - 1, m)
            if t == 0 and block >= 1:
                perm = rng.permutation(neurons)
            w = bases[t]
            if block >= 1:
                # Permute the input neurons (TSV rows = our columns): W_tsv[perm[i], j] = base[i, j].
                w = sp.csr_matrix((w.data, perm[w.indices].astype(np.int32), w.indptr), shape=w.shape)
                w.sort_indices()
            yield w, np.full(neurons, b, np.float32)

    prov = {"generator": "radixnet", "neurons": neurons, "layers": layers, "seed": seed, "bias": b, "ymax": ymax,
            "radices": [r for r, _ in base_shapes], "spdnn_version": __version__}
    return LayerStream([neurons] * (layers + 1), ymax, prov, produce)


def radixnet(neurons: int, layers: int, seed: int, bias: float | None = None, ymax: float = GC_YMAX,
             radices: list[int] | None = None) -> Network:
    return radixnet_stream(neurons, layers, seed, bias, ymax, radices).network()


def _log2_groups(neurons: int) -> int:
    if neurons < 32 or neurons % 16 or (neurons // 16) & (neurons // 16 - 1):
        raise UserError(f"--neurons must be 16·2^m with m >= 1 (32, 64, ..., 1024, ...); got {neurons}")
    return int(np.log2(neurons // 16))


def sample_distinct(rng: np.random.Generator, rows: int, n: int, r: int) -> np.ndarray:
    """rows × r distinct column ids in [0, n) per row, sorted; Floyd's algorithm, vectorised over rows."""
    chosen = np.empty((rows, r), dtype=np.int64)
    for t_idx, t in enumerate(range(n - r, n)):
        cand = rng.integers(0, t + 1, size=rows)
        dup = (chosen[:, :t_idx] == cand[:, None]).any(axis=1)
        chosen[:, t_idx] = np.where(dup, t, cand)
    chosen.sort(axis=1)
    return chosen


def random_stream(widths: list[int], nnz_per_row: int, seed: int, bias: float = 0.0, ymax: float = np.inf,
                  init: str = "he") -> LayerStream:
    """Each row of W^k reads `nnz_per_row` distinct inputs chosen uniformly.

    Weights: `he` draws N(0, 2/R) (trainable; R = nnz per row), `constant` sets 1/R·2 as RadiX-Net does.
    """
    if len(widths) < 2:
        raise UserError("--widths needs at least two widths (input and one layer)")
    if min(widths) < 1:
        raise UserError(f"--widths must be positive (got {widths})")
    if nnz_per_row < 1:
        raise UserError(f"--nnz-per-row must be >= 1 (got {nnz_per_row})")
    if init not in ("he", "constant"):
        raise UserError(f"--init must be 'he' or 'constant' (got {init!r})")

    def produce():
        rng = np.random.default_rng(seed)
        for k in range(1, len(widths)):
            n_out, n_in = widths[k], widths[k - 1]
            r = min(nnz_per_row, n_in)
            cols = sample_distinct(rng, n_out, n_in, r)
            if init == "he":
                data = rng.normal(0.0, np.sqrt(2.0 / r), size=cols.size).astype(np.float32)
            else:
                data = np.full(cols.size, 2.0 / r, np.float32)
            indptr = np.arange(0, r * n_out + 1, r, dtype=np.int64)
            w = sp.csr_matrix((data, cols.reshape(-1).astype(np.int32), indptr), shape=(n_out, n_in))
            yield w, np.full(n_out, bias, np.float32)

    prov = {"generator": "random", "widths": list(widths), "nnz_per_row": nnz_per_row, "seed": seed, "init": init,
            "bias": bias, "spdnn_version": __version__}
    return LayerStream(list(widths), ymax, prov, produce)


def random_sparse(widths: list[int], nnz_per_row: int, seed: int, bias: float = 0.0, ymax: float = np.inf,
                  init: str = "he") -> Network:
    return random_stream(widths, nnz_per_row, seed, bias, ymax, init).network()
