"""The semidefinite bound: its quadratic form never above the volume at K = 2 (and equal to it where
every column's readers agree), the bound never above the exact optimum (K = 2 and 3) nor any
partition we build, one certificate for every K, and informative where the class-count bound is 0
(random networks)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import spdnn
from test_bound import CASES, exact_optimum, tiny_radix, tiny_random, tiny_uneven

import spdnn.semidefinite_bound as sdb
from spdnn.bound import volume_lower_bound
from spdnn.generate import random_sparse
from spdnn.hypergraph import identical_rows
from spdnn.partition import METHODS, partition_network
from spdnn.semidefinite_bound import agreement_form, eigenvalue_verified, semidefinite_certificate
from spdnn.volume import partition_metrics


def volume(layers, widths, part):
    return partition_metrics(layers, widths, part, 2)["volume_forward"]


@pytest.mark.parametrize("make", [lambda: tiny_radix(8, 3, (2, 4, 2, 8), 1), lambda: tiny_random([9, 12, 10, 12], 3, 2),
                                  lambda: tiny_uneven([6, 10, 9, 10], 3, 4)],
                         ids=["radix", "random", "uneven classes"])
def test_agreement_form_never_exceeds_the_volume(make):
    layers, widths = make()
    form = agreement_form(layers, widths)
    classes = [identical_rows(w) for w in layers]
    rng = np.random.default_rng(0)
    for trial in range(400):
        part = rng.integers(0, 2, sum(widths))
        if trial % 2:  # identical rows together: where the form is tight, so where a wrong weight shows
            part[widths[0]:] = np.concatenate([rng.integers(0, 2, c.max() + 1)[c] for c in classes])
        assert form.words_at_least(2 * part - 1) <= volume(layers, widths, part) + 1e-9


def test_agreement_form_is_exact_where_every_columns_readers_agree():
    # Layer t's row i reads the columns whose group is g(i) or g(i) + s_t: column classes are read by
    # the groups c and c − s_t, which agree when a group's part is a function of g mod s_t.
    groups, strides = 8, (2, 4, 2, 8)
    layers, widths = tiny_radix(groups, 3, strides, 1)
    g = np.arange(widths[0]) % groups
    rng = np.random.default_rng(3)
    for _ in range(20):
        spins = [rng.integers(0, 2, widths[0])]  # the inputs: any owners
        spins += [(g % s < s // 2).astype(np.int64) ^ rng.integers(0, 2) for s in strides]
        part = np.concatenate(spins)
        words = volume(layers, widths, part)
        assert words > 0
        assert agreement_form(layers, widths).words_at_least(2 * part - 1) == pytest.approx(words)


@pytest.mark.parametrize("name, make, k", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("epsilon", [0.0, 0.3])
def test_semidefinite_bound_never_exceeds_the_exact_optimum(name, make, k, epsilon):
    for seed in range(3):
        layers, widths = make(seed)
        opt = exact_optimum(layers, widths, k, epsilon)
        lb = semidefinite_certificate(layers, widths, epsilon).bound(k)
        assert 0 <= lb <= opt, (seed, lb, opt)
        assert lb > 0 or not name.startswith("random")  # not vacuous where rows do not repeat


def test_semidefinite_bound_below_every_method_and_informative_on_a_random_network():
    net = random_sparse([64, 128, 128, 128, 128], 8, seed=5)
    cert = semidefinite_certificate(net.layers, net.widths)
    for k, share in ((2, 0.5), (4, 0.3)):  # measured: 201 of 358 words, 301 of 875
        vols = {m: partition_network(net.layers, net.widths, k, m)[1]["volume_forward"] for m in METHODS}
        assert cert.bound(k) <= min(vols.values()), (k, cert.bound(k), vols)
        assert cert.bound(k) >= share * vols["hypergraph"], (k, cert.bound(k), vols)
        combined = volume_lower_bound(net.layers, net.widths, k, semidefinite=cert)
        assert combined["lower_bound_forward"] == cert.bound(k) and combined["lower_bound_classes"] == 0


def test_bound_cli_reports_both_bounds_and_repeats_itself(tmp_path):
    spdnn("generate", "random", "--widths", "32,64,64,64", "--nnz-per-row", 6, "--seed", 1, "-o", tmp_path / "r.h5")
    first, again = ([json.loads(line) for line in spdnn("bound", tmp_path / "r.h5", "-k", "2,4").stdout.splitlines()]
                    for _ in range(2))
    for row in first:
        assert row["lower_bound_forward"] == row["semidefinite"]["lower_bound_forward"] > row["lower_bound_classes"] == 0
        assert row["semidefinite"]["lambda_verified"] is True
    k2, k4 = first
    assert k4["semidefinite"]["relaxation"] == k2["semidefinite"]["relaxation"]  # one certificate for both
    assert k4["lower_bound_forward"] > k2["lower_bound_forward"]
    assert again == [dict(r, seconds=a["seconds"], semidefinite=dict(r["semidefinite"], seconds=a["semidefinite"]["seconds"]))
                     for r, a in zip(first, again)]  # same seed, same numbers
    off = json.loads(spdnn("bound", tmp_path / "r.h5", "-k", 2, "--no-semidefinite").stdout)
    assert off["lower_bound_forward"] == 0 and "semidefinite" not in off


def dense_top_eigenvalue(cert):
    form, n = cert.form, cert.y.size
    ones = [np.zeros(n) for _ in cert.mu]
    for t, v in enumerate(ones):
        v[form.offsets[t]:form.offsets[t + 1]] = 1.0
    dense = form.q.toarray() - sum(mu * np.outer(v, v) for mu, v in zip(cert.mu, ones)) - np.diag(cert.y)
    return np.linalg.eigvalsh(dense)[-1]


def test_certified_eigenvalue_is_above_the_dense_spectrum_and_the_check_is_sharp():
    """The bound rests on λ_max(Q' − diag y): Lanczos's value, then proved by the block-Cholesky
    check. On a network small enough for a dense eigensolver the certificate's λ is never below the
    true top and not far above it, and the check itself accepts just above the true top and
    rejects just below it (in every layer position: the failing block is found wherever it is)."""
    net = random_sparse([40, 80, 80, 80], 6, seed=2)
    cert = semidefinite_certificate(net.layers, net.widths)
    true = dense_top_eigenvalue(cert)
    assert cert.lambda_verified
    assert true - 1e-12 <= cert.lambda_max <= true + 1e-4, (cert.lambda_max, true)
    assert eigenvalue_verified(cert.form, cert.mu, cert.y, true + 1e-7)
    assert not eigenvalue_verified(cert.form, cert.mu, cert.y, true - 1e-7)
    for t in range(1, 4):  # a y that makes one layer's block the culprit: the check must see it there
        y = cert.y.copy()
        y[cert.form.offsets[t]] -= 1.0
        shifted = dense_top_eigenvalue(semidefinite_bound_with(cert, y))
        assert eigenvalue_verified(cert.form, cert.mu, y, shifted + 1e-7)
        assert not eigenvalue_verified(cert.form, cert.mu, y, shifted - 1e-7)


def semidefinite_bound_with(cert, y):
    return sdb.Certificate(cert.form, cert.epsilon, cert.mu, y, cert.lambda_max, cert.rank)


def test_eigenvalue_left_unverified_where_the_layers_are_too_wide(monkeypatch):
    """Past VERIFY_WIDTH the dense check is skipped and says so: Lanczos's value stands, unproved."""
    net = random_sparse([40, 80, 80], 6, seed=3)
    monkeypatch.setattr(sdb, "VERIFY_WIDTH", 64)
    cert = semidefinite_certificate(net.layers, net.widths)
    assert not cert.lambda_verified and cert.summary(2)["lambda_verified"] is False
    assert cert.lambda_max >= dense_top_eigenvalue(cert) - 1e-9


def test_a_lanczos_value_below_the_top_is_raised_until_proved(monkeypatch):
    """Lanczos can miss the top of the spectrum: the check then fails and λ is raised until it
    passes, so the certificate's λ is at or above the true top and the bound stays a bound."""
    net = random_sparse([40, 80, 80], 6, seed=3)
    exact = semidefinite_certificate(net.layers, net.widths)
    lanczos = sdb._largest_eigenvalue
    monkeypatch.setattr(sdb, "_largest_eigenvalue", lambda *a: lanczos(*a) - 3e-4)  # a Ritz value short of the top
    cert = semidefinite_certificate(net.layers, net.widths)
    true = dense_top_eigenvalue(cert)
    assert cert.lambda_verified and true <= cert.lambda_max <= true + 1e-3
    assert cert.bound(2) <= exact.bound(2)


def test_certificate_file_serves_every_k_and_only_its_network(tmp_path):
    """`spdnn certificate` once, `spdnn bound --certificate` per K (the workflow's jobs): the same
    numbers as finding it in the bound process; another network's certificate, a file that is not
    one, or --no-semidefinite beside it: one-line errors; a certificate past its budget is a file
    with the reason, and the bound says it."""
    for seed in (1, 2):
        spdnn("generate", "random", "--widths", "32,64,64,64", "--nnz-per-row", 6, "--seed", seed,
              "-o", tmp_path / f"r{seed}.h5")
    spdnn("certificate", tmp_path / "r1.h5", "-o", tmp_path / "c.json")
    direct = [json.loads(line) for line in spdnn("bound", tmp_path / "r1.h5", "-k", "2,4").stdout.splitlines()]
    read = [json.loads(line) for line in
            spdnn("bound", tmp_path / "r1.h5", "-k", "2,4", "--certificate", tmp_path / "c.json").stdout.splitlines()]
    for d, r in zip(direct, read):
        assert r["semidefinite"]["lower_bound_forward"] == d["semidefinite"]["lower_bound_forward"] > 0
        assert r["semidefinite"]["lambda_verified"] and r["lower_bound_forward"] == d["lower_bound_forward"]
    looser = json.loads(spdnn("bound", tmp_path / "r1.h5", "-k", 4, "--epsilon", 0.5,
                              "--certificate", tmp_path / "c.json").stdout)
    assert looser["lower_bound_forward"] < read[1]["lower_bound_forward"]  # the bound's ε, not the file's
    for args, message in [(("r2.h5", "--certificate", "c.json"), "certificate of another network"),
                          (("r1.h5", "--certificate", "r1.h5"), "not a readable certificate"),
                          (("r1.h5", "--certificate", "c.json", "--no-semidefinite"), "contradict")]:
        proc = spdnn("bound", args[0], "-k", 2, *args[1:], check=False, cwd=tmp_path)
        assert proc.returncode != 0 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr
    spdnn("certificate", tmp_path / "r1.h5", "--max-seconds", 1e-6, "-o", tmp_path / "none.json")
    row = json.loads(spdnn("bound", tmp_path / "r1.h5", "-k", 2, "--certificate", tmp_path / "none.json").stdout)
    assert row["semidefinite"]["lower_bound_forward"] is None and "--max-seconds" in row["semidefinite"]["reason"]
