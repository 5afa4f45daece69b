"""Geometry measurements against closed forms (DESIGN.md section 4, items 1, 2, 5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from simulator.geometry.height import (
    INTERFACE_MAX_AXES,
    interface_mask,
    measure_height_field,
    summarize_heights,
    weighted_median,
)
from simulator.geometry.stretch import feature_jacobians, stretch_spectra
from simulator.geometry.tangent import margin_gradients, tangent_fractions
from simulator.manifolds import Flat, Sphere


def linear_classifier(n: int, seed: int, scale_bias: float = 0.3) -> nn.Linear:
    torch.manual_seed(seed)
    model = nn.Linear(n, 2).double()
    with torch.no_grad():
        model.bias.mul_(scale_bias)
    return model


def margin_weights(model: nn.Linear) -> tuple[np.ndarray, float]:
    """The 2-class logit difference z_1 - z_0 = w.x + c."""
    w = (model.weight[1] - model.weight[0]).detach().numpy()
    c = float((model.bias[1] - model.bias[0]).detach())
    return w, c


class RadialClassifier(nn.Module):
    """Class 1 inside the sphere |x| = radius, class 0 outside: the boundary is that sphere."""

    def __init__(self, radius: float):
        super().__init__()
        self.radius = radius

    def forward(self, x):
        return torch.stack([x.pow(2).sum(-1) - self.radius**2, torch.zeros_like(x[..., 0])], dim=-1)


class LinearFeatures(nn.Module):
    """features(x) = A x, so the feature Jacobian is A everywhere."""

    def __init__(self, matrix: torch.Tensor):
        super().__init__()
        self.body = nn.Linear(matrix.shape[1], matrix.shape[0], bias=False).double()
        self.head = nn.Linear(matrix.shape[0], 2).double()
        with torch.no_grad():
            self.body.weight.copy_(matrix)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.body(x))


@pytest.mark.parametrize("k,n", [(2, 3), (3, 8), (10, 100)])
def test_tangent_fraction_of_a_linear_classifier(k, n):
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=3)
    model = linear_classifier(n, seed=k)
    u = flat.sample_chart(50, np.random.default_rng(0))
    x = torch.as_tensor(flat.immersion(u))
    bases = torch.as_tensor(flat.tangent_basis(u))
    tau = tangent_fractions(margin_gradients(model, x), bases).numpy()
    w, _ = margin_weights(model)
    expected = np.linalg.norm(flat.to_tangent(w, u[0])) / np.linalg.norm(w)
    np.testing.assert_allclose(tau, expected, rtol=1e-10)


def test_random_directions_have_mean_tau_squared_k_over_n():
    k, n, count = 10, 100, 20000
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=1)
    u = np.zeros((count, k))
    vectors = torch.as_tensor(np.random.default_rng(0).standard_normal((count, n)))
    tau = tangent_fractions(vectors, torch.as_tensor(flat.tangent_basis(u))).numpy()
    # tau^2 ~ Beta(k/2, (n-k)/2): mean k/n, sd of the sample mean sqrt(var/count)
    a, b = k / 2, (n - k) / 2
    sd = np.sqrt(a * b / ((a + b) ** 2 * (a + b + 1)) / count)
    assert abs(np.mean(tau**2) - k / n) < 5 * sd


def _field(model, manifold, resolution=24, t_max=1.0, tolerance=1e-4):
    train = manifold.host_immersion(manifold.sample_chart(50, np.random.default_rng(0)))
    return measure_height_field(model, manifold, train, resolution, 10**6, t_max, tolerance, bracket_steps=32,
                                near_radius=0.1, rng=np.random.default_rng(1))


def test_height_field_of_a_linear_classifier_codimension_one():
    flat = Flat(dim=2, ambient_dim=3, embedding="random", embedding_seed=5)
    model = linear_classifier(3, seed=11)
    field = _field(model, flat)
    w, c = margin_weights(model)
    x = flat.immersion(field.u)
    normal = flat.unit_normal(field.u)
    exact = -(x @ w + c) / (normal @ w)  # where w.(p + t nu) + c = 0
    inside = np.abs(exact) < 1.0 - 1e-3
    assert inside.sum() > 50 and (~inside).sum() > 0  # the test covers both cases
    np.testing.assert_allclose(field.h[inside], exact[inside], atol=2e-4)
    outside = np.abs(exact) > 1.0 + 1e-3
    assert np.all(np.isnan(field.h[outside]))


def test_height_field_of_a_linear_classifier_higher_codimension():
    flat = Flat(dim=3, ambient_dim=8, embedding="random", embedding_seed=2)
    model = linear_classifier(8, seed=4, scale_bias=0.1)
    field = _field(model, flat, resolution=8, t_max=3.0)
    w, c = margin_weights(model)
    normal_norm = np.linalg.norm(flat.to_normal(w, np.zeros(3)))
    exact = np.abs(flat.immersion(field.u) @ w + c) / normal_norm  # along the normal part of the gradient
    inside = exact < 3.0 - 1e-3
    assert inside.sum() > 50
    np.testing.assert_allclose(np.abs(field.h[inside]), exact[inside], atol=2e-4)


@pytest.mark.parametrize("n", [3, 5])
def test_height_field_of_an_offset_sphere_is_the_radius_difference(n):
    sphere = Sphere(dim=2, radius=1.0, ambient_dim=n, embedding="random", embedding_seed=0)
    field = _field(RadialClassifier(1.3), sphere, resolution=16)
    np.testing.assert_allclose(np.abs(field.h), 0.3, atol=2e-4)
    if n == 3:  # codimension 1: the outward normal gives the sign
        np.testing.assert_allclose(field.h, 0.3, atol=2e-4)
    summary = summarize_heights(field, clinging_epsilon=0.5, heights_at_train=np.full(10, 0.3))
    assert summary["clinging_fraction"] == pytest.approx(1.0)
    assert summary["median_abs_h"] == pytest.approx(0.3, abs=2e-4)
    assert summary["interface_fraction"] == 0.0


def test_sphere_grid_weights_are_area_weights():
    sphere = Sphere(dim=2, radius=1.0, ambient_dim=3)
    field = _field(RadialClassifier(1.3), sphere, resolution=40)
    polar = field.u[:, 0]
    # the cap polar < pi/4 (exactly 10 of the 40 grid rows) has area fraction (1 - cos(pi/4)) / 2
    assert field.weight[polar < np.pi / 4].sum() == pytest.approx((1 - np.cos(np.pi / 4)) / 2, abs=0.002)


def test_weighted_median_matches_numpy_with_equal_weights():
    values = np.random.default_rng(0).standard_normal(101)
    assert weighted_median(values, np.ones(101)) == np.median(values)


def test_stretch_spectrum_of_a_linear_feature_map():
    k, n, m = 3, 7, 5
    flat = Flat(dim=k, ambient_dim=n, embedding="random", embedding_seed=9)
    matrix = torch.as_tensor(np.random.default_rng(2).standard_normal((m, n)))
    model = LinearFeatures(matrix)
    u = flat.sample_chart(20, np.random.default_rng(3))
    x = torch.as_tensor(flat.immersion(u))
    jacobians = feature_jacobians(model, x)
    torch.testing.assert_close(jacobians, matrix.expand(20, m, n))
    bases = torch.as_tensor(flat.tangent_basis(u))
    spectra = stretch_spectra(jacobians, bases)
    singular_values = np.linalg.svd(matrix.numpy(), compute_uv=False)
    np.testing.assert_allclose(spectra["mean_singular_values"], singular_values, rtol=1e-10)
    assert spectra["median_stretch_ratio"] == pytest.approx(singular_values[0] / singular_values[-1])
    basis = flat.tangent_basis(u[0])
    normal_projector = np.eye(n) - basis @ basis.T
    expected_share = np.linalg.norm(matrix.numpy() @ normal_projector) ** 2 / np.linalg.norm(matrix.numpy()) ** 2
    assert spectra["normal_energy_share"] == pytest.approx(expected_share, rel=1e-10)
    top = np.linalg.svd(matrix.numpy())[2][0]
    assert spectra["top_direction_tangent_fraction"] == pytest.approx(np.linalg.norm(basis.T @ top), rel=1e-8)


@pytest.mark.parametrize("ratio, expected", [(0.3, "perpendicular (dimpled)"), (1.0, "like a random direction"),
                                             (2.6, "towards the manifold (more than random)"),
                                             (9.5, "along the manifold")])
def test_verdict_reads_the_tangent_ratio_in_four_bands(ratio, expected):
    from simulator.config.scene import ThresholdSpec
    from simulator.stages.verdict import verdict_rows

    baseline = math.sqrt(20 / 784)  # Fashion-MNIST's k = 20 in n = 784
    summary = {"tangent": {"ratio_to_baseline": ratio, "rms_tau": ratio * baseline, "baseline_rms_tau": baseline}}
    row = next(r for r in verdict_rows(summary, ThresholdSpec().model_dump()) if r["measurement"].startswith("RMS tau"))
    assert row["reading"] == expected


def _first_chart_axis_classifier(flat) -> nn.Linear:
    """Class 1 where the chart coordinate u_0 > 0: the logit difference is x . E e_0."""
    model = nn.Linear(flat.ambient_dim, 2, bias=False).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1] = torch.as_tensor(flat.embedding_matrix[:, 0])
    return model


@pytest.mark.parametrize("k", [3, 12])
def test_interface_mask_against_the_exact_interface_band(k):
    """The label flips one cell (0.1) along axis 0 exactly for u_0 in (-0.1, 0]. With k <= 8 every
    axis is checked, so the mask is that band; with k = 12, 8 axes are drawn per point, so a band
    point is found with probability 8/12, and no point outside the band ever is."""
    flat = Flat(dim=k, ambient_dim=k + 7, embedding="random", embedding_seed=3)
    model = _first_chart_axis_classifier(flat)
    u = flat.sample_chart(6000, np.random.default_rng(0))
    label = (u[:, 0] > 0).astype(int)
    mask, checked = interface_mask(model, flat, u, label, np.full(k, 0.1), np.random.default_rng(1),
                                   dtype=torch.float64)
    band = (u[:, 0] > -0.1) & (u[:, 0] <= 0)
    assert checked == min(k, INTERFACE_MAX_AXES) and not mask[~band].any()
    share = mask[band].mean()
    expected = checked / k
    assert abs(share - expected) <= 4 * math.sqrt(expected * (1 - expected) / band.sum()) + 1e-12


class WithoutFirstLayerSplit(nn.Module):
    """The same MLP seen as an opaque model: the measurements take their generic path."""

    def __init__(self, mlp):
        super().__init__()
        self.mlp = mlp

    def features(self, x):
        return self.mlp.features(x)

    def forward(self, x):
        return self.mlp(x)


def _wide_input_mlp(n=40, hidden=(12, 9), seed=0):
    from simulator.models import MLP

    torch.manual_seed(seed)
    return MLP(n, list(hidden), 2, activation="tanh").double().eval()


def test_stretch_through_the_first_layer_equals_the_full_jacobian_path():
    """n = 40 > h1 = 12: J = A W1 is never formed; every per-point quantity must equal the one
    from the explicit (N, m, n) Jacobians, against a factored (manifold), a Householder
    (host-normal) and a dense subspace."""
    from simulator.attacks.subspaces import tangent_spaces, tangent_subspaces
    from simulator.geometry.stretch import point_stretch

    mlp = _wide_input_mlp()
    sphere = Sphere(dim=4, ambient_dim=40, embedding="random", embedding_seed=2)
    u = sphere.sample_chart(30, np.random.default_rng(4))
    x = torch.as_tensor(sphere.immersion(u))
    factored = tangent_spaces(sphere, u, device="cpu", dtype=torch.float64)
    for tangent in (factored, tangent_subspaces(sphere, u, dtype=torch.float64), factored.basis()):
        fast, generic = point_stretch(mlp, x, tangent), point_stretch(WithoutFirstLayerSplit(mlp), x, tangent)
        for key in ("singular_values", "total", "tangent_energy", "top_tangent"):
            torch.testing.assert_close(fast[key], generic[key], rtol=1e-9, atol=1e-12)
        alignment = (fast["top_direction"] * generic["top_direction"]).sum(dim=1).abs()  # v_1 up to sign
        torch.testing.assert_close(alignment, torch.ones_like(alignment), rtol=0, atol=1e-9)


def test_heights_along_lines_through_the_first_layer_equal_the_generic_search():
    """The MLP path evaluates z + t W1 d instead of W1 (x + t d) + b1: the same labels up to
    round-off, so the same heights to within the bisection tolerance."""
    from simulator.geometry.height import boundary_heights

    mlp = _wide_input_mlp(seed=3)
    generator = torch.Generator().manual_seed(5)
    base = torch.randn(300, 40, generator=generator, dtype=torch.float64)
    directions = torch.nn.functional.normalize(torch.randn(300, 40, generator=generator, dtype=torch.float64), dim=1)
    fast = boundary_heights(mlp, base, directions, t_max=3.0, tolerance=1e-4, bracket_steps=16)
    generic = boundary_heights(WithoutFirstLayerSplit(mlp), base, directions, t_max=3.0, tolerance=1e-4,
                               bracket_steps=16)
    assert torch.equal(fast.isnan(), generic.isnan()) and 20 < (~fast.isnan()).sum() < 300
    found = ~fast.isnan()
    assert (fast[found] - generic[found]).abs().max() <= 2e-4


class SlabClassifier(nn.Module):
    """Class 1 inside the slab |x_0| < half_width, class 0 outside: two parallel boundaries."""

    def __init__(self, half_width: float):
        super().__init__()
        self.half_width = half_width

    def forward(self, x):
        return torch.stack([x[..., 0].abs() - self.half_width, torch.zeros_like(x[..., 0])], dim=-1)


def test_the_blocked_bracket_returns_the_nearer_of_two_crossings():
    """Lines along x_0 from offsets s inside a slab of half-width a cross at t = a - s and
    t = -(a + s): the height is the nearer one, wherever the two fall among the bracket's blocks
    (the walk stops a line once its label changed); a zero direction finds nothing."""
    from simulator.geometry.height import BRACKET_BLOCK, boundary_heights

    half_width, t_max, steps = 1.0, 2.4, 24
    assert steps > 2 * BRACKET_BLOCK  # crossings in the first, a middle and the last block
    offsets = torch.linspace(-0.97, 0.97, 41, dtype=torch.float64)
    base = torch.zeros(42, 3, dtype=torch.float64)
    base[:41, 0] = offsets
    directions = torch.zeros(42, 3, dtype=torch.float64)
    directions[:41, 0] = 1.0  # the last line's direction is zero
    heights = boundary_heights(SlabClassifier(half_width), base, directions, t_max, tolerance=1e-5, bracket_steps=steps)
    plus, minus = half_width - offsets, -(half_width + offsets)
    exact = torch.where(plus.abs() <= minus.abs(), plus, minus)
    # A line's first changed step decides the side: within one step of each other both can be
    # seen at once, and the + side is taken then (documented), so compare |h| where that matters.
    step = t_max / steps
    clear = (plus.abs() - minus.abs()).abs() > step
    torch.testing.assert_close(heights[:41][clear], exact[clear], atol=2e-5, rtol=0)
    torch.testing.assert_close(heights[:41].abs(), exact.abs(), atol=step + 2e-5, rtol=0)
    assert torch.isnan(heights[41])


@pytest.mark.parametrize("manifold", [
    Flat(dim=2, ambient_dim=30, embedding="random", embedding_seed=1, offset=[0.2] * 30),
    Sphere(dim=3, ambient_dim=30, embedding="random", embedding_seed=3),
])
def test_manifold_labels_through_the_first_layer_in_host_coordinates_equal_the_plain_labels(manifold):
    """(W1 E) y + (W1 c + b1) is W1 phi(u) + b1: the same predicted labels without (G, n) points."""
    from simulator.geometry.height import manifold_labels

    mlp = _wide_input_mlp(n=30, hidden=(16, 8), seed=2)
    u = manifold.sample_chart(400, np.random.default_rng(0))
    fast = manifold_labels(mlp, manifold, u, torch.float64)
    plain = mlp(torch.as_tensor(manifold.immersion(u))).argmax(-1).numpy()
    np.testing.assert_array_equal(fast, plain)
    assert 0 < fast.mean() < 1  # both classes occur: the comparison is not trivially constant


def test_stretch_energy_on_a_sphere_that_fills_its_space_uses_the_total_correctly():
    """A 4-sphere in R^5 (identity embedding, E square): the Householder operator takes the
    tangent energy as the total minus the normal part; it must equal the explicit-basis value."""
    from simulator.attacks.subspaces import tangent_spaces, tangent_subspaces
    from simulator.geometry.stretch import point_stretch

    mlp = _wide_input_mlp(n=5, hidden=(4, 3), seed=1)
    sphere = Sphere(dim=4, ambient_dim=5, embedding="identity")
    u = sphere.sample_chart(20, np.random.default_rng(3))
    x = torch.as_tensor(sphere.immersion(u))
    fast = point_stretch(mlp, x, tangent_subspaces(sphere, u, dtype=torch.float64))
    explicit = point_stretch(WithoutFirstLayerSplit(mlp), x, tangent_spaces(sphere, u, dtype=torch.float64).basis())
    for key in ("singular_values", "total", "tangent_energy", "top_tangent"):
        torch.testing.assert_close(fast[key], explicit[key], rtol=1e-9, atol=1e-12)
