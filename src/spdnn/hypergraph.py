"""The hypergraph model of row-wise parallel SGD (README, "Design reference"), built from CSR (one
compiled counting-sort pass per layer: `layer_nets`).

Vertices: one per neuron of every layer 0..L, id(k, i) = n_0 + … + n_{k-1} + i.
Nets: one per (k, j), k = 1..L, j < n_{k-1}: {v_j^{k-1}} ∪ {v_i^k : W^k_ij ≠ 0}, in that order.
Vertex weight: nnz of row i of W^k (0 for inputs). km1 of any partition = Σ_k V_k.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from .arrays import compiled, distinct, first_index, first_of_groups, number_by_first, ranges
from .atomic import atomic_path


def identical_rows(m, ordered: bool = False) -> np.ndarray:
    """Class id per row: rows with the same column pattern share one (ids in order of first row).
    `ordered`: the same columns in the same order within the row (what the kernels' dense blocks
    need, `kernels._dense_blocks`: a rank's local column ids are not sorted, and sorting a copy
    took 20 ms of a 65536-row layer's 35).

    Vectorised: a random 64-bit sum per row (each term weighted by its position when `ordered`),
    mixed with the row length, groups candidates (a stable sort), then every row is compared with
    its group's first row, so a hash collision can never merge different rows."""
    m = sp.csr_matrix(m)
    if not ordered and not m.has_sorted_indices:
        m = m.sorted_indices()  # a copy: the caller's matrix keeps its order
    rng = np.random.default_rng(0x5EED)
    salt = rng.integers(1, np.iinfo(np.int64).max, size=m.shape[1] + 1, dtype=np.int64).view(np.uint64)
    return _class_ids(m, salt, ordered)


def _class_ids(m, salt: np.ndarray, ordered: bool = False) -> np.ndarray:
    """identical_rows of CSR `m` (its rows sorted unless `ordered`), given one salt per column and
    one for the row length (the tests pass salts that collide on purpose)."""
    n = m.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    lengths = np.diff(m.indptr)
    if lengths.min() == lengths.max():  # every row as long (RadiX-Net, Graph Challenge): a 2-D view
        rows = m.indices.reshape(n, lengths[0])  # of the columns, no per-nonzero offsets to build
        terms = salt[rows]
        if ordered:  # odd weights: invertible mod 2^64, so a swap of two columns changes the sum
            terms *= np.arange(1, 2 * lengths[0], 2, dtype=np.uint64)
        key = terms.sum(axis=1, dtype=np.uint64)  # (33 against 62 ms a 65536-row layer)
        rep = first_of_groups(key)
        same = np.array_equal(rows, rows[rep])
    else:
        terms = salt[m.indices]
        if ordered:
            terms *= (2 * ranges(np.zeros(n, np.int64), lengths) + 1).astype(np.uint64)  # 2p + 1, p within its row
        running = np.concatenate([np.zeros(1, np.uint64), np.cumsum(terms, dtype=np.uint64)])
        key = running[m.indptr[1:]] - running[m.indptr[:-1]] + lengths.astype(np.uint64) * salt[-1]
        rep = first_of_groups(key)  # the first row of each row's group (row sums, mod 2^64)
        same = np.array_equal(lengths[rep], lengths)
        if same:
            gather = np.repeat(m.indptr[rep].astype(np.int64) - m.indptr[:-1], lengths)  # nonzero p of a row →
            gather += np.arange(m.nnz, dtype=np.int64)  # the same position in its representative's row
            same = np.array_equal(m.indices, m.indices[gather])
    if not same:  # a collision (never seen with random salts): fall back to exact keys
        rep = _first_rows_by_bytes(m)
    return number_by_first(rep)


def _first_rows_by_bytes(m) -> np.ndarray:
    """The first row with each row's column list, by exact keys: a Python loop over the rows."""
    seen: dict[bytes, int] = {}
    return np.array([seen.setdefault(m.indices[m.indptr[i]:m.indptr[i + 1]].tobytes(), i) for i in range(m.shape[0])])


def merge_nets(sizes: np.ndarray, pins: np.ndarray, nv: int, weights: np.ndarray | None = None):
    """(indptr, pins, weights): nets given as runs of distinct `pins` (`sizes` per net) over `nv`
    vertices; those with fewer than two pins dropped (they cost nothing), those with the same pins
    merged into one whose weight is their number, or the sum of their `weights` (same km1, fewer
    nets to solve)."""
    indptr = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    keep = np.flatnonzero(sizes >= 2)
    m = sp.csr_matrix((np.ones(pins.size, np.int8), pins, indptr), shape=(sizes.size, nv))[keep]
    if m.shape[0] == 0:
        return np.zeros(1, np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64)
    same = identical_rows(m)
    merged = np.bincount(same, weights=None if weights is None else weights[keep])
    m = m[first_index(same, merged.size)]
    return m.indptr.astype(np.int64), m.indices.astype(np.int64), merged.astype(np.int64)


def vertex_offsets(widths) -> np.ndarray:
    """offsets[k] = id of v_0^k; offsets[-1] = number of vertices (int64)."""
    return np.concatenate([[0], np.cumsum(np.asarray(widths, dtype=np.int64))])


def row_weights(layers) -> list[np.ndarray]:
    """Per layer 1..L: nnz of each row (the work of that neuron)."""
    return [np.diff(w.indptr).astype(np.int64) for w in layers]


@dataclass
class Hypergraph:
    num_vertices: int
    net_indptr: np.ndarray  # int64[num_nets + 1]
    pins: np.ndarray  # int64 vertex ids, 0-based
    vertex_weights: np.ndarray  # int64, 0 for input vertices

    @property
    def num_nets(self) -> int:
        return self.net_indptr.size - 1


def _fill_nets(indptr, indices, source0, reader0, starts, pins):
    """pins[starts[j]] = source0 + j, then the rows i reading column j (reader0 + i), i increasing:
    the CSR → CSC transpose as one counting-sort pass (rows visited in order, so each net comes
    out sorted). SciPy's CSR → CSC conversion and sort took 0.13 s of a 65536-row layer (2.1·10⁶
    nonzeros), the stage's largest cost (22 of 49 s at 65536 × 120); this pass compiled
    (`arrays.compiled`) takes ≈ 0.03 s (its scattered writes)."""
    cursor = starts[:-1] + 1
    for j in range(cursor.size):
        pins[starts[j]] = source0 + j
    for i in range(indptr.size - 1):
        for p in range(indptr[i], indptr[i + 1]):
            j = indices[p]
            pins[cursor[j]] = reader0 + i
            cursor[j] += 1


def layer_nets(w, k: int, off: np.ndarray):
    """The nets of layer k, one per column j of W^k: (net sizes, pins) with each net's source
    v_j^{k−1} first, then its readers v_i^k in increasing i (0-based vertex ids)."""
    w = sp.csr_matrix(w)
    n_in = w.shape[1]
    indices = np.asarray(w.indices)
    sizes = np.bincount(indices, minlength=n_in).astype(np.int64, copy=False) + 1  # each column's readers, and its source
    if sizes.size != n_in:  # the pass below writes where the column ids say: never past the end
        raise ValueError(f"layer {k}: a column id {int(indices.max())} ≥ the layer's {n_in} inputs")
    starts = np.zeros(n_in + 1, np.int64)
    np.cumsum(sizes, out=starts[1:])
    pins = np.empty(int(starts[-1]), dtype=np.int64)
    compiled(_fill_nets)(w.indptr.astype(np.int64, copy=False), indices, np.int64(off[k - 1]), np.int64(off[k]),
                         starts, pins)
    return sizes, pins


def build_hypergraph(layers, widths) -> Hypergraph:
    """Nets of layer k are the columns of W^k, each led by its source vertex v_j^{k-1}."""
    off = vertex_offsets(widths)
    sizes, pins = zip(*(layer_nets(w, k, off) for k, w in enumerate(layers, start=1)))
    indptr = np.concatenate([[0], np.cumsum(np.concatenate(sizes))]).astype(np.int64)
    weights = np.concatenate([np.zeros(widths[0], np.int64)] + row_weights(layers))
    return Hypergraph(int(off[-1]), indptr, np.concatenate(pins), weights)


def _write_nets(f, sizes: np.ndarray, pins: np.ndarray, chunk_pins: int) -> None:
    """One line of 1-based pins per net, as text ~chunk_pins pins at a time (compiled: `decimal_text`)."""
    from .decimal_text import NEWLINE, SPACE, numbers

    last = np.cumsum(sizes, dtype=np.int64) - 1  # each net's last pin: a newline after it
    for lo in range(0, pins.size, chunk_pins):
        hi = min(lo + chunk_pins, pins.size)
        seps = np.full(hi - lo, SPACE, np.uint8)
        seps[last[np.searchsorted(last, lo):np.searchsorted(last, hi)] - lo] = NEWLINE
        f.write(numbers(pins[lo:hi] + 1, seps))


def write_hgr(hg: Hypergraph, path, chunk_pins: int = 1 << 22) -> None:
    """hMETIS format, code 10 (vertex weights): header, one line of 1-based pins per net, weights.

    Input vertices carry weight 0 in the model; they are written as 1 because hMETIS-family
    partitioners (KaHyPar, PaToH) reject zero weights. Balance is judged on layers 1..L.
    """
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(f"{hg.num_nets} {hg.num_vertices} 10\n".encode())
        _write_nets(f, np.diff(hg.net_indptr), hg.pins, chunk_pins)
        _write_weights(f, hg.vertex_weights)


def write_hgr_layers(widths, layers, path, chunk_pins: int = 1 << 20, progress=None) -> tuple[int, int, int]:
    """`write_hgr` of the model of a network given as an iterable of W^k (`network.iter_layers`):
    one layer's nets in memory at a time, plus the vertex weights (one integer per neuron). The
    same bytes as `write_hgr(build_hypergraph(...))`. Returns (vertices, nets, pins)."""
    off = vertex_offsets(widths)
    num_nets = int(np.sum(widths[:-1], dtype=np.int64))
    weights = np.zeros(int(off[-1]), np.int32)  # one per neuron: row nonzeros fit in 32 bits
    total_pins = 0
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(f"{num_nets} {int(off[-1])} 10\n".encode())
        for k, w in enumerate(layers, start=1):
            sizes, pins = layer_nets(w, k, off)
            _write_nets(f, sizes, pins, chunk_pins)
            weights[off[k]:off[k + 1]] = np.diff(w.indptr)
            total_pins += pins.size
            if progress:
                progress(k, len(widths) - 1)
        _write_weights(f, weights)
    return int(off[-1]), num_nets, total_pins


def _write_weights(f, weights: np.ndarray, chunk: int = 1 << 20) -> None:
    """One weight per line (0 written as 1), as text a chunk at a time: one integer per neuron
    is held, never its text."""
    from .decimal_text import NEWLINE, numbers

    for lo in range(0, weights.size, chunk):
        f.write(numbers(np.maximum(weights[lo:lo + chunk], 1), NEWLINE))


def connectivity_minus_one(net_indptr, pins, part) -> int:
    """km1 = Σ_nets (λ − 1), λ = distinct parts among the net's pins. Memory O(pins)."""
    part = np.asarray(part, dtype=np.int64)
    k = int(part.max()) + 1 if part.size else 1
    net_of_pin = np.repeat(np.arange(net_indptr.size - 1, dtype=np.int64), np.diff(net_indptr))
    return int(distinct(net_of_pin * k + part[pins]).size - (net_indptr.size - 1))


def read_hgr(path):
    """Read an hMETIS file (for tests and external tools): (num_vertices, net_indptr, pins0, weights|None)."""
    with open(path) as f:
        header = f.readline().split()
        num_nets, num_vertices = int(header[0]), int(header[1])
        fmt = header[2] if len(header) > 2 else "0"
        nets = [np.array(f.readline().split(), dtype=np.int64) - 1 for _ in range(num_nets)]
        weights = None
        if fmt in ("10", "11"):
            weights = np.array([int(f.readline()) for _ in range(num_vertices)], dtype=np.int64)
    indptr = np.concatenate([[0], np.cumsum([len(n) for n in nets])]).astype(np.int64)
    return num_vertices, indptr, np.concatenate(nets), weights
