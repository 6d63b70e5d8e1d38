"""Figures a reader of the seed paper expects, from the results tables (matplotlib, Agg)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from .atomic import atomic_path


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# One style per method in every figure of every config: colour, marker and line style all differ,
# so methods with equal values (random and block at K = 2) stay visible, also in grey print.
STYLES = {
    "hypergraph": dict(color="tab:blue", marker="o", ls="-"),
    "sweep": dict(color="tab:orange", marker="s", ls="--"),
    "random": dict(color="tab:red", marker="^", ls=":", ms=8),
    "block": dict(color="tab:green", marker="v", ls="-.", mfc="none", ms=10),
    "external": dict(color="tab:purple", marker="D", ls=(0, (5, 1, 1, 1))),
    "data-parallel": dict(color="tab:brown", marker="P", ls=(0, (1, 1))),
    "none": dict(color="tab:gray", marker="x", ls="-"),
    "trivial": dict(color="tab:gray", marker="x", ls="-"),
}


def style(method: str) -> dict:
    return dict(STYLES.get(method, dict(color="tab:olive", marker="*", ls="-")))


def shared_cores(table: pd.DataFrame, column: str = "cores_per_rank") -> np.ndarray:
    """Rows of runs whose ranks shared cores (`column` under 1); none in a table from before the column."""
    return (table[column] < 1).to_numpy() if column in table else np.zeros(len(table), bool)


def _integer_axis(axis):
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _plain_log_ticks(ax, ticks):
    """Log-scaled x axis labelled at the given values only (no 3×10^0 minor labels)."""
    from matplotlib.ticker import NullFormatter

    ax.set_xticks(ticks, labels=[str(t) for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())


def _save(fig, path):
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=Path(path).suffix.lstrip("."))
    _plt().close(fig)


def _network_panels(table: pd.DataFrame):
    """One panel per network, side by side: (figure, [(axis, network, its rows)])."""
    nets = sorted(table["network"].unique())
    fig, axes = _plt().subplots(1, len(nets), figsize=(5 * len(nets), 3.8), squeeze=False)
    return fig, [(ax, net, table[table["network"] == net]) for ax, net in zip(axes[0], nets)]


def volume_vs_k(parts: pd.DataFrame, path):
    fig, panels = _network_panels(parts)
    for ax, net, d in panels:
        for method, g in d.groupby("method"):
            g = g.sort_values("k")
            ax.plot(g["k"], g["volume_forward"], label=method, **style(method))
        if "lower_bound_forward" in d and d["lower_bound_forward"].notna().any():
            lb = d.dropna(subset=["lower_bound_forward"]).drop_duplicates("k").sort_values("k")
            lb = lb[lb["lower_bound_forward"] > 0]  # a zero bound has no place on a log axis
            if not lb.empty:
                ax.plot(lb["k"], lb["lower_bound_forward"], ls="--", color="black",
                        label="lower bound (any partition)")
        ax.set(xscale="log", yscale="log", xlabel="K (processes)", ylabel="words per sample (forward)", title=net)
        _plain_log_ticks(ax, sorted(int(k) for k in d["k"].unique()))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    _save(fig, path)


def per_layer(per_layer_data: dict, k: int, network: str, path):
    """per_layer_data: {method: {"volume": [...], "imbalance": [...]}} for one network and K."""
    plt = _plt()
    fig, (a, b) = plt.subplots(2, 1, figsize=(8, 5), sharex=True)
    for method, d in sorted(per_layer_data.items()):
        x = np.arange(1, len(d["volume"]) + 1)
        st = style(method)
        st["markevery"] = max(1, len(x) // 12)
        a.plot(x, d["volume"], label=method, lw=1.2, **st)
        b.plot(x, d["imbalance"], label=method, lw=1.2, **st)
    a.set(ylabel="words per sample", title=f"{network}, K={k}: per-layer volume and imbalance")
    a.legend(fontsize=8)
    b.set(xlabel="layer", ylabel="max load / average")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        _integer_axis(ax.xaxis)
    _save(fig, path)


def speedup(runs: pd.DataFrame, path):
    """Speedup and efficiency of a training step over K = 1, one column of panels per network."""
    plt = _plt()
    t = runs[runs["kind"] == "train"]
    nets = sorted(t["network"].unique())
    fig, axes = plt.subplots(2, max(1, len(nets)), figsize=(4.5 * max(1, len(nets)), 6), squeeze=False, sharex=True)
    for col, net in enumerate(nets):
        d = t[t["network"] == net]
        for (b_, method, mode), g in d[d["k"] > 1].groupby(["batch_size", "method", "mode"]):
            base = d[(d["batch_size"] == b_) & (d["k"] == 1)]["step_seconds"]
            if base.empty:
                continue
            g = g.sort_values("k")
            ks = np.concatenate([[1], g["k"].to_numpy()])
            s = base.iloc[0] / np.concatenate([[base.iloc[0]], g["step_seconds"].to_numpy()])
            name = mode if mode == "data-parallel" else method
            label = f"B={b_} {name}"
            st = style(name)
            st["ls"] = "-" if b_ == d["batch_size"].max() else ":"  # line style: batch size
            axes[0][col].plot(ks, s, label=label, **st)
            axes[1][col].plot(ks, s / ks, label=label, **st)
            shared = np.concatenate([[False], shared_cores(g)])
            for ax, y in ((axes[0][col], s), (axes[1][col], s / ks)):  # hollow: ranks shared cores
                ax.plot(ks[shared], y[shared], ls="none", marker="o", ms=9, mfc="white", mec=st.get("color", "k"))
        axes[0][col].set(title=f"{net}: training step", ylabel="speedup over K=1")
        axes[1][col].set(xlabel="K (hollow: more ranks than cores)", ylabel="parallel efficiency")
        for ax in axes[:, col]:
            ax.grid(alpha=0.3)
            ax.set_xticks(sorted(int(k) for k in d["k"].unique()))  # the K that ran, no others
        axes[0][col].legend(fontsize=7)
    _save(fig, path)


def time_breakdown(per_rank: list[dict], title: str, path):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ranks = np.arange(len(per_rank))
    comp = np.array([sum(r["compute_seconds"]) for r in per_rank])
    comm = np.array([sum(r.get("comm_seconds", [0])) for r in per_rank])
    wait = np.array([sum(r.get("wait_seconds", [0])) for r in per_rank])
    ax.bar(ranks, comp, label="compute")
    ax.bar(ranks, comm - wait, bottom=comp, label="communication (pack, post)")
    ax.bar(ranks, wait, bottom=comp + comm - wait, label="wait")
    ax.set(xlabel="rank", ylabel="seconds (whole run)", title=title)
    ax.set_xticks(ranks)
    ax.legend(fontsize=8)
    _save(fig, path)


def crossover(parts: pd.DataFrame, grad_words: dict, path, batch_sizes=(1, 4, 16, 64, 256, 1024)):
    """Row-wise words per training step = B·(2V − V_1) vs data-parallel 2(K−1)·M (any B)."""
    fig, panels = _network_panels(parts)
    bs = np.array(batch_sizes, dtype=float)
    for ax, net, all_rows in panels:
        d = all_rows[all_rows["method"] == "hypergraph"]
        if d.empty:
            d = all_rows
        for _, r in d.sort_values("k").iterrows():
            line = ax.plot(bs, bs * r["volume_training"], marker="o", label=f"row-wise {r['method']} K={r['k']}")
            ax.axhline(2 * (r["k"] - 1) * grad_words[net], color=line[0].get_color(), ls="--",
                       label=f"data-parallel K={r['k']}")
        ax.set(xscale="log", yscale="log", xlabel="batch size B", ylabel="words per training step", title=net)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    _save(fig, path)


def predicted_vs_k(pred: pd.DataFrame, path):
    fig, panels = _network_panels(pred)
    for ax, net, d in panels:
        bmax = d["batch_size"].max()
        d = d[d["batch_size"] == bmax]
        for (method, mode), g in d.groupby(["method", "mode"]):
            g = g.sort_values("k")
            name = mode if mode == "data-parallel" else method
            st = style(name)
            name = "serial (K=1)" if name == "none" else name
            ax.plot(g["k"], g["predicted_step_seconds"], label=f"{name}: predicted", **st)
            m = g.dropna(subset=["measured_step_seconds"])
            shared = shared_cores(m, "measured_cores_per_rank")
            if not m[~shared].empty:
                ax.scatter(m[~shared]["k"], m[~shared]["measured_step_seconds"], marker="x", s=60, color=st["color"],
                           label=f"{name}: measured", zorder=3)
            if not m[shared].empty:  # more ranks than cores: not what the model describes
                ax.scatter(m[shared]["k"], m[shared]["measured_step_seconds"], marker="o", s=60, facecolors="none",
                           edgecolors=st["color"], label=f"{name}: on shared cores", zorder=3)
        ax.set(xscale="log", yscale="log", xlabel="K", ylabel="step seconds",
               title=f"{net}, B={bmax}: lines predicted, marks measured")
        _plain_log_ticks(ax, sorted(int(k) for k in d["k"].unique()))
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.15))  # below: no data hidden
    _save(fig, path)


def make_figures(partitions_csv, runs_csv, predictions_csv, results_dir, outdir) -> None:
    """Every figure of the report, from the tables and the per-partition/per-run JSON they came from."""
    from .network import describe, read_header

    out, results = Path(outdir), Path(results_dir)
    parts = pd.read_csv(partitions_csv)
    runs = pd.read_csv(runs_csv)
    volume_vs_k(parts, out / "volume_vs_k.png")
    for net in parts["network"].unique():
        kmax = int(parts[parts["network"] == net]["k"].max())
        data = {}
        for method in parts[(parts["network"] == net) & (parts["k"] == kmax)]["method"]:
            m = json.loads((results / net / "partitions" / f"{method}-k{kmax}.part.json").read_text())
            data[method] = {"volume": m["volume_per_layer"], "imbalance": m["imbalance_per_layer"]}
        per_layer(data, kmax, net, out / f"per_layer_{net}.png")
    speedup(runs, out / "speedup.png")
    rw = runs[(runs["kind"] == "train") & (runs["mode"] == "row-wise") & (runs["k"] > 1)]
    if not rw.empty:  # the largest row-wise training run (most ranks, then largest batch) of the largest network,
        # among those whose ranks had a core each where there are any (else the waiting ranks' polling
        # shows as the others' compute)
        sizes = {net: describe(results / net / "network.h5")["nnz_total"] for net in rw["network"].unique()}
        rw = rw.assign(nnz=rw["network"].map(sizes), ours=rw["method"] == "hypergraph", own=~shared_cores(rw))
        r = rw.sort_values(["own", "nnz", "k", "batch_size", "ours"]).iloc[-1]
        name = f"train-{r['method']}-k{r['k']}-row-wise-b{r['batch_size']}"
        ranks = json.loads((results / r["network"] / "runs" / f"{name}.json").read_text())["per_rank"]
        time_breakdown(ranks, f"{r['network']} ({r['nnz']:,} weights): {name}" + ("" if r["own"] else
                       " (ranks shared cores)"), out / "time_breakdown.png")
    grad_words = {}  # M = nnz + biases: what a data-parallel step allreduces
    for net in parts["network"].unique():
        path = results / net / "network.h5"
        grad_words[net] = describe(path)["nnz_total"] + sum(read_header(path).widths[1:])
    crossover(parts, grad_words, out / "crossover.png")
    predicted_vs_k(pd.read_csv(predictions_csv), out / "predicted_vs_k.png")
