"""The minimal-distance search's brackets against ground truth (DESIGN.md section 8).

- a linear model: closed forms |f| / ||P w|| in every mode, and exact certified lower bounds;
- a hand-built ReLU network whose boundary is two known planes and whose gradient is zero
  inside: the greedy walk cannot move, the ray search must find the planes, and a subspace
  that never meets them must come out "certified: none within reach", not "unknown";
- a trained ReLU MLP on a 3-D scene against an exhaustive search (20,000 directions): at least
  95% of points within 2% of the true minimum in every mode, no point "not found" where a
  boundary exists, no lower bound above the true minimum;
- the MS bracket and the interval covering both the brackets and the sampling.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.minimal_search import (
    BRACKETED,
    NONE_WITHIN_REACH,
    UNKNOWN,
    MinimalDistanceSearch,
    SearchBudget,
)
from simulator.attacks.ray_search import first_crossing, sphere_directions
from simulator.attacks.statistics import covering_interval, manifold_specificity, specificity_bracket
from simulator.attacks.subspaces import MODES, SPECIFICITY_MODES, project_off, project_onto, subspace_frame
from simulator.manifolds import Flat

from conftest import fit_full_batch


def search(model, mode, x, bases=None, dim=None, budget=SearchBudget(), step=1e-2, max_steps=500, seed=0):
    pgd = GreedyProjectedPGD(model, mode=mode, step_size=step, max_steps=max_steps, dim=dim, seed=seed)
    return MinimalDistanceSearch(pgd, budget)(x, bases)


def assert_verified(model, x, brackets):
    """Every finite upper end is the norm of a perturbation a forward pass finds adversarial."""
    found = np.isfinite(brackets.upper)
    delta = brackets.delta
    with torch.no_grad():
        labels = model(x + delta).argmax(1)
    assert torch.all(labels[found] != brackets.label[found])
    np.testing.assert_allclose(delta.norm(dim=1).double().numpy()[found], brackets.upper[found], rtol=1e-6)
    assert np.all(brackets.lower[found] <= brackets.upper[found])


# --------------------------------------------------------------------------- linear model


@pytest.fixture(scope="module")
def linear_plane():
    manifold = Flat(dim=2, ambient_dim=7, embedding="random", embedding_seed=2)
    u = np.random.default_rng(0).uniform(-1, 1, size=(12, 2))
    x = torch.tensor(manifold.immersion(u))
    tangent = torch.tensor(manifold.tangent_basis(u))
    model = nn.Linear(7, 2).double()
    with torch.no_grad():
        model.weight.copy_(torch.randn(2, 7, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
        model.bias.copy_(torch.tensor([0.2, -0.1], dtype=torch.float64))
    return model, x, tangent


@pytest.mark.parametrize("mode", MODES)
def test_linear_brackets_close_on_the_closed_form(linear_plane, mode):
    model, x, tangent = linear_plane
    brackets = search(model, mode, x, tangent, dim=2, step=1e-3, max_steps=20_000)
    w = (model.weight[1] - model.weight[0]).detach()
    f = (x @ w + (model.bias[1] - model.bias[0]).detach()).abs()
    projected = w.expand_as(x)
    if brackets.basis is not None:
        operator = project_onto if mode.endswith("on") else project_off
        projected = operator(projected, brackets.basis)
    exact = (f / projected.norm(dim=1)).numpy()
    reachable = exact < brackets.reach
    np.testing.assert_allclose(brackets.upper[reachable], exact[reachable], rtol=1e-5)
    # An affine network's certified radius is exact: the bracket closes.
    np.testing.assert_allclose(brackets.lower[reachable], exact[reachable], rtol=1e-4)
    assert np.all(brackets.lower <= np.where(reachable, exact, np.inf) * (1 + 1e-9))
    assert_verified(model, x, brackets)


# --------------------------------------------------------------------------- a ReLU net with a known boundary


class TwoPlanes(nn.Sequential):
    """Class 1 where x1 > 1 + c or x2 > 2 + c (c = 0.01), class 0 elsewhere, in R^3.

    logits = (c, relu(x1 - 1) + relu(x2 - 2)): inside the box the class-1 logit is exactly 0,
    so the margin's gradient vanishes and a gradient walk cannot start.
    """

    OFFSET = 0.01

    def __init__(self):
        first, second = nn.Linear(3, 2).double(), nn.Linear(2, 2).double()
        with torch.no_grad():
            first.weight.copy_(torch.tensor([[1.0, 0, 0], [0, 1.0, 0]]))
            first.bias.copy_(torch.tensor([-1.0, -2.0]))
            second.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]]))
            second.bias.copy_(torch.tensor([self.OFFSET, 0.0]))
        super().__init__(first, nn.ReLU(), second)


def test_a_boundary_without_gradient_is_found_by_the_rays_and_certified_where_absent():
    model = TwoPlanes()
    rng = np.random.default_rng(3)
    x = torch.tensor(np.column_stack([rng.uniform(-1, 0.9, 10), rng.uniform(-1, 1.9, 10), rng.uniform(-1, 1, 10)]))
    truth = np.minimum(1 + TwoPlanes.OFFSET - x[:, 0].numpy(), 2 + TwoPlanes.OFFSET - x[:, 1].numpy())
    greedy = GreedyProjectedPGD(model, mode="free", step_size=1e-2, max_steps=200)(x)
    assert not greedy.success.any()  # the walk alone finds nothing: zero gradient
    free = search(model, "free", x, step=1e-2, max_steps=200)
    assert (free.status == BRACKETED).all()
    np.testing.assert_allclose(free.upper, truth, rtol=1e-3)
    assert np.all(free.lower <= truth)
    assert_verified(model, x, free)
    # The plane spanned by e3 alone (an "on" subspace of dimension 1) never meets the boundary:
    # certified, not merely not found.
    e3 = torch.zeros(10, 3, 1, dtype=torch.float64)
    e3[:, 2, 0] = 1
    along_e3 = search(model, "on", x, e3, step=1e-2, max_steps=200)
    assert (along_e3.status == NONE_WITHIN_REACH).all()
    assert np.isnan(along_e3.upper).all() and np.all(along_e3.lower >= along_e3.reach)
    # Its complement (e1, e2) has the same nearest boundary point as the free space.
    across = search(model, "off", x, e3, step=1e-2, max_steps=200)
    np.testing.assert_allclose(across.upper, truth, rtol=1e-3)


def test_unknown_is_not_confused_with_certified():
    """Without certified bounds a point with nothing found within reach is "unknown"."""
    model = TwoPlanes()
    x = torch.zeros(3, 3, dtype=torch.float64)
    e3 = torch.zeros(3, 3, 1, dtype=torch.float64)
    e3[:, 2, 0] = 1
    brackets = search(model, "on", x, e3, budget=SearchBudget(certify=False), step=1e-2, max_steps=50)
    assert (brackets.status == UNKNOWN).all()
    assert "switched off" in brackets.certificate and np.all(brackets.lower == 0)
    summary = brackets.summary(0.02)
    assert summary["share_unknown"] == 1 and summary["median_distance_counting_failures"] is None


# --------------------------------------------------------------------------- a trained ReLU MLP in 3-D


def exhaustive_minimum(model, x, frame, reach):
    """Ground truth: the first label change along rays spread over the sphere of the subspace
    (4,000 in 3-D, 720 in 2-D: spacing about 0.056 and 0.009 radians, so on a locally flat
    boundary within 0.1% of the minimum; 1-D has two), marched finely and bisected."""
    d = frame.shape[-1]
    unit = sphere_directions(d, {1: 2, 2: 720, 3: 4000}[d]).to(x.dtype)
    truth = np.empty(len(x))
    label = model(x).argmax(1)
    for i in range(len(x)):
        rays = torch.einsum("nd,md->mn", frame[i], unit)[None]
        steps = 20_000 if d == 1 else 60
        t, _ = first_crossing(model, x[i:i + 1], rays, label[i:i + 1], torch.zeros(1, dtype=x.dtype),
                              torch.full((1,), reach, dtype=x.dtype), steps, 40)
        truth[i] = float(t.min())
    return truth


@pytest.fixture(scope="module")
def trained_sheet():
    """A ReLU MLP fitted to a 2-class checkerboard on a plane in R^3 (a few seconds), 20 points."""
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    u = rng.uniform(-1, 1, size=(1200, 2))
    x = torch.tensor(np.column_stack([u, np.zeros(len(u))]), dtype=torch.float32)
    y = torch.tensor((np.floor(2 * (u[:, 0] + 1)) + np.floor(2 * (u[:, 1] + 1))) % 2, dtype=torch.long)
    model = nn.Sequential(nn.Linear(3, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 2))
    model = fit_full_batch(model, x, y, steps=300)
    tangent = torch.zeros(20, 3, 2)
    tangent[:, 0, 0] = tangent[:, 1, 1] = 1
    return model, x[:20], tangent


@pytest.mark.parametrize("mode", MODES)
def test_trained_relu_net_matches_an_exhaustive_search(trained_sheet, mode):
    model, x, tangent = trained_sheet
    brackets = search(model, mode, x, tangent, dim=2, step=1e-2, max_steps=300)
    frame = subspace_frame(mode, x, brackets.basis)
    truth = exhaustive_minimum(model, x, frame, brackets.reach)
    exists = np.isfinite(truth)
    found = np.isfinite(brackets.upper)
    assert np.array_equal(found, exists), "a point 'not found' where a boundary exists (or the reverse)"
    relative = brackets.upper[exists] / truth[exists] - 1
    assert np.mean(relative <= 0.02) >= 0.95, np.sort(relative)[-5:]
    # Never below the truth by more than the truth's own direction spacing allows.
    assert relative.min() >= -2e-3
    # Lower bounds are sound: never above the true minimum. The certificate is for the network
    # as an exact function of its float32 weights; a float32 forward pass can change the label
    # a few ulps earlier, so allow 1e-5 relative (the model runs in float32).
    assert np.all(brackets.lower[exists] <= truth[exists] * (1 + 1e-5))
    assert_verified(model, x, brackets)


def test_tight_brackets_skip_the_ray_search(linear_plane):
    """A point whose bracket is settled after the greedy walk costs no rays: the exact affine
    bound settles every point, so the search spends only the walk's and the bound's work."""
    model, x, tangent = linear_plane
    tight = search(model, "on", x, tangent, step=1e-3, max_steps=20_000)
    loose = search(model, "on", x, tangent, step=1e-3, max_steps=20_000, budget=SearchBudget(tolerance=1e-12))
    assert tight.forward_evaluations < loose.forward_evaluations
    assert tight.summary(0.02)["share_settled"] == 1


# --------------------------------------------------------------------------- MS from brackets


def test_ms_bracket_is_the_point_estimate_when_brackets_are_exact():
    rng = np.random.default_rng(0)
    upper = {mode: rng.uniform(0.5, 2, 41) for mode in SPECIFICITY_MODES}
    point = manifold_specificity(upper)
    low, high = specificity_bracket(upper, upper)
    assert low == pytest.approx(point) and high == pytest.approx(point)


def test_ms_bracket_uses_the_extreme_medians():
    """Closed form: medians of lower ends (l) and upper ends (u) per mode."""
    n = 5
    lower = {"on": np.full(n, 1.0), "off": np.full(n, 2.0), "random_on": np.full(n, 3.0), "random_off": np.full(n, 4.0)}
    upper = {mode: 2 * value for mode, value in lower.items()}
    low, high = specificity_bracket(upper, lower)
    assert low == pytest.approx((1.0 / 4.0) / (6.0 / 4.0))  # l_on / u_off over u_rand_on / l_rand_off
    assert high == pytest.approx((2.0 / 2.0) / (3.0 / 8.0))  # u_on / l_off over l_rand_on / u_rand_off
    # An off-manifold median that is not found: no upper end on MS is lost, the lower end is 0.
    upper["off"][:] = np.nan
    low, high = specificity_bracket(upper, lower)
    assert low == 0.0 and high == pytest.approx((2.0 / 2.0) / (3.0 / 8.0))
    # An on-manifold median not found but certified far: a real lower bound on MS.
    upper = {mode: 2 * value for mode, value in lower.items()}
    upper["on"][:] = np.nan
    lower["on"][:] = 50.0
    low, high = specificity_bracket(upper, lower)
    assert low == pytest.approx((50.0 / 4.0) / (6.0 / 4.0)) and math.isinf(high)


def test_covering_interval_contains_the_sampling_interval_and_the_bracket():
    from simulator.attacks.statistics import bootstrap_interval

    rng = np.random.default_rng(1)
    upper = {mode: rng.lognormal(0, 0.3, 60) for mode in SPECIFICITY_MODES}
    lower = {mode: value * rng.uniform(0.8, 1.0, 60) for mode, value in upper.items()}
    sampling = bootstrap_interval(upper, 400, 0.95, np.random.default_rng(2))
    covering = covering_interval(upper, lower, 400, 0.95, np.random.default_rng(2))
    bracket = specificity_bracket(upper, lower)
    assert covering[0] <= sampling[0] and covering[1] >= sampling[1]
    assert covering[0] <= bracket[0] and covering[1] >= bracket[1]
    # Exact brackets: the covering interval is the sampling interval (same resamples).
    same = covering_interval(upper, upper, 400, 0.95, np.random.default_rng(2))
    assert same == pytest.approx(sampling)


def test_a_search_without_random_starts_marches_its_one_ray_at_the_usual_resolution():
    """In a high-dimensional subspace with starts = 0 the search has a single (downhill) ray per
    point; it is marched with march_steps probes like any ray, not 128x finer as the two rays of
    an exhaustive 1-D search are (that cost 4096 forward passes per point and pass)."""
    torch.manual_seed(0)
    model = nn.Linear(40, 2).double()
    x = torch.randn(5, 40, dtype=torch.float64)
    budget = SearchBudget(starts=0, walk_rounds=1, certify=False, tolerance=1e-12)
    brackets = search(model, "free", x, budget=budget, step=0.5, max_steps=50)
    w = (model.weight[1] - model.weight[0]).detach()
    exact = (x @ w + (model.bias[1] - model.bias[0]).detach()).abs() / w.norm()
    np.testing.assert_allclose(brackets.upper, exact.numpy(), rtol=1e-3)
    # Greedy walk, refinement, three passes of march + bisection + walk: 2,738 forward evaluations
    # here; the 128x finer march made it 55,778.
    assert brackets.forward_evaluations < 5000
