"""Chain starts that look ahead: a partition that sends nothing for as many layers as possible.

A part that holds every row reading a neuron it owns, in every layer of a stretch, sends nothing
there. Such parts are unions of the *closed components* of the stretch: rows of its first layer
joined when they read a common input, and each later layer's rows joined to the components of
the rows they read. Components only merge as the stretch grows, so the longest stretch whose
components can still be dealt to K parts within every layer's capacity gives the longest run of
layers that can cost nothing inside. On a RadiX-Net its partitions keep the part-index bits that
the stretch does not mix, the look-ahead construction of the hand-built reference (README,
"Structure recovery"), found from the connectivity alone, whatever the neurons' names; on random
and pruned layers the first layer is one component already and nothing is proposed.

Where chains are too short to see the structure come round, a start that reads each input from
one part is also carried on (`chains.carried_chain`): `read_set_groups` says which rows of
the next layer read the same parts and so keep the start's structure when kept together."""
from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from .arrays import first_of_groups, number_by_first
from .hypergraph import identical_rows, merge_nets
from .partition_io import id_dtype
from .volume import layer_capacity


def _merge(n_old: int, inputs_label: np.ndarray, rows) -> tuple[np.ndarray, np.ndarray, int]:
    """Join `rows` (CSR over input neurons whose component is `inputs_label`) to the components
    they read. Returns (new label of each old component, label of each row, count)."""
    # One directed edge per pin, row → component, taken weakly: a CSR scipy uses as it is (a COO
    # graph was converted, transposed and cast three times, 0.8 s a 65536-wide random layer).
    indptr = np.concatenate([np.zeros(n_old, np.int64), rows.indptr.astype(np.int64)])
    graph = sp.csr_matrix((np.ones(rows.nnz), inputs_label[rows.indices], indptr),
                          shape=(n_old + rows.shape[0],) * 2)
    count, label = connected_components(graph, directed=True, connection="weak")
    return label[:n_old], label[n_old:], count


def closed_components(net, t0: int, last: int, k: int):
    """Yield (labels, weights) for the stretches t0..t0 + h, h = 0, 1, ..., while at least k
    components remain: labels[i] the component of each class of identical rows (`net.classes`)
    of layer t0 + i, weights[c, i] component c's load in that layer. Labels are kept per class,
    16× fewer than rows on RadiX-Net layers, since each level renames those of every layer."""
    n_in = net.widths[t0 - 1]
    # Layer t0: its rows and its inputs in one graph, so rows sharing an input are joined.
    _, label, _ = _merge(n_in, np.arange(n_in), net.class_rows(t0))
    _, label = np.unique(label, return_inverse=True)  # the components of rows only, numbered 0..
    count = int(label.max()) + 1 if label.size else 0
    labels, class_loads = [], []
    for t in range(t0, last + 1):
        if t > t0:  # layer t's rows joined to the components they read
            renamed, label, count = _merge(count, labels[-1][net.classes(t - 1)], net.class_rows(t))
            labels = [renamed[lab] for lab in labels]
        labels.append(label)
        class_loads.append(net.class_loads(t))
        if count < k:
            return
        yield labels, np.stack([np.bincount(lab, weights=w, minlength=count) for lab, w in zip(labels, class_loads)],
                               axis=1)


def component_loads(part: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """[part, layer]: the load of components dealt as `part`, from their loads `weights` [component, layer]."""
    return np.stack([np.bincount(part, weights=w, minlength=k) for w in weights.T], axis=1)


def deal(weights: np.ndarray, capacity: np.ndarray, k: int) -> np.ndarray | None:
    """Components (rows of `weights`: their load in each layer) dealt to k parts, heaviest first,
    each to the part it leaves least loaded relative to capacity; None if one does not fit."""
    room = np.maximum(capacity, 1)
    share = weights / room
    order = np.lexsort((np.arange(len(weights)), -share.max(axis=1)))
    loads = np.zeros((k, weights.shape[1]))
    part = np.empty(len(weights), np.int64)
    for c in order:
        after = ((loads + weights[c]) / room).max(axis=1)
        p = int(np.argmin(after))
        if after[p] > 1.0 + 1e-12 and weights[c].any():
            return None
        loads[p] += weights[c]
        part[c] = p
    return part


def labels_read(rows, label: np.ndarray, n_labels: int):
    """CSR [row, label]: the distinct labels (`label` of each input) that each row of `rows` reads,
    sorted."""
    out = sp.csr_matrix((np.ones(rows.nnz, np.int8), label[rows.indices], rows.indptr.copy()),
                        shape=(rows.shape[0], n_labels))
    out.sum_duplicates()  # in place: hence the copy of indptr, which is the cached layer's own
    return out


def next_layer_nets(net, t: int, label: np.ndarray):
    """Layer t's row classes as nets over the components (`label`, of layer t−1's rows) they read,
    those reading two or more, identical nets as one: (indptr, pins, weights = rows reading so)."""
    rows = net.class_rows(t)
    n_comp = int(label.max()) + 1
    pins = labels_read(rows, label, n_comp)
    # Thousands of row classes read the same few components: one weighted net each (Mt-KaHyPar
    # took 0.75 s on 4,096 nets over 16 vertices, the whole stretch's time at N = 65536).
    return merge_nets(np.diff(pins.indptr), pins.indices, n_comp,
                      np.bincount(net.classes(t), minlength=rows.shape[0]))


def lookahead_chain(net, t0: int, last: int, k: int, epsilon: float, solver=None, seed: int = 0,
                    fresh_cut: bool = True, min_layers: int = 2) -> list[np.ndarray]:
    """Layer partitions of t0, t0 + 1, ... (at most up to `last`) that send nothing among them:
    the longest stretch of at least `min_layers` layers whose closed components deal to k balanced
    parts. Empty where no such stretch exists (a connected layer, or too few components). A
    stretch of one layer reads each of its inputs from one part only (what a carried chain,
    `chains.carried_chain`, starts from).

    Which components go together decides what the layer after the stretch pays: with a `solver`
    they are partitioned with that layer's row classes as nets (a relabelled RadiX-Net's stretch
    of strides 32..512 has 32 components that the next, stride-1 layer joins in a cycle: cut in two
    arcs it sends 1,024 words at N = 16384, dealt blind 8,192); else, or where the cut is not
    balanced in every layer, dealt heaviest first (`deal`). Not `fresh_cut`: a V-cycle improves
    the dealt partition instead of a solve from scratch, which Mt-KaHyPar does in no less than
    0.05–0.35 s however few the components (65536×24, K = 8: four such solves a chain start took
    the partitioner from 19 to 24 s; V-cycles between chain starts, 21 s, and on relabelled
    RadiX-Nets the same volumes within 0.01 %: a V-cycle alone was 10 % worse at K = 8)."""
    # Deepest first: a component heavier than a part's capacity anywhere ends the stretch (cheap);
    # then the deal (a loop over the components: 0.2 s for 40,000 of them) is tried from the
    # deepest level back, usually once.
    capacity, levels = [], []
    for labels, weights in closed_components(net, t0, last, k):
        capacity.append(layer_capacity(net.rw(t0 + len(capacity)), k, epsilon))
        if (weights > np.array(capacity)).any():
            break
        levels.append((labels, weights))
    capacity = np.array(capacity, np.float64)
    for labels, weights in reversed(levels[min_layers - 1:]):
        part = deal(weights, capacity[:len(labels)], k)
        if part is not None:
            break
    else:
        return []
    layers = range(t0, t0 + len(labels))
    capacity = capacity[:len(labels)]
    after = layers[-1] + 1
    if solver is not None and after <= len(net) and len(weights) > k:
        indptr, pins, net_weights = next_layer_nets(net, after, labels[-1][net.classes(after - 1)])
        if indptr.size > 1:
            total = np.round(weights.sum(axis=1)).astype(np.int64)
            if fresh_cut or not solver.improves:
                cut = solver.solve(len(weights), indptr, pins, k, epsilon, seed, total, net_weights=net_weights)
            else:
                cut = solver.improve(len(weights), indptr, pins, k, epsilon, seed, total, part, net_weights=net_weights)
            if (component_loads(cut.partition, weights, k) <= capacity).all():
                part = np.asarray(cut.partition, np.int64)
    return [part[lab][net.classes(t)].astype(id_dtype(k)) for t, lab in zip(layers, labels)]


def read_set_groups(net, t: int, before: np.ndarray, k: int, capacity: float) -> np.ndarray:
    """Layer t's row classes grouped by the set of parts (of `before`, layer t − 1's partition)
    whose neurons they read; a group heavier than `capacity` is left as its classes. Ids numbered
    by first class. Kept together, the groups carry `before`'s structure on: where layer t − 1
    pairs the groups c and c + 32 of a relabelled radix-2 RadiX-Net (1024 wide, K = 32), rows c and
    c + 32 of the next layer read the same two parts whatever its stride, so the pairs go on."""
    rows = net.class_rows(t)
    n_cls = rows.shape[0]
    group = identical_rows(labels_read(rows, before.astype(np.int64), k))
    heavy = np.bincount(group, weights=net.class_loads(t)) > capacity
    key = np.where(heavy[group], group.size + np.arange(n_cls), group)
    return number_by_first(first_of_groups(key))
