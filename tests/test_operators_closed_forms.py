"""Closed-form and second-method checks of the subspace operators (simulator.attacks.operators)
and the subspace helpers (simulator.attacks.subspaces), written for mutation testing.

Every operator is compared with a dense orthonormal basis B (N, n, k) built here by hand in
numpy, independently of the operator's own code path:

    DenseBasis                B itself (per point, or one shared (n, k) basis)
    FactoredBasis             B_i = E Q_i
    HypersurfaceTangents      B_i = E H_i[:, 1:], H_i = I - 2 w w^T, w = (nu + s e_1) / |nu + s e_1|,
                              s = +1 for nu_1 >= 0 and -1 otherwise (an explicit Householder matrix)
    CoordinateSubset          B_i = the identity's columns indices[i]
    StructuredRandomSubspace  B_i^T = S_i F D_3 F D_2 F D_1 with F the real Fourier matrix written
                              out from cosines and sines (not from an FFT) and D_r = diag(+-1)

and then coefficients = B^T v, expand = B c, project = B B^T v, remove = (I - B B^T) v, basis = B,
shared_energy = ||inner w B||_F^2 are checked entry by entry (float64, tiny sizes). The random
draws (Haar bases, coordinate subsets, structured signs, Gaussian starts) are recomputed from
their documented per-point numpy streams default_rng([seed, salt, i]), and the Haar bases from
a hand-written Gram-Schmidt. The whole file runs in a few seconds.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from simulator.attacks import operators
from simulator.attacks import subspaces as subspaces_module
from simulator.attacks.operators import (
    CoordinateSubset,
    DenseBasis,
    FactoredBasis,
    HypersurfaceTangents,
    StructuredRandomSubspace,
    real_fourier,
    real_fourier_transpose,
    structured_draws,
)
from simulator.attacks.subspaces import (
    HAAR_MAX_ENTRIES,
    MODES,
    PROJECTIONS,
    as_subspace,
    check_mode,
    coordinate_subset_bases,
    coordinate_subsets,
    gaussian_directions,
    mode_subspace,
    project_off,
    project_onto,
    random_subspace_bases,
    random_subspace_kind,
    random_subspaces,
    subspace_dim,
    subspace_frame,
    tangent_spaces,
    tangent_subspaces,
)
from simulator.manifolds.sphere import Sphere

F64 = torch.float64
N_POINTS, AMBIENT, DIM, HOST = 4, 7, 3, 4  # an odd n: the real Fourier transform's unpaired terms
ROWS = [3, 0, 3, 1]  # rows name points: out of order, with a repeat (many rays per point)
KINDS = ["dense", "shared", "factored", "hypersurface", "coordinate", "structured", "structured_even"]


# --------------------------------------------------------------------------- hand-built bases


def _orthonormal(rng, rows, cols):
    return np.linalg.qr(rng.standard_normal((rows, cols)))[0]


def fourier_matrix(n: int) -> np.ndarray:
    """The orthonormal real Fourier matrix from its closed form: row 0 = 1/sqrt(n); for
    j = 1 .. (n-1)//2 the rows sqrt(2/n) cos(2 pi j t / n) and -sqrt(2/n) sin(2 pi j t / n)
    (real and imaginary part of the DFT term e^{-2 pi i j t / n}); for even n a last row (-1)^t / sqrt(n)."""
    t = np.arange(n)
    rows = [np.full(n, 1 / math.sqrt(n))]
    for j in range(1, (n - 1) // 2 + 1):
        rows.append(math.sqrt(2 / n) * np.cos(2 * math.pi * j * t / n))
        rows.append(-math.sqrt(2 / n) * np.sin(2 * math.pi * j * t / n))
    if n % 2 == 0:
        rows.append((-1.0) ** t / math.sqrt(n))
    return np.array(rows)


def householder_tangents(embedding: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """B_i = E H_i[:, 1:] with the explicit Householder matrix H_i = I - 2 w w^T."""
    h = embedding.shape[1]
    out = []
    for nu in normals:
        w = nu + (1.0 if nu[0] >= 0 else -1.0) * np.eye(h)[0]
        w = w / np.linalg.norm(w)
        out.append(embedding @ (np.eye(h) - 2 * np.outer(w, w))[:, 1:])
    return np.stack(out)


def structured_dense(negative: np.ndarray, selection: np.ndarray) -> np.ndarray:
    """B_i = (S_i F D_3 F D_2 F D_1)^T from dense matrices."""
    n = negative.shape[2]
    fourier = fourier_matrix(n)
    out = []
    for signs, chosen in zip(negative, selection):
        transposed = np.eye(n)
        for round_signs in signs:
            transposed = fourier @ np.diag(1.0 - 2.0 * round_signs) @ transposed
        out.append(transposed[chosen].T)
    return np.stack(out)


def _case(kind):
    """(operator, its dense bases B (N, n, k) built independently, in float64)."""
    rng = np.random.default_rng({"dense": 1, "shared": 2, "factored": 3, "hypersurface": 4, "coordinate": 5,
                                 "structured": 6, "structured_even": 7}[kind])
    if kind == "dense":
        bases = np.stack([_orthonormal(rng, AMBIENT, DIM) for _ in range(N_POINTS)])
        return DenseBasis(torch.tensor(bases)), bases
    if kind == "shared":
        basis = _orthonormal(rng, AMBIENT, DIM)
        return DenseBasis(torch.tensor(basis), n_points=N_POINTS), np.stack([basis] * N_POINTS)
    if kind == "factored":
        embedding = _orthonormal(rng, AMBIENT, HOST)
        local = np.stack([_orthonormal(rng, HOST, DIM) for _ in range(N_POINTS)])
        return FactoredBasis(torch.tensor(embedding), torch.tensor(local)), embedding @ local
    if kind == "hypersurface":
        embedding = _orthonormal(rng, AMBIENT, HOST)
        normals = rng.standard_normal((N_POINTS, HOST))
        normals[1, 0] = 0.0  # nu_1 = 0 exactly: the reflector uses +e_1
        normals[2, 0] = -abs(normals[2, 0]) - 0.5  # nu_1 < 0: the reflector uses -e_1
        normals[3, 0] = abs(normals[3, 0]) + 0.5
        normals /= np.linalg.norm(normals, axis=1, keepdims=True)
        return (HypersurfaceTangents(torch.tensor(embedding), torch.tensor(normals)),
                householder_tangents(embedding, normals))
    if kind == "coordinate":
        indices = np.stack([rng.choice(AMBIENT, DIM, replace=False) for _ in range(N_POINTS)])
        return CoordinateSubset(torch.tensor(indices), AMBIENT, F64), np.eye(AMBIENT)[:, indices].transpose(1, 0, 2)
    n = AMBIENT if kind == "structured" else 6
    negative = rng.integers(0, 2, size=(N_POINTS, 3, n)).astype(bool)
    selection = np.stack([rng.choice(n, DIM, replace=False) for _ in range(N_POINTS)])
    return (StructuredRandomSubspace(torch.tensor(negative), torch.tensor(selection), F64),
            structured_dense(negative, selection))


def _randn(*shape, seed=0):
    return torch.tensor(np.random.default_rng(seed).standard_normal(shape))


def _close(actual, expected, **kwargs):
    torch.testing.assert_close(actual, torch.as_tensor(np.array(expected), dtype=actual.dtype), **kwargs)


# --------------------------------------------------------------------------- every operator


def test_the_hand_built_bases_are_orthonormal():
    """The reference bases themselves: B_i^T B_i = I for every kind (so they can stand for the spec)."""
    for kind in KINDS:
        bases = _case(kind)[1]
        np.testing.assert_allclose(bases.transpose(0, 2, 1) @ bases, np.broadcast_to(np.eye(DIM), (N_POINTS, DIM, DIM)),
                                   atol=1e-12)


@pytest.mark.parametrize("kind", KINDS)
def test_coefficients_are_b_transpose_v(kind):
    """coefficients(v) = B_i^T v for v (N, n), (N, a, n) and (N, a, b, n), and with rows: row j uses B_rows[j]."""
    operator, bases = _case(kind)
    n = bases.shape[1]
    assert (operator.n_points, operator.ambient_dim, operator.dim) == (N_POINTS, n, DIM)
    for extra in [(), (2,), (2, 3)]:
        v = _randn(N_POINTS, *extra, n, seed=len(extra))
        expected = np.einsum("pnk,p...n->p...k", bases, v.numpy())
        _close(operator.coefficients(v), expected)
        _close(operator.coefficients(v, rows=None), expected)
        w = _randn(len(ROWS), *extra, n, seed=10 + len(extra))
        _close(operator.coefficients(w, ROWS), np.einsum("pnk,p...n->p...k", bases[ROWS], w.numpy()))


@pytest.mark.parametrize("kind", KINDS)
def test_expand_is_b_c(kind):
    """expand(c) = B_i c for c (N, k), (N, a, k) and (N, a, b, k), and with rows."""
    operator, bases = _case(kind)
    for extra in [(), (2,), (2, 3)]:
        c = _randn(N_POINTS, *extra, DIM, seed=20 + len(extra))
        _close(operator.expand(c), np.einsum("pnk,p...k->p...n", bases, c.numpy()))
        d = _randn(len(ROWS), *extra, DIM, seed=30 + len(extra))
        _close(operator.expand(d, ROWS), np.einsum("pnk,p...k->p...n", bases[ROWS], d.numpy()))


@pytest.mark.parametrize("kind", KINDS)
def test_project_and_remove_are_the_explicit_projectors(kind):
    """project(v) = P v and remove(v) = (I - P) v with P = B B^T formed as a dense matrix."""
    operator, bases = _case(kind)
    n = bases.shape[1]
    projectors = bases @ bases.transpose(0, 2, 1)
    v = _randn(N_POINTS, 2, n, seed=40)
    _close(operator.project(v), np.einsum("pmn,pan->pam", projectors, v.numpy()))
    _close(operator.remove(v), v.numpy() - np.einsum("pmn,pan->pam", projectors, v.numpy()))
    w = _randn(len(ROWS), n, seed=41)
    _close(operator.project(w, ROWS), np.einsum("rmn,rn->rm", projectors[ROWS], w.numpy()))
    _close(operator.remove(w, ROWS), w.numpy() - np.einsum("rmn,rn->rm", projectors[ROWS], w.numpy()))


@pytest.mark.parametrize("kind", KINDS)
def test_basis_is_the_dense_basis(kind):
    """basis() = B (all points), basis(rows) = B[rows], basis(dtype=float32) = B rounded to float32."""
    operator, bases = _case(kind)
    full = operator.basis()
    assert full.dtype == F64
    _close(full, bases)
    _close(operator.basis(ROWS), bases[ROWS])
    _close(operator.basis(torch.tensor(ROWS)), bases[ROWS])
    single = operator.basis(dtype=torch.float32)
    assert single.dtype == torch.float32
    _close(single, bases.astype(np.float32), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_select_keeps_the_chosen_points(kind):
    """select(rows) is the family of points rows[0], rows[1], ...: its basis is B[rows], n_points = len(rows)."""
    operator, bases = _case(kind)
    chosen = operator.select(ROWS)
    assert type(chosen) is type(operator)
    assert (chosen.n_points, chosen.ambient_dim, chosen.dim) == (len(ROWS), bases.shape[1], DIM)
    _close(chosen.basis(), bases[ROWS])
    assert chosen.dtype == F64
    twice = chosen.select([2, 1])  # point ROWS[2] = 3 then ROWS[1] = 0
    _close(twice.basis(), bases[[3, 0]])
    if kind != "shared":  # see test_a_shared_dense_basis_selects_none
        everything = operator.select(None)  # None: every point, in order
        assert everything.n_points == N_POINTS
        _close(everything.basis(), bases)


@pytest.mark.xfail(raises=TypeError, strict=True, reason="DenseBasis.select takes len(rows) of a shared basis")
def test_a_shared_dense_basis_selects_none():
    """Known gap, kept visible: rows=None means every point everywhere else, but a shared DenseBasis's
    select(None) raises TypeError (len(None)); no caller passes None today."""
    operator, bases = _case("shared")
    assert operator.select(None).n_points == N_POINTS


@pytest.mark.parametrize("kind", KINDS)
def test_to_changes_dtype_and_device_only(kind):
    """to(dtype=float32) gives the same subspaces in float32; to() keeps everything; to(device="meta")
    moves the operator (the meta device stands for a second device)."""
    operator, bases = _case(kind)
    single = operator.to(dtype=torch.float32)
    assert type(single) is type(operator) and single.dtype == torch.float32 and single.n_points == N_POINTS
    assert single.basis().dtype == torch.float32
    _close(single.basis(), bases.astype(np.float32), atol=1e-6, rtol=0)
    same = operator.to()
    assert same.dtype == F64 and same.device == torch.device("cpu") and same.n_points == N_POINTS
    _close(same.basis(), bases)
    again = single.to(device="cpu")
    assert again.dtype == torch.float32 and again.device == torch.device("cpu")
    meta = operator.to(device="meta")
    assert meta.device.type == "meta" and meta.dtype == F64 and meta.n_points == N_POINTS
    for value in vars(meta).values():
        if isinstance(value, torch.Tensor):
            assert value.device.type == "meta"
    if kind != "factored":  # (its no-copy check reads a boolean back, which meta tensors cannot)
        assert meta.basis().device.type == "meta"  # the identity it expands is made on the operator's device
    back = meta.to(dtype=torch.float32)
    assert back.device.type == "meta" and back.dtype == torch.float32


@pytest.mark.parametrize("kind", KINDS)
def test_shared_coefficients_apply_b_transpose_to_one_w(kind):
    """shared_coefficients(w, rows)[r] = w B_rows[r] for one w (d, n): (R, d, k), rows None = every point."""
    operator, bases = _case(kind)
    w = _randn(5, bases.shape[1], seed=50)
    _close(operator.shared_coefficients(w), np.einsum("dn,pnk->pdk", w.numpy(), bases))
    _close(operator.shared_coefficients(w, ROWS), np.einsum("dn,pnk->pdk", w.numpy(), bases[ROWS]))
    many = [0, 1, 2, 3, 3, 2, 1]  # more rows than points: one result per row
    _close(operator.shared_coefficients(w, many), np.einsum("dn,pnk->pdk", w.numpy(), bases[many]))
    _close(operator.shared_coefficients(w, [2]), np.einsum("dn,pnk->pdk", w.numpy(), bases[[2]]))


@pytest.mark.parametrize("width", [2, 4, 6])  # fewer, as many or more rows of w than h = 4
@pytest.mark.parametrize("kind", KINDS)
def test_shared_energy_is_the_frobenius_norm_inside_the_subspace(kind, width):
    """shared_energy(inner, w, rows)[r] = ||inner_r w B_rows[r]||_F^2, for w with fewer, as many
    and more rows than the host dimension (the Householder operator's two formulas)."""
    operator, bases = _case(kind)
    n = bases.shape[1]
    w = _randn(width, n, seed=60)
    inner = _randn(len(ROWS), 3, width, seed=61)
    expected = np.einsum("rmn,rnk->rmk", inner.numpy() @ w.numpy(), bases[ROWS])
    _close(operator.shared_energy(inner, w, ROWS), (expected ** 2).sum(axis=(1, 2)))
    inner_all = _randn(N_POINTS, 2, width, seed=62)
    expected_all = np.einsum("rmn,rnk->rmk", inner_all.numpy() @ w.numpy(), bases)
    _close(operator.shared_energy(inner_all, w), (expected_all ** 2).sum(axis=(1, 2)))


def test_shared_energy_uses_the_callers_total_only_when_the_host_space_is_everything():
    """Householder energy: with E square (E E^T = I) the energy is total - ||inner w E nu||^2, with
    the caller's total taken as given (a total off by delta gives an energy off by delta); with E
    not square the total is ignored (a wrong total changes nothing)."""
    rng = np.random.default_rng(8)
    normals = rng.standard_normal((3, HOST))
    normals /= np.linalg.norm(normals, axis=1, keepdims=True)
    inner = _randn(3, 2, 5, seed=70)
    for ambient in (HOST, AMBIENT):
        embedding = _orthonormal(rng, ambient, HOST)
        operator = HypersurfaceTangents(torch.tensor(embedding), torch.tensor(normals))
        bases = householder_tangents(embedding, normals)
        w = _randn(5, ambient, seed=71)
        explicit = (np.einsum("rmn,rnk->rmk", inner.numpy() @ w.numpy(), bases) ** 2).sum(axis=(1, 2))
        total = torch.tensor(((inner.numpy() @ w.numpy()) ** 2).sum(axis=(1, 2)))
        _close(operator.shared_energy(inner, w, total=total), explicit)
        shifted = operator.shared_energy(inner, w, total=total + 1.5)
        _close(shifted, explicit + (1.5 if ambient == HOST else 0.0))
        permuted = (np.einsum("rmn,rnk->rmk", inner.numpy() @ w.numpy(), bases[[2, 0, 1]]) ** 2).sum(axis=(1, 2))
        _close(operator.shared_energy(inner, w, rows=[2, 0, 1], total=None), permuted)


def test_stored_bytes_are_the_numbers_each_operator_holds():
    """stored_bytes, by hand: N n k or n k numbers for a dense basis, n h + N h k for a factored one,
    n h + 2 N h for Householder tangents (normals and reflectors), N k int64 indices, and N rounds n
    one-byte signs plus N k int64 selections for a structured subspace."""
    assert _case("dense")[0].stored_bytes == N_POINTS * AMBIENT * DIM * 8
    assert _case("shared")[0].stored_bytes == AMBIENT * DIM * 8
    assert DenseBasis(torch.zeros(5, 2, dtype=torch.float32)).stored_bytes == 40
    assert _case("factored")[0].stored_bytes == (AMBIENT * HOST + N_POINTS * HOST * DIM) * 8
    assert _case("hypersurface")[0].stored_bytes == (AMBIENT * HOST + 2 * N_POINTS * HOST) * 8
    assert _case("hypersurface")[0].to(dtype=torch.float32).stored_bytes == (AMBIENT * HOST + 2 * N_POINTS * HOST) * 4
    # int32 indices are stored as int64
    assert CoordinateSubset(torch.zeros(5, 3, dtype=torch.int32), 9).stored_bytes == 5 * 3 * 8
    assert _case("coordinate")[0].stored_bytes == N_POINTS * DIM * 8
    structured = StructuredRandomSubspace(torch.zeros(5, 3, 11, dtype=torch.uint8), torch.zeros(5, 2, dtype=torch.int32))
    assert structured.stored_bytes == 5 * 3 * 11 + 5 * 2 * 8
    assert _case("structured")[0].stored_bytes == N_POINTS * 3 * AMBIENT + N_POINTS * DIM * 8


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a second device (CUDA)")
@pytest.mark.parametrize("kind", KINDS)
def test_operators_on_a_second_device(kind):
    """On CUDA, an operator moved there gives the same numbers with rows given as a CPU list, a CUDA
    tensor or None (the row indices follow the operator's device), and the helpers follow x's device."""
    operator, bases = _case(kind)
    cuda = operator.to(device="cuda")
    assert cuda.device.type == "cuda"
    v = _randn(len(ROWS), bases.shape[1], seed=120)
    expected = np.einsum("rnk,rn->rk", bases[ROWS], v.numpy())
    for rows in (ROWS, torch.tensor(ROWS, device="cuda")):
        _close(cuda.coefficients(v.cuda(), rows).cpu(), expected)
        _close(cuda.select(rows).basis().cpu(), bases[ROWS])
    _close(cuda.coefficients(v[:1].expand(N_POINTS, -1).cuda(), list(range(N_POINTS))).cpu(),
           np.einsum("rnk,n->rk", bases, v[0].numpy()))
    _close(cuda.basis().cpu(), bases)
    _close(cuda.select(None if kind != "shared" else range(N_POINTS)).basis().cpu(), bases)
    w, inner = _randn(5, bases.shape[1], seed=121).cuda(), _randn(len(ROWS), 2, 5, seed=122).cuda()
    energy = (np.einsum("rmn,rnk->rmk", inner.cpu().numpy() @ w.cpu().numpy(), bases[ROWS]) ** 2).sum(axis=(1, 2))
    _close(cuda.shared_energy(inner, w, ROWS).cpu(), energy)
    x = torch.zeros(N_POINTS, AMBIENT, dtype=F64, device="cuda")
    for mode in ("random_on", "coordinate_off"):
        assert mode_subspace(mode, x, dim=2).basis().device.type == "cuda"
    assert subspace_frame("off", x, _case("dense")[0]).device.type == "cuda"
    assert gaussian_directions([0], 2, 3, seed=0, device="cuda").device.type == "cuda"


# --------------------------------------------------------------------------- the dense basis budget


def test_dense_basis_budget_boundary(monkeypatch):
    """basis() needs count * n * k * bytes-per-entry (of the requested dtype): exactly at the
    budget it is built, one byte above it is a MemoryError."""
    operator, bases = _case("dense")  # float64: 4 * 7 * 3 * 8 = 672 bytes
    monkeypatch.setattr(operators, "DENSE_BASIS_BYTES", 672)
    _close(operator.basis(), bases)
    _close(operator.basis(ROWS[:2], dtype=torch.float32), bases[ROWS[:2]].astype(np.float32), atol=1e-6, rtol=0)
    monkeypatch.setattr(operators, "DENSE_BASIS_BYTES", 671)
    with pytest.raises(MemoryError):
        operator.basis()
    # float32 halves it: 336 bytes; rows count instead of n_points: 2 rows in float64 is 336 bytes
    monkeypatch.setattr(operators, "DENSE_BASIS_BYTES", 336)
    assert operator.basis(dtype=torch.float32).shape == (N_POINTS, AMBIENT, DIM)
    assert operator.basis([1, 2]).shape == (2, AMBIENT, DIM)
    with pytest.raises(MemoryError):
        operator.basis([1, 2, 3])
    monkeypatch.setattr(operators, "DENSE_BASIS_BYTES", 335)
    with pytest.raises(MemoryError):
        operator.basis(dtype=torch.float32)
    with pytest.raises(MemoryError):
        operator.basis([1, 2])


def test_dense_basis_budget_message(monkeypatch):
    """The MemoryError names the count, k, n, the MiB needed (count n k bytes / 2^20) and the budget."""
    monkeypatch.setattr(operators, "DENSE_BASIS_BYTES", 10 * 2**20)
    subsets = CoordinateSubset(torch.zeros(3, 5, dtype=torch.long), 2**20)  # float32: 3 * 2^20 * 5 * 4 = 60 MiB
    with pytest.raises(MemoryError) as error:
        subsets.basis()
    assert str(error.value) == (
        "a dense basis of 3 subspaces of dimension 5 in R^1048576 needs 60 MiB, above the 10 MiB budget; use "
        "fewer points at a time (measure.n_points, measure.attacks.n_points) or a smaller subspace")
    with pytest.raises(MemoryError, match="a dense basis of 2 subspaces .* needs 80 MiB, above the 10 MiB"):
        subsets.basis([0, 1], dtype=F64)
    monkeypatch.undo()
    with pytest.raises(MemoryError, match=r"in R\^67108865 needs 256 MiB, above the 256 MiB budget"):
        CoordinateSubset(torch.zeros(1, 1, dtype=torch.long), 2**26 + 1).basis(dtype=torch.float32)


# --------------------------------------------------------------------------- rows and broadcasting


def test_rows_may_be_any_integer_valued_sequence():
    """rows given as a list, an int64 tensor, an int32 tensor or an integer-valued float array all
    name the same points (they are read as indices, not as a mask)."""
    for kind in ["dense", "factored", "hypersurface", "coordinate", "structured"]:
        operator, bases = _case(kind)
        w = _randn(3, bases.shape[1], seed=80)
        expected = np.einsum("rnk,rn->rk", bases[[1, 0, 1]], w.numpy())
        for rows in ([1, 0, 1], torch.tensor([1, 0, 1]), torch.tensor([1, 0, 1], dtype=torch.int32),
                     np.array([1.0, 0.0, 1.0])):
            _close(operator.coefficients(w, rows), expected)
            _close(operator.basis(rows), bases[[1, 0, 1]])


def test_row_indices_are_int64_on_the_operators_device():
    """_rows: None gives 0 .. N-1, anything else its values as int64, both made on the given device
    (meta stands for a second device), so that a call moves no index between devices."""
    assert operators._rows(None, 3, torch.device("cpu")).tolist() == [0, 1, 2]
    converted = operators._rows(np.array([2.0, 0.0]), 3, torch.device("cpu"))
    assert converted.dtype == torch.long and converted.tolist() == [2, 0]
    assert operators._rows(None, 3, torch.device("meta")).device.type == "meta"
    assert operators._rows([2, 0], 3, torch.device("meta")).device.type == "meta"
    assert operators._rows(torch.tensor([2, 0]), 3, torch.device("meta")).device.type == "meta"


def test_row_lookups_are_made_on_the_operators_device_and_no_rows_gathers_nothing(monkeypatch):
    """Every row lookup (`_rows`) is built on the operator's own device: a CPU index for a CUDA operator
    would give the same numbers but cost a host-to-device copy per call, so a spy checks the device
    passed. And rows=None applies the stored per-point data as it is, with no lookup at all (no
    gathered copy of N per-point tensors)."""
    seen = []
    real = operators._rows

    def spy(rows, n_points, device):
        seen.append(device)
        return real(rows, n_points, device)

    monkeypatch.setattr(operators, "_rows", spy)
    for kind in KINDS:
        operator, bases = _case(kind)
        n = bases.shape[1]
        v, c, w = _randn(N_POINTS, n, seed=82), _randn(N_POINTS, DIM, seed=83), _randn(5, n, seed=84)
        seen.clear()
        operator.coefficients(v)
        operator.expand(c)
        operator.remove(v)
        operator.shared_coefficients(w)
        operator.shared_energy(_randn(N_POINTS, 2, 5, seed=85), w)
        assert seen == [], kind
        operator.coefficients(v, ROWS)
        operator.expand(c, ROWS)
        operator.shared_energy(_randn(len(ROWS), 2, 5, seed=86), w, ROWS)
        operator.select(ROWS)
        operator.basis()
        operator.basis(ROWS)
        assert seen and all(device == operator.device for device in seen), (kind, seen)


def test_no_rows_is_every_point_in_order():
    """rows=None equals rows = 0 .. N-1, and a full permutation or a prefix of the points is not
    mistaken for it (the factored operator's no-copy fast path)."""
    for kind in KINDS:
        operator, bases = _case(kind)
        v = _randn(N_POINTS, bases.shape[1], seed=81)
        _close(operator.coefficients(v, list(range(N_POINTS))), np.einsum("pnk,pn->pk", bases, v.numpy()))
        permutation = [1, 0, 3, 2]
        _close(operator.coefficients(v, permutation), np.einsum("pnk,pn->pk", bases[permutation], v.numpy()))
        _close(operator.expand(v[:, :DIM], permutation), np.einsum("pnk,pk->pn", bases[permutation], v[:, :DIM].numpy()))
        _close(operator.coefficients(v[:2], [0, 1]), np.einsum("pnk,pn->pk", bases[:2], v[:2].numpy()))
        _close(operator.select([0, 1]).basis(), bases[:2])


def test_factored_selection_of_every_point_in_order_shares_memory():
    """FactoredBasis.select(0 .. N-1) reuses the stored local bases (no gathered copy); any other
    selection is a gathered copy."""
    operator = _case("factored")[0]
    assert operator.select(torch.arange(N_POINTS)).local.data_ptr() == operator.local.data_ptr()
    assert operator.select(None).local.data_ptr() == operator.local.data_ptr()
    assert operator.select([1, 0, 2, 3]).local.data_ptr() != operator.local.data_ptr()


@pytest.mark.parametrize("kind", [kind for kind in KINDS if not kind.startswith("structured")])
def test_an_empty_row_list_gives_empty_results(kind):
    """rows = [] gives (0, k) coefficients and (0, n) expansions."""
    operator, bases = _case(kind)
    n = bases.shape[1]
    assert operator.coefficients(torch.zeros(0, n, dtype=F64), []).shape == (0, DIM)
    assert operator.expand(torch.zeros(0, DIM, dtype=F64), []).shape == (0, n)
    assert operator.coefficients(torch.zeros(0, 2, n, dtype=F64), torch.tensor([], dtype=torch.long)).shape == (0, 2, DIM)


@pytest.mark.xfail(raises=RuntimeError, strict=True,
                   reason="torch's CPU (MKL) FFT refuses an empty batch; the attacks never pass one")
def test_structured_operator_on_an_empty_batch():
    """Known limitation, kept visible: the structured operator on zero rows raises inside torch.fft.rfft
    on CPU instead of returning a (0, k) tensor."""
    operator = _case("structured")[0]
    assert operator.coefficients(torch.zeros(0, AMBIENT, dtype=F64), []).shape == (0, DIM)


def test_dense_gathers_at_most_the_gather_budget(monkeypatch):
    """DenseBasis with rows gathers the rows' bases in chunks of max(1, GATHER_BYTES // (n k bytes))
    bases: chunks of 2, or of 1 when one basis exceeds the budget, give the same numbers as the
    dense einsum, and no einsum ever sees more bases than a chunk."""
    operator, bases = _case("dense")
    rows = [3, 0, 3, 1, 2]
    v = _randn(len(rows), 2, AMBIENT, seed=90)
    c = _randn(len(rows), DIM, seed=91)
    seen = []
    einsum = torch.einsum

    def spy(equation, *operands):
        seen.append(operands[0].shape[0])
        return einsum(equation, *operands)

    monkeypatch.setattr(torch, "einsum", spy)
    for budget, chunk in [(2 * AMBIENT * DIM * 8, 2), (2 * AMBIENT * DIM * 8 + 7, 2), (AMBIENT * DIM * 8 - 1, 1),
                          (3 * AMBIENT * DIM * 8, 3), (10**9, len(rows))]:
        monkeypatch.setattr(operators, "GATHER_BYTES", budget)
        seen.clear()
        _close(operator.coefficients(v, rows), np.einsum("rnk,ran->rak", bases[rows], v.numpy()))
        assert seen == [chunk] * (len(rows) // chunk) + ([len(rows) % chunk] if len(rows) % chunk else [])
        seen.clear()
        _close(operator.expand(c, rows), np.einsum("rnk,rk->rn", bases[rows], c.numpy()))
        assert max(seen) == chunk and sum(seen) == len(rows)


# --------------------------------------------------------------------------- constructors


def test_dense_basis_shapes_and_point_count():
    """DenseBasis takes (N, n, k) (N points, n_points ignored) or (n, k) shared (n_points given, else 1);
    any other rank is a ValueError naming the shape."""
    per_point = DenseBasis(torch.zeros(5, 7, 3), n_points=9)
    assert (per_point.shared, per_point.n_points, per_point.ambient_dim, per_point.dim) == (False, 5, 7, 3)
    shared = DenseBasis(torch.zeros(7, 3), n_points=9)
    assert (shared.shared, shared.n_points, shared.ambient_dim, shared.dim) == (True, 9, 7, 3)
    assert DenseBasis(torch.zeros(7, 3)).n_points == 1
    assert DenseBasis(torch.zeros(7, 3, dtype=F64)).dtype == F64
    for shape in [(7,), (2, 5, 7, 3)]:
        with pytest.raises(ValueError) as error:
            DenseBasis(torch.zeros(shape))
        assert str(error.value) == f"bases: expected (N, n, k) or (n, k), got shape {shape}"
    # a shared basis keeps its point count through select and to
    assert shared.select([0, 4]).n_points == 2
    assert shared.to(dtype=F64).n_points == 9


def test_factored_basis_checks_its_shapes():
    """FactoredBasis wants E (n, h) and Q (N, h, k) with matching h; Q is cast to E's dtype."""
    embedding = torch.zeros(7, 4, dtype=F64)
    operator = FactoredBasis(embedding, torch.zeros(5, 4, 3, dtype=torch.float32))
    assert (operator.n_points, operator.ambient_dim, operator.dim) == (5, 7, 3)
    assert operator.local.dtype == F64 and operator.dtype == F64
    for bad_embedding, bad_local in [(torch.zeros(7), torch.zeros(5, 4, 3)), (torch.zeros(7, 4, 1), torch.zeros(5, 4, 3)),
                                     (embedding, torch.zeros(4, 3)), (embedding, torch.zeros(5, 5, 3)),
                                     (embedding, torch.zeros(5, 3, 4))]:
        with pytest.raises(ValueError) as error:
            FactoredBasis(bad_embedding, bad_local)
        assert str(error.value) == (f"expected embedding (n, h) and local (N, h, k), got {tuple(bad_embedding.shape)} "
                                    f"and {tuple(bad_local.shape)}")


def test_hypersurface_reflectors_are_the_householder_vectors():
    """w_i = (nu_i + s e_1) / |nu_i + s e_1| with s = +1 for nu_1 >= 0 (also nu_1 = 0) and -1 for nu_1 < 0,
    so that H_i nu_i = -s e_1; dim = h - 1; normals are cast to E's dtype; bad shapes are a ValueError."""
    normals = np.array([[0.6, 0.8, 0.0], [-0.6, 0.0, 0.8], [0.0, 0.6, -0.8], [-1.0, 0.0, 0.0]])
    operator = HypersurfaceTangents(torch.eye(5, 3, dtype=F64), torch.tensor(normals, dtype=torch.float32))
    assert operator.host_normals.dtype == F64 and operator.reflectors.dtype == F64
    assert (operator.n_points, operator.ambient_dim, operator.dim) == (4, 5, 2)
    expected = np.array([[1.6, 0.8, 0.0], [-1.6, 0.0, 0.8], [1.0, 0.6, -0.8], [-2.0, 0.0, 0.0]])
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    _close(operator.reflectors, expected)
    for nu, w in zip(normals, expected):
        reflected = (np.eye(3) - 2 * np.outer(w, w)) @ nu
        np.testing.assert_allclose(reflected, [-1.0 if nu[0] >= 0 else 1.0, 0, 0], atol=1e-7)
    embedding = torch.zeros(5, 3)
    for bad_embedding, bad_normals in [(torch.zeros(5), torch.zeros(2, 3)), (torch.zeros(5, 3, 1), torch.zeros(2, 3)),
                                       (embedding, torch.zeros(3)), (embedding, torch.zeros(2, 4))]:
        with pytest.raises(ValueError) as error:
            HypersurfaceTangents(bad_embedding, bad_normals)
        assert str(error.value) == (f"expected embedding (n, h) and host_normals (N, h), got {tuple(bad_embedding.shape)} "
                                    f"and {tuple(bad_normals.shape)}")


def test_hypersurface_tangents_are_orthogonal_to_the_normal():
    """The Householder basis spans E nu^perp: B^T (E nu) = 0 and B B^T = E (I - nu nu^T) E^T."""
    operator, bases = _case("hypersurface")
    embedding, normals = operator.embedding.numpy(), operator.host_normals.numpy()
    np.testing.assert_allclose(np.einsum("pnk,pn->pk", bases, normals @ embedding.T), 0, atol=1e-12)
    projectors = np.stack([embedding @ (np.eye(HOST) - np.outer(nu, nu)) @ embedding.T for nu in normals])
    _close(operator.basis() @ operator.basis().transpose(1, 2), projectors)


def test_coordinate_subset_is_gather_and_scatter():
    """CoordinateSubset: coefficients are v[indices], expand writes c into zeros at indices; the
    default dtype is float32 and int32 index sets work like int64 ones."""
    subsets = CoordinateSubset(torch.tensor([[4, 0], [1, 2]], dtype=torch.int32), 5)
    assert subsets.dtype == torch.float32 and subsets.indices.dtype == torch.long
    assert subsets.basis().dtype == torch.float32
    v = torch.arange(10.0).reshape(2, 5)
    _close(subsets.coefficients(v), [[4.0, 0.0], [6.0, 7.0]])
    _close(subsets.expand(torch.tensor([[1.0, 2.0], [3.0, 4.0]])), [[2, 0, 0, 0, 1], [0, 3, 4, 0, 0.0]])
    _close(subsets.basis()[0], np.eye(5)[:, [4, 0]])
    assert subsets.select([1]).indices.tolist() == [[1, 2]]
    assert subsets.to(dtype=F64).dtype == F64 and subsets.to().dtype == torch.float32


# --------------------------------------------------------------------------- the real Fourier transform


@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 6, 7, 8])
def test_real_fourier_is_the_closed_form_matrix(n):
    """real_fourier(v) = F v with F written from cosines and sines, and (in a second method) equals
    [Re X_0, sqrt2 Re X_1, sqrt2 Im X_1, ..., Re X_{n/2} for even n] with X = numpy's rfft / sqrt(n);
    real_fourier_transpose(y) = F^T y; both batched over leading axes."""
    v = np.random.default_rng(n).standard_normal((2, 3, n))
    fourier = fourier_matrix(n)
    np.testing.assert_allclose(fourier @ fourier.T, np.eye(n), atol=1e-12)
    transformed = real_fourier(torch.tensor(v))
    _close(transformed, v @ fourier.T)
    spectrum = np.fft.rfft(v, axis=-1) / math.sqrt(n)
    parts = [spectrum[..., :1].real]
    for j in range(1, (n - 1) // 2 + 1):
        parts += [math.sqrt(2) * spectrum[..., j:j + 1].real, math.sqrt(2) * spectrum[..., j:j + 1].imag]
    if n % 2 == 0:
        parts.append(spectrum[..., -1:].real)
    _close(transformed, np.concatenate(parts, axis=-1))
    _close(real_fourier_transpose(torch.tensor(v)), v @ fourier)
    _close(real_fourier_transpose(transformed), v)


@pytest.mark.parametrize("n", [1, 2, 5, 6])
def test_real_fourier_keeps_float64_precision(n):
    """float64 is transformed in float64 throughout: F^T ((1 + 2^-30) e_0) = (1 + 2^-30) / sqrt(n) in every
    entry to 1e-15 (a detour through complex64 would round the 2^-30 away), and F^T F v = v to 1e-14."""
    y = torch.zeros(2, n, dtype=F64)
    y[:, 0] = 1 + 2.0**-30
    _close(real_fourier_transpose(y), np.full((2, n), (1 + 2.0**-30) / math.sqrt(n)), atol=1e-15, rtol=0)
    v = torch.tensor(np.random.default_rng(n).standard_normal((3, n)) * (1 + 2.0**-30))
    _close(real_fourier_transpose(real_fourier(v)), v.numpy(), atol=1e-14, rtol=0)


@pytest.mark.parametrize("n", [1, 4, 7])
def test_real_fourier_keeps_float32(n):
    """float32 in, float32 out (complex64 inside), with float32-accurate values."""
    v = np.random.default_rng(n).standard_normal((3, n)).astype(np.float32)
    fourier = fourier_matrix(n)
    forward, backward = real_fourier(torch.tensor(v)), real_fourier_transpose(torch.tensor(v))
    assert forward.dtype == torch.float32 and backward.dtype == torch.float32
    _close(forward, v @ fourier.T, atol=1e-5, rtol=1e-5)
    _close(backward, v @ fourier, atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- structured random subspaces


def test_structured_draws_follow_the_per_point_streams():
    """Point i's signs (rounds, n) and k distinct selected coordinates come from
    default_rng([seed, 4, i]): integers(0, 2, uint8) then choice(n, k, replace=False)."""
    negative, selection = structured_draws([5, 2, 9], 11, 4, seed=3)
    assert negative.shape == (3, 3, 11) and negative.dtype == bool and selection.shape == (3, 4)
    for row, index in enumerate([5, 2, 9]):
        rng = np.random.default_rng([3, 4, index])
        np.testing.assert_array_equal(negative[row], rng.integers(0, 2, size=(3, 11), dtype=np.uint8).astype(bool))
        np.testing.assert_array_equal(selection[row], rng.choice(11, 4, replace=False))
        assert len(set(selection[row].tolist())) == 4
    negative_two, selection_two = structured_draws(range(2), 6, 6, seed=1, rounds=2)
    assert negative_two.shape == (2, 2, 6)
    assert sorted(selection_two[0].tolist()) == list(range(6))
    one_negative, one_selection = structured_draws([7], 10, 1, seed=0)
    assert one_selection.shape == (1, 1) and one_negative.shape == (1, 3, 10)


def test_structured_draw_is_the_dense_product_of_its_draws():
    """StructuredRandomSubspace.draw(N, n, k, seed, first_index) uses points first_index .. first_index + N - 1
    of structured_draws, and its basis is (S F D_3 F D_2 F D_1)^T with dense matrices; it is orthonormal."""
    for n, k in [(9, 4), (8, 3), (5, 5), (6, 1)]:
        operator = StructuredRandomSubspace.draw(3, n, k, seed=12, first_index=2, dtype=F64)
        negative, selection = structured_draws([2, 3, 4], n, k, 12)
        assert torch.equal(operator.negative, torch.tensor(negative))
        assert torch.equal(operator.selection, torch.tensor(selection))
        assert (operator.n_points, operator.ambient_dim, operator.dim, operator.dtype) == (3, n, k, F64)
        bases = structured_dense(negative, selection)
        _close(operator.basis(), bases)
        np.testing.assert_allclose(bases.transpose(0, 2, 1) @ bases, np.broadcast_to(np.eye(k), (3, k, k)), atol=1e-12)


def test_structured_subspaces_are_reproducible_and_differ_by_seed_and_point():
    """Same (seed, point) gives the same basis however many points are drawn; another seed or another
    point gives another subspace (projectors differ by far more than rounding); float32 by default."""
    first = StructuredRandomSubspace.draw(4, 12, 3, seed=7, dtype=F64)
    assert StructuredRandomSubspace.draw(1, 12, 3, seed=7).dtype == torch.float32
    _close(StructuredRandomSubspace.draw(4, 12, 3, seed=7, dtype=F64).basis(), first.basis().numpy())
    _close(StructuredRandomSubspace.draw(2, 12, 3, seed=7, first_index=2, dtype=F64).basis(), first.basis()[2:].numpy())
    projectors = first.basis() @ first.basis().transpose(1, 2)
    other = StructuredRandomSubspace.draw(4, 12, 3, seed=8, dtype=F64).basis()
    other_projectors = other @ other.transpose(1, 2)
    for i in range(4):
        assert (projectors[i] - other_projectors[i]).abs().max() > 0.1
        for j in range(i):
            assert (projectors[i] - projectors[j]).abs().max() > 0.1


def test_structured_draw_checks_the_dimension():
    """1 <= k <= n: k = 1 and k = n are drawn, k = 0 and k = n + 1 are a ValueError naming n and k."""
    assert StructuredRandomSubspace.draw(1, 6, 1, seed=0).dim == 1
    assert StructuredRandomSubspace.draw(1, 6, 6, seed=0).dim == 6
    for bad in (0, 7):
        with pytest.raises(ValueError) as error:
            StructuredRandomSubspace.draw(1, 6, bad, seed=0)
        assert str(error.value) == f"dim: must be in 1..ambient_dim=6, got {bad}"


def test_structured_operator_in_float32():
    """A float32 structured operator applies the same matrices in float32 (signs cast to the input dtype)."""
    operator, bases = _case("structured")
    single = StructuredRandomSubspace(operator.negative, operator.selection)
    assert single.dtype == torch.float32
    v = _randn(N_POINTS, AMBIENT, seed=100).float()
    coefficients = single.coefficients(v)
    assert coefficients.dtype == torch.float32
    _close(coefficients, np.einsum("pnk,pn->pk", bases, v.double().numpy()).astype(np.float32), atol=1e-5, rtol=1e-5)


# --------------------------------------------------------------------------- subspaces.py


def test_as_subspace_and_the_projections_with_dense_bases():
    """as_subspace: None stays None, a Subspace is returned as is, an array becomes a DenseBasis
    (shared ones counting n_points); project_onto / project_off = B B^T v and v - B B^T v for
    per-point and shared numpy bases, with rows."""
    assert as_subspace(None) is None
    operator = _case("structured")[0]
    assert as_subspace(operator, 99) is operator
    bases = _case("dense")[1]
    converted = as_subspace(bases)
    assert isinstance(converted, DenseBasis) and converted.n_points == N_POINTS and converted.dtype == F64
    assert as_subspace(bases[0], 6).n_points == 6 and as_subspace(bases[0]).n_points == 1
    projectors = bases @ bases.transpose(0, 2, 1)
    v = _randn(N_POINTS, AMBIENT, seed=110)
    _close(project_onto(v, bases), np.einsum("pmn,pn->pm", projectors, v.numpy()))
    _close(project_off(v, bases), v.numpy() - np.einsum("pmn,pn->pm", projectors, v.numpy()))
    w = _randn(len(ROWS), AMBIENT, seed=111)
    _close(project_onto(w, torch.tensor(bases), ROWS), np.einsum("rmn,rn->rm", projectors[ROWS], w.numpy()))
    _close(project_off(w, operator.to(dtype=F64), ROWS),
           w.numpy() - np.einsum("rmn,rn->rm", (_case("structured")[1] @ _case("structured")[1].transpose(0, 2, 1))[ROWS],
                                 w.numpy()))
    shared = bases[0]
    _close(project_onto(w, shared), w.numpy() @ (shared @ shared.T))
    _close(project_off(w, shared), w.numpy() - w.numpy() @ (shared @ shared.T))


def gram_schmidt(matrix: np.ndarray) -> np.ndarray:
    """Classical Gram-Schmidt on the columns (the Q of the QR with a positive diagonal of R)."""
    columns = []
    for column in matrix.T:
        for q in columns:
            column = column - (q @ column) * q
        columns.append(column / np.linalg.norm(column))
    return np.stack(columns, axis=1)


def test_random_subspace_bases_are_gram_schmidt_of_the_seeded_gaussians():
    """Point i's Haar basis is Gram-Schmidt of default_rng([seed, 1, first_index + i]).standard_normal((n, k))
    (QR with diag(R) > 0), in any chunking, cast to the requested dtype (float32 by default)."""
    n, k = 6, 3
    expected = np.stack([gram_schmidt(np.random.default_rng([5, 1, 2 + i]).standard_normal((n, k))) for i in range(5)])
    bases = random_subspace_bases(5, n, k, seed=5, dtype=F64, first_index=2)
    assert bases.shape == (5, n, k) and bases.dtype == F64
    _close(bases, expected)
    _close(random_subspace_bases(5, n, k, seed=5, dtype=F64, first_index=2, chunk=2), expected)
    _close(random_subspace_bases(5, n, k, seed=5, dtype=F64, first_index=2, chunk=5), expected)
    default = random_subspace_bases(2, n, k, seed=5, first_index=2)
    assert default.dtype == torch.float32
    _close(default, expected[:2].astype(np.float32))
    _close(random_subspace_bases(1, n, n, seed=0, dtype=F64)[0],
           gram_schmidt(np.random.default_rng([0, 1, 0]).standard_normal((n, n))))
    _close(random_subspace_bases(1, n, 1, seed=0, dtype=F64)[0],
           gram_schmidt(np.random.default_rng([0, 1, 0]).standard_normal((n, 1))))
    # square and tiny cases, where some diagonal entries of R lie in (0, 1): only negative ones flip
    gaussians = [np.random.default_rng([seed, 1, 0]).standard_normal((2, 2)) for seed in range(6)]
    diagonals = np.concatenate([np.abs(np.diag(np.linalg.qr(g)[1])) for g in gaussians])
    assert ((diagonals > 0) & (diagonals < 1)).any()
    for seed, gaussian in enumerate(gaussians):
        _close(random_subspace_bases(1, 2, 2, seed=seed, dtype=F64)[0], gram_schmidt(gaussian))
    assert random_subspace_bases(2, n, k, seed=5, device="meta").device.type == "meta"
    # each point's stream is drawn exactly once, in order, whatever the chunk
    for chunk in (2, 256):
        drawn = []
        with pytest.MonkeyPatch.context() as patch:
            real = subspaces_module._point_rng
            patch.setattr(subspaces_module, "_point_rng", lambda *key: drawn.append(key) or real(*key))
            random_subspace_bases(5, n, k, seed=5, first_index=2, chunk=chunk)
        assert drawn == [(5, 1, index) for index in range(2, 7)]
    for bad in (0, n + 1):
        with pytest.raises(ValueError) as error:
            random_subspace_bases(1, n, bad, seed=0)
        assert str(error.value) == f"dim: must be in 1..ambient_dim={n}, got {bad}"


def test_random_subspace_kind_switches_above_the_haar_budget():
    """haar while n k <= HAAR_MAX_ENTRIES (= 2^17), structured one entry above."""
    assert HAAR_MAX_ENTRIES == 2**17
    assert random_subspace_kind(2**17, 1) == "haar" and random_subspace_kind(2**16, 2) == "haar"
    assert random_subspace_kind(2**17 + 1, 1) == "structured" and random_subspace_kind(2**16 + 1, 2) == "structured"


def test_random_subspaces_pick_and_pass_everything_on():
    """random_subspaces: a DenseBasis of random_subspace_bases (same seed, first_index, dtype) for
    "haar" and small n k by default, a StructuredRandomSubspace.draw for "structured" and large n k
    by default; any other kind is a ValueError."""
    haar = random_subspaces(3, 6, 2, seed=4, dtype=F64, first_index=1)
    assert isinstance(haar, DenseBasis) and haar.dtype == F64
    _close(haar.basis(), random_subspace_bases(3, 6, 2, seed=4, dtype=F64, first_index=1).numpy())
    assert isinstance(random_subspaces(3, 6, 2, seed=4, kind="haar"), DenseBasis)
    assert random_subspaces(3, 6, 2, seed=4).dtype == torch.float32
    structured = random_subspaces(3, 6, 2, seed=4, dtype=F64, first_index=1, kind="structured")
    assert isinstance(structured, StructuredRandomSubspace) and structured.dtype == F64
    _close(structured.basis(), StructuredRandomSubspace.draw(3, 6, 2, seed=4, first_index=1, dtype=F64).basis().numpy())
    on_meta = random_subspaces(1, 6, 2, seed=4, device="meta", kind="structured")
    assert on_meta.negative.device.type == "meta" and on_meta.selection.device.type == "meta"
    assert random_subspaces(1, 6, 2, seed=4, device="meta", kind="haar").device.type == "meta"
    large = random_subspaces(1, 2**17 + 1, 1, seed=0)
    assert isinstance(large, StructuredRandomSubspace) and large.dtype == torch.float32
    with pytest.raises(ValueError) as error:
        random_subspaces(1, 6, 2, seed=4, kind="gaussian")
    assert str(error.value) == "kind: must be 'haar' or 'structured', got 'gaussian'"


def test_coordinate_subsets_follow_the_per_point_streams():
    """Point i's k coordinates are default_rng([seed, 2, first_index + i]).choice(n, k, replace=False);
    coordinate_subset_bases are their one-hot columns, in the requested dtype (float32 by default)."""
    subsets = coordinate_subsets(4, 9, 3, seed=6, first_index=3, dtype=F64)
    assert isinstance(subsets, CoordinateSubset) and subsets.dtype == F64 and subsets.ambient_dim == 9
    expected = np.stack([np.random.default_rng([6, 2, 3 + i]).choice(9, 3, replace=False) for i in range(4)])
    np.testing.assert_array_equal(subsets.indices.numpy(), expected)
    assert coordinate_subsets(1, 9, 3, seed=6).dtype == torch.float32
    bases = coordinate_subset_bases(4, 9, 3, seed=6, dtype=F64, first_index=3)
    assert bases.dtype == F64
    _close(bases, np.eye(9)[:, expected].transpose(1, 0, 2))
    assert coordinate_subset_bases(1, 9, 3, seed=6).dtype == torch.float32
    # the default first_index is 0: point 0's stream
    first = np.random.default_rng([6, 2, 0]).choice(9, 3, replace=False)
    np.testing.assert_array_equal(coordinate_subsets(1, 9, 3, seed=6).indices.numpy(), [first])
    _close(coordinate_subset_bases(1, 9, 3, seed=6, dtype=F64), np.eye(9)[:, first][None])
    assert coordinate_subset_bases(1, 9, 3, seed=6, device="meta").device.type == "meta"
    assert coordinate_subsets(2, 9, 3, seed=6, device="meta").device.type == "meta"
    assert coordinate_subsets(1, 4, 4, seed=0).indices.sort().values.tolist() == [[0, 1, 2, 3]]
    assert coordinate_subsets(1, 4, 1, seed=0).indices.shape == (1, 1)
    for bad in (0, 10):
        with pytest.raises(ValueError) as error:
            coordinate_subsets(1, 9, bad, seed=0)
        assert str(error.value) == f"dim: must be in 1..ambient_dim=9, got {bad}"


def test_gaussian_directions_follow_the_per_point_streams():
    """Point i's starts are default_rng([seed, 3, i]).standard_normal((count, n)), for any index order."""
    directions = gaussian_directions(np.array([4, 1]), 3, 5, seed=2, dtype=F64)
    assert directions.shape == (2, 3, 5) and directions.dtype == F64
    _close(directions, np.stack([np.random.default_rng([2, 3, i]).standard_normal((3, 5)) for i in (4, 1)]))
    single = gaussian_directions([1], 1, 5, seed=2)
    assert single.dtype == torch.float32 and single.shape == (1, 1, 5)
    _close(single[0], np.random.default_rng([2, 3, 1]).standard_normal((1, 5)).astype(np.float32))
    assert gaussian_directions([0], 2, 3, seed=0, device="meta").device.type == "meta"


def test_tangent_operators_wrap_the_manifold_arrays():
    """tangent_spaces = FactoredBasis(E, host_tangent_basis(u)) and tangent_subspaces =
    HypersurfaceTangents(E, host_unit_normal(u)), float32 unless asked; on the unit 2-sphere
    (random embedding in R^6) both project onto E E^T - x x^T at the point x."""
    rng = np.random.default_rng(9)
    embedding = _orthonormal(rng, 5, 3)
    local = np.stack([_orthonormal(rng, 3, 2) for _ in range(2)])
    normals = np.array([[0.0, 0.6, 0.8], [1.0, 0.0, 0.0]])
    fake = SimpleNamespace(embedding_matrix=embedding, host_tangent_basis=lambda u: local,
                           host_unit_normal=lambda u: normals)
    spaces = tangent_spaces(fake, None)
    assert isinstance(spaces, FactoredBasis) and spaces.dtype == torch.float32 and spaces.local.dtype == torch.float32
    _close(spaces.basis(), (embedding @ local).astype(np.float32))
    assert tangent_spaces(fake, None, dtype=F64).dtype == F64
    assert tangent_spaces(fake, None, device="meta").device.type == "meta"
    subspaces = tangent_subspaces(fake, None)
    assert isinstance(subspaces, HypersurfaceTangents) and subspaces.dtype == torch.float32
    assert subspaces.host_normals.dtype == torch.float32
    _close(subspaces.basis(), householder_tangents(embedding, normals).astype(np.float32))
    assert tangent_subspaces(fake, None, dtype=F64).dtype == F64
    assert tangent_subspaces(fake, None, device="meta").device.type == "meta"
    # the requested dtype is applied to the manifold's arrays themselves: plain Python lists of
    # floats keep their float64 precision (no detour through torch's float32 default)
    listed = SimpleNamespace(embedding_matrix=embedding.tolist(), host_tangent_basis=lambda u: local.tolist(),
                             host_unit_normal=lambda u: normals.tolist())
    assert torch.equal(tangent_spaces(listed, None, dtype=F64).local, torch.tensor(local))
    assert torch.equal(tangent_subspaces(listed, None, dtype=F64).host_normals, torch.tensor(normals))
    _close(tangent_spaces(listed, None, dtype=F64).basis(), embedding @ local, atol=1e-15, rtol=0)

    sphere = Sphere(dim=2, ambient_dim=6, embedding="random", embedding_seed=3)
    u = sphere.sample_chart(3, np.random.default_rng(1))
    points = sphere.immersion(u)
    expected = np.stack([sphere.embedding_matrix @ sphere.embedding_matrix.T - np.outer(x, x) for x in points])
    for operator in (tangent_spaces(sphere, u, dtype=F64), tangent_subspaces(sphere, u, dtype=F64)):
        _close(operator.basis() @ operator.basis().transpose(1, 2), expected)


def test_subspace_frame_free_on_and_off():
    """free: the identity (R, n, n) in x's dtype; *_on: the mode's basis at rows; *_off: an orthonormal
    basis F (R, n, n - k) of the complement, F^T B = 0 and F F^T = I - B B^T."""
    operator, bases = _case("dense")
    x = torch.zeros(N_POINTS, AMBIENT)
    free = subspace_frame("free", x, None)
    assert free.dtype == torch.float32 and free.shape == (N_POINTS, AMBIENT, AMBIENT)
    _close(free, np.broadcast_to(np.eye(AMBIENT), (N_POINTS, AMBIENT, AMBIENT)))
    assert subspace_frame("free", x, None, rows=[1, 1]).shape == (2, AMBIENT, AMBIENT)
    assert subspace_frame("free", x.double(), None).dtype == F64
    assert subspace_frame("free", x.to("meta"), None).device.type == "meta"
    shared = bases[0]  # one (n, k) array for every point: one frame per point of x
    _close(subspace_frame("on", x.double(), shared), np.stack([shared] * N_POINTS))
    assert subspace_frame("off", x.double(), shared).shape == (N_POINTS, AMBIENT, AMBIENT - DIM)
    for mode in ("on", "random_on", "coordinate_on"):
        frame = subspace_frame(mode, x.double(), operator, rows=ROWS)
        _close(frame, bases[ROWS])
    single = subspace_frame("on", x, operator)
    assert single.dtype == torch.float32
    _close(single, bases.astype(np.float32), atol=1e-6, rtol=0)
    _close(subspace_frame("on", x.double(), bases), bases)  # a dense array
    for mode in ("off", "random_off", "coordinate_off"):
        frame = subspace_frame(mode, x.double(), operator, rows=ROWS)
        assert frame.shape == (len(ROWS), AMBIENT, AMBIENT - DIM) and frame.dtype == F64
        _close(frame.transpose(1, 2) @ frame, np.broadcast_to(np.eye(AMBIENT - DIM), (len(ROWS), AMBIENT - DIM, AMBIENT - DIM)))
        _close(frame.transpose(1, 2) @ torch.tensor(bases[ROWS]), np.zeros((len(ROWS), AMBIENT - DIM, DIM)), atol=1e-12, rtol=0)
        _close(frame @ frame.transpose(1, 2), np.eye(AMBIENT) - bases[ROWS] @ bases[ROWS].transpose(0, 2, 1))
    off = subspace_frame("off", x, operator)
    assert off.dtype == torch.float32 and off.shape == (N_POINTS, AMBIENT, AMBIENT - DIM)


def test_mode_subspace_for_every_mode():
    """free: None; on/off: the tangent spaces (as given, or a DenseBasis of a tensor) in x's dtype;
    random_* / coordinate_*: random_subspaces / coordinate_subsets of the same seed, with the
    tangent dimension when dim is not given."""
    x = torch.zeros(N_POINTS, AMBIENT, dtype=F64)
    operator, bases = _case("factored")
    assert mode_subspace("free", x, operator) is None and mode_subspace("free", x) is None
    for mode in ("on", "off"):
        chosen = mode_subspace(mode, x, operator)
        assert isinstance(chosen, FactoredBasis)
        _close(chosen.basis(), bases)
        single = mode_subspace(mode, x.float(), operator)
        assert single.dtype == torch.float32
        dense = mode_subspace(mode, x.float(), bases)
        assert isinstance(dense, DenseBasis) and dense.dtype == torch.float32 and dense.n_points == N_POINTS
        _close(dense.basis(), bases.astype(np.float32), atol=1e-6, rtol=0)
        shared = mode_subspace(mode, x, bases[0])  # one (n, k) basis for every point
        assert shared.n_points == N_POINTS
        _close(shared.basis(), np.stack([bases[0]] * N_POINTS))
    for mode in ("random_on", "random_off"):
        chosen = mode_subspace(mode, x, dim=2, seed=5)
        assert isinstance(chosen, DenseBasis) and chosen.dtype == F64
        _close(chosen.basis(), random_subspace_bases(N_POINTS, AMBIENT, 2, seed=5, dtype=F64).numpy())
        from_tangent = mode_subspace(mode, x.float(), operator, seed=5)
        assert from_tangent.dim == DIM and from_tangent.dtype == torch.float32
        _close(from_tangent.basis(), random_subspace_bases(N_POINTS, AMBIENT, DIM, seed=5).numpy())
        assert mode_subspace(mode, x, operator, dim=1).dim == 1
        assert mode_subspace(mode, x, operator).dim == DIM
    for mode in ("coordinate_on", "coordinate_off"):
        chosen = mode_subspace(mode, x, dim=2, seed=5)
        assert isinstance(chosen, CoordinateSubset) and chosen.dtype == F64
        assert torch.equal(chosen.indices, coordinate_subsets(N_POINTS, AMBIENT, 2, seed=5).indices)
        assert mode_subspace(mode, x.float(), bases, seed=1).dim == DIM
        assert mode_subspace(mode, x.float(), bases, seed=1).dtype == torch.float32
    # a tangent basis given as a plain list is read in x's dtype: float64 keeps full precision
    listed = mode_subspace("on", x, bases.tolist())
    assert listed.dtype == F64 and torch.equal(listed.bases, torch.tensor(bases))
    assert torch.equal(mode_subspace("off", x, bases[0].tolist()).bases, torch.tensor(bases[0]))
    # the default seed is 0
    _close(mode_subspace("random_on", x, dim=2).basis(), random_subspace_bases(N_POINTS, AMBIENT, 2, seed=0, dtype=F64).numpy())
    assert torch.equal(mode_subspace("coordinate_off", x, dim=2).indices,
                       coordinate_subsets(N_POINTS, AMBIENT, 2, seed=0).indices)
    # everything follows x to its device (meta stands for a second device)
    on_meta = x.to("meta")
    assert mode_subspace("on", on_meta, operator).device.type == "meta"
    assert mode_subspace("on", on_meta, bases).device.type == "meta"
    assert mode_subspace("random_off", on_meta, dim=2).device.type == "meta"
    assert mode_subspace("coordinate_on", on_meta, dim=2).device.type == "meta"
    structured = mode_subspace("random_on", torch.zeros(1, 2**17 + 1), dim=1)
    assert isinstance(structured, StructuredRandomSubspace)


def test_mode_subspace_rejects_what_does_not_fit():
    """ValueErrors: tangent tensors of the wrong rank, ambient size or point count; Subspaces of the
    wrong point count or ambient size; on/off without tangent spaces; a control mode without a dimension."""
    x = torch.zeros(N_POINTS, AMBIENT)
    for shape in [(AMBIENT,), (N_POINTS, AMBIENT + 1, DIM), (N_POINTS + 1, AMBIENT, DIM), (AMBIENT + 1, DIM),
                  (1, N_POINTS, AMBIENT, DIM)]:
        with pytest.raises(ValueError) as error:
            mode_subspace("on", x, torch.zeros(shape))
        assert str(error.value) == f"tangent_bases: expected ({N_POINTS}, {AMBIENT}, k) or ({AMBIENT}, k), got {shape}"
    assert mode_subspace("on", x, torch.zeros(AMBIENT, DIM)).n_points == N_POINTS
    assert mode_subspace("on", torch.zeros(AMBIENT, 5), torch.zeros(5, 2)).n_points == AMBIENT
    for wrong in (coordinate_subsets(N_POINTS + 1, AMBIENT, 2, seed=0), coordinate_subsets(N_POINTS, AMBIENT + 1, 2, seed=0)):
        with pytest.raises(ValueError) as error:
            mode_subspace("off", x, wrong)
        assert str(error.value) == (f"tangent spaces: expected {N_POINTS} subspaces of R^{AMBIENT}, got "
                                    f"{wrong.n_points} of R^{wrong.ambient_dim}")
    for mode in ("on", "off"):
        with pytest.raises(ValueError) as error:
            mode_subspace(mode, x)
        assert str(error.value) == f"mode {mode!r} needs tangent spaces (tangent_bases (N, n, k) or a Subspace)"
    for mode in ("random_on", "random_off", "coordinate_on", "coordinate_off"):
        with pytest.raises(ValueError) as error:
            mode_subspace(mode, x)
        assert str(error.value) == f"mode {mode!r} needs a subspace dimension: pass dim= or tangent_bases"


def test_subspace_dim_and_check_mode():
    """subspace_dim: n for free, k for every *_on mode, n - k for every *_off mode; unknown modes raise."""
    assert MODES == ("free", "on", "off", "random_on", "random_off", "coordinate_on", "coordinate_off")
    expected = {"free": 10, "on": 3, "off": 7, "random_on": 3, "random_off": 7, "coordinate_on": 3, "coordinate_off": 7}
    for mode in MODES:
        assert subspace_dim(mode, 3, 10) == expected[mode]
        check_mode(mode)
        if mode == "free":
            assert PROJECTIONS[mode] is None
        else:
            assert PROJECTIONS[mode] is (project_onto if mode.endswith("on") else project_off)
    for bad in ("tangent", "ON", ""):
        with pytest.raises(ValueError) as error:
            check_mode(bad)
        assert str(error.value) == f"mode: must be one of {MODES}, got {bad!r}"
        with pytest.raises(ValueError):
            subspace_dim(bad, 3, 10)
