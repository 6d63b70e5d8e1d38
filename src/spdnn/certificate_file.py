"""The semidefinite certificate as a file (`spdnn certificate`), read back by `spdnn bound --certificate`.

One certificate serves every K (`semidefinite_bound.py`), so the workflow finds it once per
network and each K's bound job reads it: the K still run side by side on a cluster. The file is
JSON: y, μ and λ_max (floats written so that they read back exactly), the form's constant, how
it was found, and a digest of the network's layer patterns. λ_max belongs to that network's Q:
with another network's (y, λ) the arithmetic would still give a number, but not a bound. So the
reader recomputes the digest (one pass over the layers, patterns only) and refuses a mismatch.
A certificate that could not be found within its budgets is a file too, holding the reason, so the
bound jobs report why there is no semidefinite bound instead of failing.
"""

from __future__ import annotations

import hashlib
import json

import numpy as np

from .atomic import write_text_atomic
from .errors import UserError
from .hypergraph import vertex_offsets
from .semidefinite_bound import AgreementForm, Certificate

FORMAT = "spdnn semidefinite certificate 1"


def pattern_digest(layers, widths) -> tuple[str, list]:
    """(sha256 of the widths and every layer's CSR pattern, each layer's row weights), one layer at a time."""
    h = hashlib.sha256(np.asarray(widths, dtype=np.int64).tobytes())
    row_weights = []
    for w in layers:
        indptr = np.asarray(w.indptr, dtype=np.int64)
        h.update(indptr.tobytes())
        h.update(np.asarray(w.indices, dtype=np.int64).tobytes())
        row_weights.append(np.diff(indptr))
    return h.hexdigest(), row_weights


def write_certificate(path, found, network: str, digest: str, epsilon: float) -> None:
    """`found`: a Certificate, or the reason (str) there is none within the budgets."""
    doc = {"format": FORMAT, "network": network, "pattern_sha256": digest, "tuned_for_epsilon": epsilon}
    if isinstance(found, str):
        doc["reason"] = found
    else:
        doc.update({"constant": found.form.constant, "lambda_max": found.lambda_max,
                    "lambda_verified": found.lambda_verified, "rank": found.rank, "steps": found.steps,
                    "seconds": found.seconds, "mu": found.mu.tolist(), "y": found.y.tolist()})
    write_text_atomic(path, json.dumps(doc) + "\n")


def read_certificate(path, layers, widths, epsilon: float):
    """The Certificate in `path` for this network and balance ε (a str: the reason the file gives
    for having none). (y, μ) bound every ε; ε only decides the balance slack taken off, so the
    bound's own ε is used, not the one the multipliers were tuned for. Refuses, in one line, a
    file that is not a certificate or belongs to another network."""
    try:
        with open(path) as f:
            doc = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: not a readable certificate ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise UserError(f"{path}: not an spdnn certificate (write one with `spdnn certificate`)")
    digest, row_weights = pattern_digest(layers, widths)
    if doc.get("pattern_sha256") != digest:
        raise UserError(f"{path}: certificate of another network ({doc.get('network')}); its eigenvalue "
                        "bound holds for that network's layers only")
    if "reason" in doc:
        return str(doc["reason"])
    offsets = vertex_offsets(widths)
    try:
        y, mu = np.asarray(doc["y"], dtype=np.float64), np.asarray(doc["mu"], dtype=np.float64)
        lam, constant = float(doc["lambda_max"]), float(doc["constant"])
        found = (int(doc["rank"]), int(doc["steps"]), float(doc["seconds"]), bool(doc["lambda_verified"]))
    except (KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: damaged certificate ({e!r})") from None
    if y.shape != (offsets[-1],) or mu.shape != (len(widths),) or not np.isfinite([*y, *mu, lam, constant]).all():
        raise UserError(f"{path}: damaged certificate (y, μ or λ_max of the wrong size or not finite)")
    # The bound needs the constant and the layers' sizes, not Q itself (q = None)
    form = AgreementForm(None, constant, offsets, row_weights)
    return Certificate(form, epsilon, mu, y, lam, *found)
