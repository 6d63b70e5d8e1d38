"""Sparse DNN Graph Challenge formats: layer TSVs, image TSVs, categories; import and export.

Layer files `neuron{N}/n{N}-l{k}.tsv` hold 1-based triples `row<TAB>col<TAB>value` with
row = input neuron, col = output neuron (the transpose of the paper orientation).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import re
import tarfile
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from . import __version__
from .atomic import atomic_path
from .errors import UserError
from .network import GC_YMAX, Network, NetworkWriter, gc_bias

LAYER_RE = re.compile(r"(?:^|/)n(\d+)-l(\d+)\.tsv$")


# ---------------------------------------------------------------- TSV triples
def parse_triples(raw: bytes, where: str, shape: tuple[int, int] | None = None, first_line: int = 1):
    """Parse `row<TAB>col<TAB>value` lines (1-based) → (rows0, cols0, values) int64/int64/float64.

    Vectorised (pandas C parser). On any problem, raise UserError naming `where` and the line
    (counted from `first_line`, the number of raw's first line in its file: files read in chunks).
    """
    if not raw.strip():
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    fast = _parse_clean(raw, shape)
    if fast is not None:
        return fast
    try:  # something is wrong: parse as text to say what and where
        df = pd.read_csv(
            io.BytesIO(raw), sep="\t", header=None, names=["r", "c", "v"], dtype=str,
            skip_blank_lines=False, engine="c", na_filter=False,
        )
    except pd.errors.ParserError as e:
        m = re.search(r"line (\d+), saw (\d+)", str(e))
        if m:
            line = int(m.group(1)) + first_line - 1
            raise UserError(f"{where}: line {line}: expected 3 tab-separated fields, found {m.group(2)}") from None
        raise UserError(f"{where}: cannot parse ({e})") from None
    arr = {}
    for col in ("r", "c", "v"):
        s = df[col]
        vals = pd.to_numeric(s, errors="coerce").to_numpy(dtype=np.float64)
        bad = np.isnan(vals)
        if bad.any():
            i = int(np.argmax(bad))
            field = s.iloc[i]
            if field == "":
                raise UserError(f"{where}: line {i + first_line}: expected 3 tab-separated fields")
            raise UserError(f"{where}: line {i + first_line}: non-numeric field {field!r}")
        arr[col] = vals
    for col, name, limit in (("r", "row", shape[0] if shape else None), ("c", "column", shape[1] if shape else None)):
        v = arr[col]
        bad = (v != np.floor(v)) | (v < 1)
        if limit is not None:
            bad |= v > limit
        if bad.any():
            i = int(np.argmax(bad))
            what = "not an integer" if v[i] != np.floor(v[i]) else (
                "index 0 (indices are 1-based)" if v[i] < 1 else f"beyond the declared size {limit}")
            raise UserError(f"{where}: line {i + first_line}: {name} index {v[i]:g} is {what}")
    return arr["r"].astype(np.int64) - 1, arr["c"].astype(np.int64) - 1, arr["v"]


def _parse_clean(raw: bytes, shape):
    """The common case, typed in the C parser (≈10× faster than text then numbers): the triples,
    or None when anything is off (then `parse_triples` finds and names the problem)."""
    try:
        df = pd.read_csv(io.BytesIO(raw), sep="\t", header=None, names=["r", "c", "v"], engine="c",
                         dtype={"r": np.int64, "c": np.int64, "v": np.float64}, na_filter=False,
                         skip_blank_lines=False)
    except (ValueError, pd.errors.ParserError, OverflowError):
        return None
    r, c, v = (df[col].to_numpy() for col in ("r", "c", "v"))
    if r.dtype != np.int64 or c.dtype != np.int64 or v.dtype != np.float64 or np.isnan(v).any():
        return None
    if r.size and (r.min() < 1 or c.min() < 1):
        return None
    for idx, limit in zip((r, c), shape or (None, None)):
        if limit is not None and idx.size and idx.max() > limit:
            return None
    return r - 1, c - 1, v


def format_triples(rows0: np.ndarray, cols0: np.ndarray, values: np.ndarray) -> bytes:
    """1-based triples; values in the official `%e` style (exact for 1/16, shortest-exact otherwise).
    Each distinct value is formatted once (a layer has one, or few, on Graph Challenge networks)."""
    from .decimal_text import triples  # compiled: 4·10⁹ lines at the target size

    fmt = "%.6e" if _six_digits_exact(values) else "%.9g"
    distinct_values, which = np.unique(values.astype(np.float64), return_inverse=True)
    tokens = [(fmt % x).encode() for x in distinct_values.tolist()]
    return triples(np.asarray(rows0) + 1, np.asarray(cols0) + 1, which.reshape(-1), tokens).tobytes()


def _six_digits_exact(values: np.ndarray) -> bool:
    """True if '%.6e' round-trips every float32 value (as for the challenge's 0.0625)."""
    v = np.unique(values.astype(np.float32))
    if v.size > 4096:
        return False
    return all(np.float32(float(f"{x:.6e}")) == x for x in v)


# ---------------------------------------------------------------- networks
def _members(src: Path, wanted):
    """Yield (name, where, bytes) of the wanted files of a directory or a .tar(.gz) archive, one
    at a time (an archive is read in one streaming pass)."""
    if src.is_dir():  # network.json and bias files first: layers then get their biases at once
        for p in sorted(src.rglob("*"), key=lambda p: (not p.name.endswith((".json", "-bias.tsv")), str(p))):
            name = str(p.relative_to(src))
            if p.is_file() and wanted(name):
                yield name, str(p), p.read_bytes()
        return
    if not (src.is_file() and src.name.endswith((".tar.gz", ".tgz", ".tar"))):
        raise UserError(f"{src}: not a directory or a neuron{{N}}.tar.gz archive")
    try:
        with tarfile.open(src, "r:*") as tf:
            for member in tf:
                if member.isfile() and wanted(member.name):
                    yield member.name, f"{src}:{member.name}", tf.extractfile(member).read()
    except (tarfile.ReadError, EOFError, OSError, gzip.BadGzipFile) as e:
        raise UserError(f"{src}: truncated or corrupt archive ({e.__class__.__name__}: {e})") from None


def _check_bounds(idx: np.ndarray, limit: int, where: str, what: str) -> None:
    if idx.size and idx.max() >= limit:
        line = int(np.argmax(idx >= limit)) + 1
        raise UserError(f"{where}: line {line}: {what} index {int(idx[line - 1]) + 1} is beyond the declared size {limit}")


def import_gc(src, layers: int | None = None, bias: float | None = None, ymax: float | None = None) -> Network:
    """Read the official layout (directory or archive) into a Network (paper orientation): for
    tests and small networks. `import_gc_to_file` is the same import with one layer in memory."""
    ws, bs = {}, {}

    def put(k, w, b):
        ws[k], bs[k] = w, b

    def fix(k, b, shape):
        ws[k], bs[k] = ws[k] if shape is None else reshape_rows(ws[k], shape), b

    header = stream_gc(src, layers, bias, ymax, put, fix)
    order = sorted(ws)
    return Network([ws[k] for k in order], [bs[k] for k in order], ymax=header["ymax"],
                   activation=header["activation"], provenance=header["provenance"])


def import_gc_to_file(src, path, layers: int | None = None, bias: float | None = None, ymax: float | None = None,
                      progress=None) -> dict:
    """`spdnn import-gc`: each layer file is parsed as it is read and written to the network file
    at once (archive members come in the archive's order, so layers are written in that order),
    so memory is one layer's text and matrix whatever the depth. Atomic: a bad or missing layer
    file leaves no output. Returns the header (widths, nnz, ...)."""
    with NetworkWriter(path, None, any_order=True) as out:
        def fix(k, b, shape):  # shape: None, or the true one of a layer first taken as N x N
            if shape is None:
                out.replace_bias(k, b)
            else:
                out.rewrite_layer(k, reshape_rows(out.read_layer(k), shape), b)

        header = stream_gc(src, layers, bias, ymax, out.write_layer, fix, progress)
        out.set_header(header["widths"], header["ymax"], header["activation"], header["provenance"])
    return header


def reshape_rows(w: sp.csr_matrix, shape) -> sp.csr_matrix:
    """W read as n0 x n0 before network.json gave its true shape: the same entries, other bounds."""
    n_out, n_in = shape
    if w.indptr[min(n_out, w.shape[0])] != w.nnz or (w.nnz and int(w.indices.max()) >= n_in):
        raise ValueError(f"entries outside {n_out}x{n_in}")
    indptr = np.concatenate([w.indptr[:n_out + 1], np.full(max(0, n_out - w.shape[0]), w.nnz, w.indptr.dtype)])
    return sp.csr_matrix((w.data, w.indices, indptr), shape=shape)


def stream_gc(src, layers, bias, ymax, put, fix, progress=None) -> dict:
    """The import, one layer file at a time: put(k, W^k, b^k) as each is parsed. A layer read before
    network.json (an archive's order) is taken as N x N with the challenge bias, the official
    layout; fix(k, b, shape) later gives it the bias network.json names, and its shape when that
    is not N x N (else shape is None). A layer whose
    entries do not fit N x N waits for network.json (only such layers are held). Returns the header."""
    src = Path(src)
    if not src.exists():
        raise UserError(f"{src}: no such file or directory")
    state = _Import(src, layers, bias, put)
    wanted = lambda name: bool(LAYER_RE.search(name)) or name.endswith(("network.json", "-bias.tsv"))  # noqa: E731
    for name, where, raw in _members(src, wanted):
        if name.endswith("network.json"):
            try:
                state.meta = json.loads(raw)
            except json.JSONDecodeError as e:
                raise UserError(f"{where}: invalid JSON ({e})") from None
            for k, held in sorted(state.pending.items()):
                state.emit(k, *held)
            state.pending.clear()
        elif name.endswith("-bias.tsv"):
            state.extras[name] = raw
        else:
            state.layer(name, where, raw)
            if progress:
                progress(len(state.shapes), state.depth())
    return state.finish(fix, ymax)


class _Import:
    """What `stream_gc` knows so far: network.json, bias files, layers written and held."""

    def __init__(self, src, layers, bias, put):
        self.src, self.layers, self.bias, self.put = src, layers, bias, put
        self.meta, self.extras, self.digests, self.shapes, self.pending = None, {}, {}, {}, {}
        self.early, self.neurons, self.nnz = [], set(), 0

    def depth(self):
        return self.layers if self.layers is not None else (len(self.meta["widths"]) - 1 if self.meta else None)

    def shape(self, k):
        w = self.meta["widths"] if self.meta else None
        n0 = next(iter(self.neurons))
        return (w[k], w[k - 1]) if w and k < len(w) else (n0, n0)

    def layer(self, name, where, raw):
        m = LAYER_RE.search(name)
        k = int(m.group(2))
        self.neurons.add(int(m.group(1)))
        if len(self.neurons) > 1:
            raise UserError(f"{self.src}: layer files name different neuron counts {sorted(self.neurons)}")
        if self.depth() is not None and k > self.depth():
            return
        r, c, v = parse_triples(raw, where)
        self.digests[name] = hashlib.sha256(raw).hexdigest()
        del raw
        shape = self.shape(k)
        if self.meta is None and r.size and (r.max() >= shape[1] or c.max() >= shape[0]):
            # 1-based ids beyond N x N: a non-square layer whose network.json comes later (or an error)
            self.pending[k] = (where, r.astype(np.int32), c.astype(np.int32), v.astype(np.float32))
            return
        self.emit(k, where, r, c, v)

    def emit(self, k, where, r, c, v):
        shape = self.shape(k)
        _check_bounds(r, shape[1], where, "row")
        _check_bounds(c, shape[0], where, "column")
        # TSV row = input neuron = our column; TSV col = output neuron = our row.
        w = sp.csr_matrix((v.astype(np.float32), (c.astype(np.int32), r.astype(np.int32))), shape=shape)
        named = self.meta["biases"][k - 1] if self.meta and k <= len(self.meta["biases"]) else None
        if self.meta is None or (isinstance(named, str) and not any(n.endswith(named) for n in self.extras)):
            self.early.append(k)  # its bias (network.json, a bias file) comes later in the archive
            b = np.full(shape[0], gc_bias(next(iter(self.neurons)), self.bias), np.float32)
        else:
            b = _bias_from_meta(self.meta, k, shape[0], self.extras, self.src)
        self.put(k, w, b)
        self.shapes[k] = shape
        self.nnz += w.nnz

    def finish(self, fix, ymax) -> dict:
        for k, held in sorted(self.pending.items()):  # no network.json: N x N, and the bounds say what is wrong
            self.emit(k, *held)
        if not self.shapes:
            raise UserError(f"{self.src}: no layer files n{{N}}-l{{k}}.tsv found")
        n0, meta = next(iter(self.neurons)), self.meta
        count = self.depth() if self.depth() is not None else max(self.shapes)
        missing = [k for k in range(1, count + 1) if k not in self.shapes]
        if missing:
            raise UserError(f"{self.src}: missing layer file n{n0}-l{missing[0]}.tsv (need layers 1..{count})")
        extra = sorted(k for k in self.shapes if k > count)
        if extra:
            raise UserError(f"{self.src}: layer file n{n0}-l{extra[0]}.tsv is beyond the {count} layers of network.json")
        widths = [int(x) for x in meta["widths"][: count + 1]] if meta else [n0] * (count + 1)
        if meta:
            for k in self.early:
                shape = (widths[k], widths[k - 1])
                try:
                    fix(k, _bias_from_meta(meta, k, widths[k], self.extras, self.src),
                        None if shape == self.shapes[k] else shape)
                except ValueError:
                    raise UserError(f"{self.src}: layer {k} has entries outside the {shape[0]}x{shape[1]} "
                                    f"that network.json gives it") from None
            net_ymax = float(meta.get("ymax", GC_YMAX)) if meta.get("ymax") is not None else np.inf
            activation = meta.get("activation", "relu")
        else:
            net_ymax, activation = GC_YMAX, "relu"
        if ymax is not None:
            net_ymax = ymax
        prov = {"generator": "import-gc", "source": self.src.name, "layers": count,
                "sha256": dict(sorted(self.digests.items())), "spdnn_version": __version__}
        if meta and "provenance" in meta:
            prov["source_provenance"] = meta["provenance"]
        return {"widths": widths, "ymax": net_ymax, "activation": activation, "provenance": prov, "nnz": self.nnz}


def _bias_from_meta(meta, k, width, extras: dict, src):
    b = meta["biases"][k - 1]
    if isinstance(b, (int, float)):
        return np.full(width, b, np.float32)
    match = [n for n in extras if n.endswith(str(b))]
    if not match:
        raise UserError(f"{src}: network.json names bias file {b} for layer {k}, which is missing")
    vals = np.loadtxt(io.BytesIO(extras[match[0]]), dtype=np.float64, ndmin=1)
    if vals.size != width:
        raise UserError(f"{src}: bias file {b} has {vals.size} values, layer {k} has {width} neurons")
    return vals.astype(np.float32)


def export_gc(net: Network, outdir) -> Path:
    """Write OUTDIR/neuron{n0}/n{n0}-l{k}.tsv for k = 1..L plus OUTDIR/network.json."""
    return export_layers(net.widths, net.ymax, net.activation, net.provenance, zip(net.layers, net.biases), outdir)


def export_layers(widths, ymax, activation, provenance, layers, outdir) -> Path:
    """`export_gc` from any iterable of (W^k, b^k): `network.iter_layers` streams a file, one
    layer in memory at a time."""
    outdir = Path(outdir)
    n0 = widths[0]
    sub = outdir / f"neuron{n0}"
    sub.mkdir(parents=True, exist_ok=True)
    meta_biases = []
    for k, (w, b) in enumerate(layers, start=1):
        w = sp.csr_matrix(w)
        coo = (w if w.has_sorted_indices else w.sorted_indices()).tocoo()
        # CSR order is the official one, by output neuron (the file's column), then input (its row)
        with atomic_path(sub / f"n{n0}-l{k}.tsv") as tmp:
            tmp.write_bytes(format_triples(coo.col, coo.row, coo.data))
        if b.size and np.all(b == b[0]):
            meta_biases.append(float(b[0]))
        else:
            name = f"n{n0}-l{k}-bias.tsv"
            with atomic_path(sub / name) as tmp:
                np.savetxt(tmp, b.astype(np.float64), fmt="%.9g")
            meta_biases.append(name)
    meta = {
        "format": "spdnn-graphchallenge-export",
        "widths": list(widths),
        "biases": meta_biases,
        "ymax": None if not np.isfinite(ymax) else float(ymax),
        "activation": activation,
        "provenance": provenance,
    }
    with atomic_path(outdir / "network.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return sub


# ---------------------------------------------------------------- categories (images: images.py)
def read_categories(path) -> np.ndarray:
    """One 1-based image id per line → sorted 0-based ids."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: no such categories file")
    text = path.read_text().split()
    try:
        ids = np.array([int(t) for t in text], dtype=np.int64)
    except ValueError:
        bad = next(t for t in text if not t.lstrip("-").isdigit())
        raise UserError(f"{path}: non-integer image id {bad!r}") from None
    if ids.size and ids.min() < 1:
        raise UserError(f"{path}: image ids are 1-based; found {ids.min()}")
    return np.sort(ids - 1)


def write_categories(ids0: np.ndarray, path) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text("".join(f"{i + 1}\n" for i in np.sort(ids0)))
