"""The best K = 2 partition of a Graph Challenge-style network in a structured family, exactly.

Why: on the real 1024×120 network the hypergraph method (54,483 words) sits 1.50× above the
lower bound (36,212). This says which side the gap is on. On these networks neuron n sits in group
g(n) = n mod G in every layer (its row class), and in a layer of stride s every net (column class)
is read by two groups, h and h − s. Take the partitions that keep every group whole and cut no more
nets than a layer's stride forces: stride 1 — the 64 groups in two arcs (2 nets cut); stride
s ≥ 2 — unions of residue classes mod s (no net cut). On the stride-G/2 layers the choice among
C(G/2, G/4) unions is made exactly as a best response to both neighbours (each pair of groups
counts alone). A dynamic program over the layers then gives the exact optimum of this family,
and backtracking gives the partition, whose volume `volume.partition_metrics` checks.

    python benchmarks/group_family.py NET.h5 [--compare PART]

Prints the family's optimum, the method's volume (when given) and the seconds. Networks whose
layers are not of this form are refused. K = 2 only: with K > 2 the parts of each layer need names
matched across layers, and the family grows past a DP.
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from spdnn.errors import UserError
from spdnn.network import read_network
from spdnn.partition import Layers, place_inputs
from spdnn.partition_io import read_partition
from spdnn.volume import partition_metrics


def layer_nets(t: int, w, groups: int):
    """(stride, R: nets × groups reader indicator, N: groups × nets columns by owner group)."""
    wc = w.tocsc()
    key = {}
    owner_net = np.empty(w.shape[1], np.int64)
    for j in range(w.shape[1]):
        readers = wc.indices[wc.indptr[j]:wc.indptr[j + 1]]
        key_j = tuple(np.unique(readers % groups))
        if len(key_j) != 2 or np.bincount(readers % groups, minlength=groups)[list(key_j)].min() * groups != w.shape[0]:
            raise SystemExit(f"layer {t}, column {j}: not read by two whole groups of {groups} (not a Graph Challenge layer)")
        owner_net[j] = key.setdefault(key_j, len(key))
    r = np.zeros((len(key), groups))
    for pair, i in key.items():
        r[i, list(pair)] = 1
    n = np.zeros((groups, len(key)))
    np.add.at(n, (np.arange(w.shape[1]) % groups, owner_net), 1)
    stride = min(min((b - a) % groups, (a - b) % groups) for a, b in key)
    return stride, r, n


def family(stride: int, groups: int):
    """The candidate bisections of a layer of this stride (rows: 0/1 per group); None: best response."""
    if stride == groups // 2:
        return None
    if stride == 1:
        return np.array([np.isin(np.arange(groups), (np.arange(groups // 2) + r) % groups) for r in range(groups)], float)
    out = []
    for chosen in itertools.combinations(range(stride), stride // 2):
        q = np.isin(np.arange(groups) % stride, chosen).astype(float)
        out += [q, 1 - q]
    return np.array(out)


def layer_cost(x, y, r, n):
    """cost[a, b]: words of the layer with owners' groups split by x[a] (None: inputs, free) and
    readers' groups by y[b]: per column, the reader parts other than its owner's."""
    has1 = (y @ r.T) > 0
    has0 = ((1 - y) @ r.T) > 0
    size = n.sum(0)
    base = (has0.astype(float) + has1) @ size
    if x is None:
        return (base - size.sum())[None, :]
    return base[None, :] - (x @ n @ has1.T + (1 - x) @ n @ has0.T)


def pair_costs(x, r, n, groups):
    """For a stride-G/2 layer: cost of each pair {h, h + G/2} of reader groups in part 1 / part 0."""
    half = groups // 2
    pair = r.argmax(1) % half
    c1, c0 = np.zeros((x.shape[0], half)), np.zeros((x.shape[0], half))
    for i in range(r.shape[0]):
        c1[:, pair[i]] += (1 - x) @ n[:, i]
        c0[:, pair[i]] += x @ n[:, i]
    return c1, c0


def best_split(d, base):
    """Half of the pairs to part 1, those with the least extra cost d: (total, choice)."""
    order = np.argsort(d, axis=-1, kind="stable")[..., : d.shape[-1] // 2]
    return np.take_along_axis(d, order, -1).sum(-1) + base, order


def family_optimum(net, groups: int):
    info = [layer_nets(t, w, groups) for t, w in enumerate(net.layers, start=1)]
    L = len(info)
    cands = [None] + [family(s, groups) for s, _, _ in info]
    best, back, choice = {1: layer_cost(None, cands[1], *info[0][1:])[0]}, {}, {}
    t = 2
    while t <= L:
        s, r, n = info[t - 1]
        if cands[t] is not None:
            total = best[t - 1][:, None] + layer_cost(cands[t - 1], cands[t], r, n)
            back[t], best[t] = total.argmin(0), total.min(0)
            t += 1
            continue
        c1, c0 = pair_costs(cands[t - 1], r, n, groups)
        if t == L:  # last layer: no readers after it
            total, order = best_split(c1 - c0, c0.sum(1))
            total = best[t - 1] + total
            back[t], best[t], choice[t] = np.array([total.argmin()]), np.array([total.min()]), {0: order[total.argmin()]}
            t += 1
            continue
        _, r2, n2 = info[t]
        y = cands[t + 1]
        has1, has0 = (y @ r2.T) > 0, ((1 - y) @ r2.T) > 0
        base2 = (has0.astype(float) + has1) @ n2.sum(0)
        a1, a0 = has1 @ n2.T, has0 @ n2.T  # aligned columns of layer t+1 per owner group, by part
        half = groups // 2
        e1, e0 = a1[:, :half] + a1[:, half:], a0[:, :half] + a0[:, half:]
        total = np.empty((c1.shape[0], y.shape[0]))
        picks = np.empty((c1.shape[0], y.shape[0], half // 2), np.int64)
        for b in range(y.shape[0]):
            d = (c1 - e1[b]) - (c0 - e0[b])
            total[:, b], picks[:, b] = best_split(d, (c0 - e0[b]).sum(1) + base2[b])
        total += best[t - 1][:, None]
        back[t + 1], best[t + 1] = total.argmin(0), total.min(0)
        choice[t] = {b: picks[back[t + 1][b], b] for b in range(y.shape[0])}
        t += 2
    # Backtrack: a 0/1 per group for every layer; groups expand to neurons (n mod G)
    split = [None] * (L + 1)
    b = int(best[L].argmin())
    t = L
    while t >= 1:
        if cands[t] is None:  # the last layer, a best response
            q = np.zeros(groups)
            q[np.r_[choice[t][0], choice[t][0] + groups // 2]] = 1
            split[t], b, t = q, int(back[t][0]), t - 1
            continue
        split[t] = cands[t][b]
        prev = int(back[t][b]) if t > 1 else None
        if t > 1 and cands[t - 1] is None:  # layer t−1 was chosen as the best response between t−2 and t
            q = np.zeros(groups)
            q[np.r_[choice[t - 1][b], choice[t - 1][b] + groups // 2]] = 1
            split[t - 1] = q
            t -= 2
        else:
            t -= 1
        b = prev
    return float(best[L].min()), split


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("network")
    p.add_argument("--groups", type=int, default=64, help="row classes per layer (N/16 on Graph Challenge networks)")
    p.add_argument("--compare", help="a K = 2 partition file of the same network (spdnn partition's -o PART)")
    a = p.parse_args()
    net = read_network(a.network)
    t0 = time.perf_counter()
    value, split = family_optimum(net, a.groups)
    seconds = time.perf_counter() - t0
    parts = [None] + [split[t][np.arange(n) % a.groups].astype(np.int64) for t, n in enumerate(net.widths[1:], start=1)]
    # Inputs carry no load: each goes to the part holding most of its readers, as spdnn partition does
    parts[0] = place_inputs(Layers(net.layers, net.widths), parts, 2)
    part = np.concatenate([p.astype(np.int64) for p in parts])
    m = partition_metrics(net.layers, net.widths, part, 2, 0.03)
    print("| partition | K=2 volume | balanced | seconds |\n|---|---|---|---|")
    print(f"| group family, exact optimum (DP {value:,.0f}) | {m['volume_forward']:,} | {m['balanced']} | {seconds:.0f} |")
    if a.compare:
        c = partition_metrics(net.layers, net.widths, read_partition(a.compare), 2, 0.03)
        print(f"| {a.compare} | {c['volume_forward']:,} | {c['balanced']} | |")


if __name__ == "__main__":
    try:
        main()
    except UserError as e:
        raise SystemExit(f"group_family: {e}") from None
