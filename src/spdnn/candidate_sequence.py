"""The cheapest sequence of candidate layer partitions, one per layer.

Dynamic programming over the layers, each candidate's part names matched to the previous layer's
by the Hungarian method (exact for a pair of layers); the sweep is a candidate, so the sequence is
never worse than it."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from .candidate_store import CandidateStore
from .layer_solve import layer_reader_parts, place_inputs, reader_parts
from .layers import Layers
from .workers import block_shares, in_processes


def best_relabel(w, part_in: np.ndarray, part_out: np.ndarray, k: int, held=None):
    """(volume, label map) for layer `w` when part_out's labels are renamed to suit part_in.

    V = Σ_j |T_j| − Σ_j [owner(j) ∈ T_j]; the first term does not depend on the names, the second
    is an assignment problem between owner parts and reader parts (Hungarian, exact)."""
    from scipy.optimize import linear_sum_assignment

    held = reader_parts(w, part_out, k) if held is None else held
    n_in = held.shape[0]
    owner = sp.csr_matrix((np.ones(n_in), (part_in.astype(np.int64), np.arange(n_in))), shape=(k, n_in))
    together = np.asarray(owner @ held.astype(np.float64))  # [owner part, reader part]: columns in common
    rows, cols = linear_sum_assignment(-together)
    rename = np.empty(k, np.int64)
    rename[cols] = rows
    return int(held.sum() - together[rows, cols].sum()), rename


def transitions(net: Layers, k, store: CandidateStore, items, tick=lambda: None):
    """For each (t, candidates of layer t−1, candidates of layer t), references into `store`: the
    volume of layer t for every pair of candidates, and the label map that renames each of layer
    t's to suit each of layer t−1's (`best_relabel`) — [(t, volume[a, b], rename[a, b, :]), ...].
    Two layers' candidates in memory at a time."""
    out = []
    loaded = (None, None)  # (t, layer t's candidates): the next item's layer before, if it follows
    for t, refs_before, refs_here in items:
        before = loaded[1] if loaded[0] == t - 1 else store.read_all(refs_before)
        here = store.read_all(refs_here)
        loaded = (t, here)
        w = net.w(t)
        held = [layer_reader_parts(net, t, c, k) for c in here]
        volume = np.zeros((len(before), len(here)), np.float64)
        rename = np.zeros((len(before), len(here), k), np.int64)
        for a, prev in enumerate(before):
            for b, (c, h) in enumerate(zip(here, held)):
                volume[a, b], rename[a, b] = best_relabel(w, prev, c, k, h)
        out.append((t, volume, rename))
        tick()
    return out


def choose_candidates(net: Layers, cands, k, store: CandidateStore, progress=None, jobs=1):
    """The sequence of candidates (one per layer; `cands[t]`: references into `store`) with the
    least volume, by dynamic programming over the layers, each candidate renamed to suit the one
    before (`best_relabel`). Returns the layer partitions (inputs placed optimally) and their
    volume; only the chosen candidates are read back at the end.

    The pairwise costs of consecutive layers are independent, so `jobs` processes compute them
    (blocks of consecutive layers, each read once); the DP itself is a few numbers per layer. A
    rename found against layer t−1's candidate as computed holds for it renamed too (renaming the
    owner parts permutes the assignment problem's rows), so the chosen sequence's renames compose."""
    L = len(net)
    items = [(t, cands[t - 1], cands[t]) for t in range(2, L + 1)]
    stage = "candidate sequence" + (f" ({jobs} processes)" if jobs > 1 else "")
    if jobs > 1 and len(items) > 1:
        done = in_processes(transitions, (net, k, store), block_shares(items, jobs),
                            progress and (lambda n: progress(stage, n + 1, L)))
        steps = {t: (volume, rename) for share in done for t, volume, rename in share}
    else:
        layers_done = iter(range(2, L + 1))
        tick = (lambda: progress(stage, next(layers_done), L)) if progress else (lambda: None)
        steps = {t: (volume, rename) for t, volume, rename in transitions(net, k, store, items, tick)}
    del items
    cost = np.array([layer_reader_parts(net, 1, c, k).sum() - net.widths[0] for c in store.read_all(cands[1])],
                    np.float64)
    back = [None, None]
    for t in range(2, L + 1):
        total = cost[:, None] + steps[t][0]
        back.append(total.argmin(axis=0))
        cost = total.min(axis=0)
    pick = [0] * (L + 1)
    pick[L] = int(np.argmin(cost))
    for t in range(L, 1, -1):
        pick[t - 1] = int(back[t][pick[t]])
    parts = [None] * (L + 1)
    parts[1] = store.read(cands[1][pick[1]])
    names = np.arange(k)  # final label of each of the chosen layer t−1 candidate's own labels
    for t in range(2, L + 1):
        names = names[steps[t][1][pick[t - 1], pick[t]]]
        parts[t] = names.astype(parts[1].dtype)[store.read(cands[t][pick[t]])]
    parts[0] = place_inputs(net, parts, k)
    return parts, int(cost.min())
