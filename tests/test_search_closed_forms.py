"""Closed forms for the minimal-distance search: `simulator/attacks/ray_search.py` and
`simulator/attacks/minimal_search.py` (DESIGN.md sections 4 and 8).

Fast (a few seconds in all) and written for mutation testing (docs/mutation/search.md): every
test checks numbers against a closed form on a hand-built classifier, never a trained model.

- affine f(x) = w.x + b (logits (0, f)): the minimal L2 distance is |f| / ||w||; inside a
  subspace with orthonormal basis B it is |f| / ||B^T w|| (none where B^T w = 0); along a unit
  ray u the label changes at t = -f(x) / (w.u) (never when that is negative or beyond reach);
  with several classes it is min_j (z_y - z_j) / ||w_y - w_j||;
- a ball of radius R (class 1 inside): from a point at distance r from the centre the distance
  is |r - R|;
- hand-set ReLU networks: a thin sliver of the other class (|x - 0.513| < 0.01) and two
  planes with a zero gradient in between;
- the march and bisection: a change at t* in (low, high] is returned as t in
  [t*, t* + (high - low) / march / 2^bisect], with exact forward-evaluation counts.
"""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
from torch import nn

import simulator.attacks.minimal_search as minimal_search
from simulator.attacks.greedy_pgd import GreedyProjectedPGD
from simulator.attacks.minimal_search import (
    BRACKETED,
    EXHAUSTIVE_MAX_DIM,
    NONE_WITHIN_REACH,
    NUDGES,
    SEARCH_PASSES,
    UNKNOWN,
    WALKED_RAYS,
    DistanceBrackets,
    MinimalDistanceSearch,
    SearchBudget,
    _finite,
    _row_projection,
    _unit_or_zero,
    _verified,
)
from simulator.attacks.operators import DenseBasis
from simulator.attacks.ray_search import (
    CHUNK_ELEMENTS,
    CHUNK_ROWS,
    bisect_rays,
    first_crossing,
    margin,
    predicted_labels,
    rows_per_pass,
    sphere_directions,
    walk_to_nearest,
)
from simulator.attacks.subspaces import gaussian_directions

F64 = torch.float64


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """The tensors here are tiny: a second intra-op thread only adds contention (the certified
    bounds ran 8x slower with two threads on a busy 2-core machine). Restored afterwards."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- hand-built classifiers


def affine(w, b: float) -> nn.Linear:
    """Two classes, logits (0, f(x)) with f(x) = w.x + b: class 1 exactly where f > 0."""
    w = torch.as_tensor(w, dtype=F64)
    model = nn.Linear(len(w), 2).double()
    with torch.no_grad():
        model.weight.zero_()
        model.weight[1] = w
        model.bias.copy_(torch.tensor([0.0, b], dtype=F64))
    return model.eval().requires_grad_(False)


def affine_logits(weights, biases) -> nn.Linear:
    """Several classes: logits z_j(x) = W_j . x + b_j."""
    weights = torch.as_tensor(weights, dtype=F64)
    model = nn.Linear(weights.shape[1], weights.shape[0]).double()
    with torch.no_grad():
        model.weight.copy_(weights)
        model.bias.copy_(torch.as_tensor(biases, dtype=F64))
    return model.eval().requires_grad_(False)


class Ball(nn.Module):
    """Class 1 inside the ball |x - c| < R, class 0 outside: logits (scale (|x - c| - R), 0), so
    the margin's gradient has norm `scale`. Not a network the certified bounds cover."""

    def __init__(self, centre, radius: float, scale: float = 1.0):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=F64))
        self.radius, self.scale = radius, scale

    def forward(self, x):
        r = (x - self.centre).norm(dim=-1)
        return torch.stack([self.scale * (r - self.radius), torch.zeros_like(r)], dim=-1)


class FirstCoordinate(nn.Module):
    """Class 1 where x_0 > threshold; reads only the first coordinate (cheap at any n) and
    records the batch size of every call."""

    def __init__(self, threshold: float):
        super().__init__()
        self.threshold = threshold
        self.calls: list[int] = []

    def forward(self, x):
        self.calls.append(len(x))
        return torch.stack([torch.zeros_like(x[:, 0]), x[:, 0] - self.threshold], dim=-1)


def sliver(centre: float = 0.513, half_width: float = 0.01, n: int = 1) -> nn.Sequential:
    """A ReLU net on R^n with class 1 only on |x_0 - centre| < half_width: logits
    (0, half_width - relu(x_0 - centre) - relu(centre - x_0))."""
    first, second = nn.Linear(n, 2).double(), nn.Linear(2, 2).double()
    with torch.no_grad():
        first.weight.zero_()
        first.weight[:, 0] = torch.tensor([1.0, -1.0])
        first.bias.copy_(torch.tensor([-centre, centre], dtype=F64))
        second.weight.copy_(torch.tensor([[0.0, 0.0], [-1.0, -1.0]], dtype=F64))
        second.bias.copy_(torch.tensor([0.0, half_width], dtype=F64))
    return nn.Sequential(first, nn.ReLU(), second).eval().requires_grad_(False)


def two_planes(n: int, first: float, second: float, offset: float = 0.01) -> nn.Sequential:
    """A ReLU net on R^n: class 1 where x_0 > first + offset or x_1 > second + offset. Between
    the planes the class-1 logit relu(x_0 - first) + relu(x_1 - second) is exactly 0, so the
    margin's gradient vanishes there and a gradient walk cannot start."""
    layer1, layer2 = nn.Linear(n, 2).double(), nn.Linear(2, 2).double()
    with torch.no_grad():
        layer1.weight.zero_()
        layer1.weight[0, 0] = layer1.weight[1, 1] = 1.0
        layer1.bias.copy_(torch.tensor([-first, -second], dtype=F64))
        layer2.weight.copy_(torch.tensor([[0.0, 0.0], [1.0, 1.0]], dtype=F64))
        layer2.bias.copy_(torch.tensor([offset, 0.0], dtype=F64))
    return nn.Sequential(layer1, nn.ReLU(), layer2).eval().requires_grad_(False)


def search(model, mode, x, bases=None, budget=SearchBudget(directions=32), step=0.05, max_steps=200, reach=None,
           dim=None, seed=0, refine_steps=10, normal_rounds=2):
    pgd = GreedyProjectedPGD(model, mode=mode, step_size=step, max_steps=max_steps, refine_steps=refine_steps,
                             dim=dim, seed=seed, normal_rounds=normal_rounds)
    return MinimalDistanceSearch(pgd, budget, reach=reach)(x, bases)


def assert_adversarial(model, x, brackets):
    """Every finite upper end is the norm of its delta, and x + delta has another label."""
    found = np.isfinite(brackets.upper)
    with torch.no_grad():
        labels = model(x + brackets.delta).argmax(1)
    assert torch.equal(labels[found], brackets.adversarial_label[found])
    assert bool((labels[found] != brackets.label[found]).all())
    np.testing.assert_allclose(brackets.delta.norm(dim=1).numpy()[found], brackets.upper[found], rtol=1e-12)
    assert torch.all(brackets.delta[~torch.as_tensor(found)] == 0)


# A plane in R^3 and two points on its class-0 side: f = x.w + b with w = (1, 2, -2), ||w|| = 3.
W3, B3 = (1.0, 2.0, -2.0), -1.5
X3 = torch.tensor([[0.1, 0.2, 0.3], [-0.5, 0.0, 0.4]], dtype=F64)
F3 = X3 @ torch.tensor(W3, dtype=F64) + B3  # (-1.6, -2.8): distances 1.6 / 3 and 2.8 / 3


# --------------------------------------------------------------------------- chunks, sphere directions, labels, margin


def test_rows_per_pass_is_the_smaller_of_the_row_and_element_budgets():
    """rows_per_pass(n) = max(1, min(2^16, 2^22 // n)): 2^16 rows up to n = 64, then 2^22 // n
    input floats' worth (27 rows of 224 x 224 x 3), and never fewer than one row."""
    assert (CHUNK_ROWS, CHUNK_ELEMENTS) == (65536, 4194304)
    assert rows_per_pass(1) == 65536
    assert rows_per_pass(64) == 65536
    assert rows_per_pass(65) == 64527
    assert rows_per_pass(150528) == 27
    assert rows_per_pass(2**21) == 2
    assert rows_per_pass(2**22) == 1
    assert rows_per_pass(2**23) == 1


def test_sphere_directions_follow_their_closed_forms():
    """dim 1: (+1, -1); dim 2: angles 2 pi j / count; dim 3: the Fibonacci lattice
    z_j = 1 - 2 (j + 1/2) / count, angle_j = (j + 1/2) pi (3 - sqrt 5), radius sqrt(1 - z^2)."""
    one = sphere_directions(1, 99)
    assert one.dtype == F64 and one.tolist() == [[1.0], [-1.0]]
    two = sphere_directions(2, 8)
    expected = [[math.cos(j * math.pi / 4), math.sin(j * math.pi / 4)] for j in range(8)]
    np.testing.assert_allclose(two.numpy(), expected, atol=1e-15)
    three = sphere_directions(3, 5)
    rows = []
    for j in range(5):
        z = 1 - 2 * (j + 0.5) / 5
        angle = (j + 0.5) * math.pi * (3 - math.sqrt(5))
        rows.append([math.sqrt(1 - z * z) * math.cos(angle), math.sqrt(1 - z * z) * math.sin(angle), z])
    np.testing.assert_allclose(three.numpy(), rows, atol=1e-15)
    np.testing.assert_allclose(three[:, 2].numpy(), [0.8, 0.4, 0.0, -0.4, -0.8], atol=1e-15)
    np.testing.assert_allclose(three.norm(dim=1).numpy(), 1.0, rtol=1e-15)
    assert sphere_directions(3, 4, dtype=torch.float32).dtype == torch.float32
    assert sphere_directions(2, 3, dtype=torch.float32).dtype == torch.float32
    assert sphere_directions(1, 3, dtype=torch.float32).dtype == torch.float32
    for dim in (0, 4):
        with pytest.raises(ValueError, match=f"dimensions 1 to 3, not {dim}"):
            sphere_directions(dim, 8)


def test_predicted_labels_are_the_argmax_for_any_batch_shape():
    """Three affine classes z = (x_0, x_1, 0.5): the label is the largest of the three, for a
    (2, 3, n) batch, and an empty batch gives an empty long tensor of the batch's shape."""
    model = affine_logits([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], [0.0, 0.0, 0.5])
    points = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [0.1, 0.2]],
                           [[2.0, 3.0], [0.6, 0.4], [-1.0, 0.49]]], dtype=F64)
    labels = predicted_labels(model, points)
    assert labels.shape == (2, 3) and labels.tolist() == [[0, 1, 2], [1, 0, 2]]
    empty = predicted_labels(model, torch.zeros(0, 2, dtype=F64))
    assert empty.shape == (0,) and empty.dtype == torch.long
    assert predicted_labels(model, torch.zeros(4, 0, 2, dtype=F64)).shape == (4, 0)


def test_predicted_labels_split_rows_into_passes_of_rows_per_pass():
    """At n = 2^21 a pass holds rows_per_pass(n) = 2 rows: 5 points go in passes of 2, 2, 1,
    and the labels are still each row's own (x_0 > 0.5)."""
    n = 2**21
    model = FirstCoordinate(0.5)
    first = torch.tensor([0.0, 1.0, 0.2, 0.7, 0.9])
    points = torch.zeros(5, n, dtype=torch.float32)
    points[:, 0] = first
    labels = predicted_labels(model, points)
    assert model.calls == [2, 2, 1]
    assert labels.tolist() == [0, 1, 0, 1, 1]


def test_margin_is_own_logit_minus_the_largest_other():
    """f = z_y - max_{j != y} z_j, by hand for three and two classes (positive while y holds)."""
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 4.5], [1.0, 1.0, 0.0], [3.0, 1.0, 2.0]], dtype=F64)
    label = torch.tensor([0, 1, 0, 2])
    assert margin(logits, label).tolist() == [1.0, 0.5, 0.0, -1.0]
    assert margin(torch.tensor([[-2.0, 0.5]]), torch.tensor([1])).tolist() == [2.5]


# --------------------------------------------------------------------------- bisection and the march (first_crossing)


def python_bisection(t_star: float, low: float, high: float, steps: int) -> float:
    """The bisection keeping the adversarial upper end, for a change at t_star (crossed iff t > t_star)."""
    for _ in range(steps):
        middle = (low + high) / 2
        if middle > t_star:
            high = middle
        else:
            low = middle
    return high


def test_bisect_rays_keeps_the_adversarial_end_of_each_bracket():
    """Along rays u of the plane f = x_0 - 1 from x = 0 the change is at t* = 1 / u_0; each row's
    bracket [low, high] is halved `steps` times keeping the crossed end: the result is the
    same bisection done by hand, within (high - low) / 2^steps above t*; 0 steps return high."""
    model = affine([1.0, 0.0], -1.0)
    rays = torch.tensor([[1.0, 0.0], [0.6, 0.8]], dtype=F64)
    x = torch.zeros(2, 2, dtype=F64)
    label = torch.zeros(2, dtype=torch.long)
    low = torch.tensor([0.5, 1.0], dtype=F64)
    high = torch.tensor([1.5, 3.0], dtype=F64)
    t = bisect_rays(model, x, rays, label, low, high, 7)
    t_star = [1.0, 1 / 0.6]
    expected = [python_bisection(s, lo, hi, 7) for s, lo, hi in zip(t_star, [0.5, 1.0], [1.5, 3.0])]
    np.testing.assert_allclose(t.numpy(), expected, rtol=1e-15)
    assert np.all(t.numpy() >= t_star) and np.all(t.numpy() - t_star <= np.array([1.0, 2.0]) / 2**7)
    assert bisect_rays(model, x, rays, label, low, high, 0).tolist() == [1.5, 3.0]


def test_first_crossing_bisects_only_the_earliest_bracket_per_point():
    """Plane f = x.w + b, w = (1, 2, -2), ||w|| = 3, two points with f = -1.6 and -2.8. Along a unit
    ray u the change is at t* = -f / (w.u) when w.u > 0. Point 0, march [0, 2] in 4 probes:
    rays with t* 0.6 and 0.9 share the first bracket (0.5, 1], so both are bisected; t* 1.2
    falls in a later bracket (inf: it cannot be the shortest) and w.u < 0 never crosses (inf).
    Point 1, march [0.4, 2.0]: the one crossing ray (t* = 1.3) lies in (1.2, 1.6].
    Forward evaluations: N M march + (bisected rays) x bisect_steps."""
    model = affine(W3, B3)
    unit = torch.tensor(W3, dtype=F64) / 3
    side = torch.tensor([2.0, -1.0, 0.0], dtype=F64) / math.sqrt(5)  # orthogonal to w

    def ray(t_star, f):
        """The unit ray with w.u = 3 cos = -f / t_star."""
        cos = -f / (3 * t_star)
        return cos * unit + math.sqrt(1 - cos * cos) * side

    f0, f1 = float(F3[0]), float(F3[1])
    rays = torch.stack([
        torch.stack([ray(0.6, f0), ray(1.2, f0), -unit, ray(0.9, f0)]),
        torch.stack([-unit, ray(1.3, f1), -side, -unit]),
    ])
    label = torch.zeros(2, dtype=torch.long)
    low, high = torch.tensor([0.0, 0.4], dtype=F64), torch.tensor([2.0, 2.0], dtype=F64)
    t, forwards = first_crossing(model, X3, rays, label, low, high, 4, 20)
    assert forwards == 2 * 4 * 4 + 3 * 20
    assert math.isinf(t[0, 1]) and math.isinf(t[0, 2])
    assert all(math.isinf(t[1, j]) for j in (0, 2, 3))
    found = {(0, 0): (0.6, 0.5, 1.0), (0, 3): (0.9, 0.5, 1.0), (1, 1): (1.3, 1.2, 1.6)}
    for (i, j), (t_star, lo, hi) in found.items():
        value = float(t[i, j])
        assert t_star <= value <= t_star + (hi - lo) / 2**20 + 1e-15
        assert value == pytest.approx(python_bisection(t_star, lo, hi, 20), rel=1e-12)
        with torch.no_grad():
            assert model(X3[i] + value * rays[i, j]).argmax().item() == 1


def test_first_crossing_returns_inf_and_only_the_march_cost_without_a_change():
    """A plane the rays never reach within (low, high]: every t is +inf, no bisection is spent."""
    model = affine(W3, B3)
    rays = torch.tensor(W3, dtype=F64).div(3).expand(2, 3, 3).clone()
    t, forwards = first_crossing(model, X3, rays, torch.zeros(2, dtype=torch.long),
                                 torch.zeros(2, dtype=F64), torch.full((2,), 0.5, dtype=F64), 5, 9)
    assert torch.isinf(t).all() and forwards == 2 * 3 * 5


def test_first_crossing_stops_marching_once_every_ray_has_crossed():
    """At n = 2^20 (4 rows per pass) two rays march 2 probes per pass. Class 1 where x_0 > 0.1:
    rays with u_0 = 1 and 0.6 (t* = 0.1 and 1/6) over [0, 4] in 8 probes both cross at the
    first probe (t = 0.5), so the march stops after one pass of 2 x 2 rows; the bracket
    (0, 0.5] of each is then bisected 3 times (passes of two rows): t = 0.125 and 0.1875."""
    n = 2**20
    model = FirstCoordinate(0.1)
    rays = torch.zeros(1, 2, n)
    rays[0, 0, 0] = 1.0
    rays[0, 1, :2] = torch.tensor([0.6, 0.8])
    t, forwards = first_crossing(model, torch.zeros(1, n), rays, torch.zeros(1, dtype=torch.long), torch.zeros(1),
                                 torch.full((1,), 4.0), 8, 3)
    assert model.calls == [4, 2, 2, 2]
    assert t.tolist() == [[python_bisection(0.1, 0.0, 0.5, 3), python_bisection(1 / 6, 0.0, 0.5, 3)]] \
        == [[0.125, 0.1875]]
    assert forwards == 2 * 8 + 2 * 3


def test_first_crossing_marches_in_blocks_at_large_n():
    """At n = 2^20 a forward pass holds 4 rows, so three rays are marched one probe per pass
    (then more per pass as rays cross and drop out). Class 1 where x_0 > 1: ray u crosses at
    t* = 1 / u_0. Rays with u_0 = 0.9, 0.3 and -1 over [0, 4] in 8 probes: t* = 1.11 in
    (1, 1.5], t* = 3.33 in a later bracket (inf), and never (inf). (float32 to keep it quick.)"""
    n = 2**20
    model = FirstCoordinate(1.0)
    x = torch.zeros(1, n)
    rays = torch.zeros(1, 3, n)
    for j, u0 in enumerate((0.9, 0.3, -1.0)):
        rays[0, j, 0] = u0
        rays[0, j, 1] = math.sqrt(1 - u0 * u0)
    t, forwards = first_crossing(model, x, rays, torch.zeros(1, dtype=torch.long), torch.zeros(1),
                                 torch.full((1,), 4.0), 8, 4)
    assert forwards == 3 * 8 + 4
    t_star = 1 / float(rays[0, 0, 0])
    assert t_star <= float(t[0, 0]) <= t_star + 0.5 / 2**4
    assert float(t[0, 0]) == python_bisection(t_star, 1.0, 1.5, 4) == 1.125
    assert math.isinf(t[0, 1]) and math.isinf(t[0, 2])
    # The march, in passes of at most 4 rows: probes 1, 2, 3 (t = 0.5, 1, 1.5) one at a time for
    # the three rays (4 // 3 = 1 probe); ray 0 crosses at probe 3, so probes 4-5 and 6-7 go two at
    # a time for the two rays left (4 // 2 = 2); ray 1 crosses at probe 7 (t = 3.5), and probe 8
    # is marched for ray 2 alone. Then four bisections of ray 0's bracket [1, 1.5].
    assert model.calls == [3, 3, 3, 4, 4, 1] + [1] * 4


def test_first_crossing_probes_in_the_points_dtype():
    """The march's probes t = low + (high - low) s / march must be float64 for float64 points: a
    boundary at t* between float64(1/3) and float32(1/3) (which differ by 1e-8) is past the first
    probe, so the crossing is bracketed in (1/3, 2/3] and the returned t is adversarial (>= t*)."""
    t_star = (1 / 3 + float(np.float32(1 / 3))) / 2
    model = affine([1.0], -t_star)
    rays = torch.ones(1, 1, 1, dtype=F64)
    t, _ = first_crossing(model, torch.zeros(1, 1, dtype=F64), rays, torch.zeros(1, dtype=torch.long),
                          torch.zeros(1, dtype=F64), torch.ones(1, dtype=F64), 3, 30)
    assert t_star <= float(t[0, 0]) <= t_star + 1 / 3 / 2**29  # the bracket (1/3, 2/3], halved 30 times


# --------------------------------------------------------------------------- walk_to_nearest


def test_walk_on_a_plane_turns_the_ray_onto_the_normal_in_one_round():
    """Plane x_1 = 1 in R^2, x = 0, d* = 1 along e_1. From the boundary point (1.5, 1.001): the
    downhill normal is e_1 exactly, so eta = 1 is accepted and bisected from 0: delta = (0, t),
    t in [1, 1 + |delta|/2^30]. A second round cannot shorten it by 1e-4 and stops the row.
    Counts: one gradient per active row and round; per round one probe plus 30 bisections."""
    model = affine([0.0, 1.0], -1.0)
    x = torch.zeros(1, 2, dtype=F64)
    start = torch.tensor([[1.5, 1.001]], dtype=F64)
    label = torch.zeros(1, dtype=torch.long)
    delta, gradients, forwards = walk_to_nearest(model, x, start, label, None, 1, 30)
    assert (gradients, forwards) == (1, 31)
    assert float(delta[0, 0]) == 0.0
    assert 1.0 <= float(delta[0, 1]) <= 1.0 + float(start.norm()) / 2**30
    assert start.tolist() == [[1.5, 1.001]]  # the input is not changed in place
    delta5, gradients, forwards = walk_to_nearest(model, x, start, label, None, 5, 30)
    assert (gradients, forwards) == (2, 62)
    assert 1.0 <= float(delta5[0, 1]) <= float(delta[0, 1]) and float(delta5[0, 0]) == 0.0


def test_walk_with_zero_rounds_returns_the_start_unchanged():
    """rounds = 0: no gradient, no probe; the perturbation comes back as given."""
    model = affine([0.0, 1.0], -1.0)
    start = torch.tensor([[1.5, 1.001]], dtype=F64)
    delta, gradients, forwards = walk_to_nearest(model, torch.zeros(1, 2, dtype=F64), start,
                                                 torch.zeros(1, dtype=torch.long), None, 0, 30)
    assert torch.equal(delta, start) and (gradients, forwards) == (0, 0)


def test_walk_around_a_ball_reaches_the_radial_distance():
    """Ball of radius 1 at the origin, x = (2, 0): d* = r - R = 1. From near the tangent point
    (1/2, sqrt(3)/2) at distance sqrt(3) the full turn (eta = 1) towards the normal misses the
    ball, so eta = 1/2 is taken; each round lands closer, and five rounds reach 1 within 1e-8.
    Two rows from inside a ball of radius 3 (x = (1, 0), d* = R - r = 2), starting at the
    boundary points (0, 3) and (1.5, 3 sqrt(3)/2), both walk to delta = (2, 0)."""
    model = Ball([0.0, 0.0], 1.0)
    x = torch.tensor([[2.0, 0.0]], dtype=F64)
    start = torch.tensor([[0.5 - 2.0, math.sqrt(3) / 2]], dtype=F64) * (1 - 1e-9)
    label = torch.zeros(1, dtype=torch.long)
    one, gradients, forwards = walk_to_nearest(model, x, start, label, None, 1, 30)
    # Round 1: eta 1 probed and missed, eta 1/2 probed and crossed, then bisected.
    assert (gradients, forwards) == (1, 2 + 30)
    assert 1.0 < float(one.norm()) < math.sqrt(3) * 0.7
    five, _, _ = walk_to_nearest(model, x, start, label, None, 5, 30)
    assert float(five.norm()) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose((five / five.norm()).numpy(), [[-1.0, 0.0]], atol=1e-4)

    inside = Ball([0.0, 0.0], 3.0)
    points = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=F64)
    starts = torch.tensor([[-1.0, 3.0], [0.5, 1.5 * math.sqrt(3)]], dtype=F64) * (1 + 1e-9)
    labels = torch.ones(2, dtype=torch.long)
    walked, _, _ = walk_to_nearest(inside, points, starts, labels, None, 20, 40, tolerance=1e-9)
    np.testing.assert_allclose(walked.norm(dim=1).numpy(), [2.0, 2.0], atol=1e-6)
    np.testing.assert_allclose(walked[:, 0].numpy(), [2.0, 2.0], atol=1e-3)


def ball_crossing(x: np.ndarray, u: np.ndarray, radius: float) -> float:
    """First t >= 0 with |x + t u| = R for a unit u (centre 0): t = b - sqrt(b^2 - (|x|^2 - R^2)),
    b = -u.x."""
    b = -u @ x
    return float(b - math.sqrt(b * b - (x @ x - radius**2)))


def test_one_walk_round_takes_the_first_turn_that_crosses():
    """Ball of radius 1 at the origin with margin scale 2 (gradient norm 2, so the normal must be
    normalised). Each row starts just inside the sphere at the angle phi seen from the centre;
    u = delta / |delta|, n = the inward unit normal there; the turned rays are
    normalize(u + eta (n - u)). Row 0 (x = (2, 0), phi = 30 deg): eta = 1 misses the ball at the
    current distance, eta = 1/2 crosses. Row 1 (x = (5, 0), phi = 60 deg): only eta = 1/4
    crosses. Row 2 (x = (10, 0), phi = 30 deg): none does, the row keeps its start. The
    accepted ray's crossing is the first root of |x + t u'| = 1, bisected 40 times from 0."""
    model = Ball([0.0, 0.0], 1.0, scale=2.0)
    cases = [(2.0, 30, 0.5), (5.0, 60, 0.25), (10.0, 30, None)]
    x = torch.tensor([[r0, 0.0] for r0, _, _ in cases], dtype=F64)
    on_sphere = torch.tensor([[math.cos(math.radians(phi)), math.sin(math.radians(phi))] for _, phi, _ in cases],
                             dtype=F64) * (1 - 1e-9)
    start = on_sphere - x
    delta, gradients, forwards = walk_to_nearest(model, x, start, torch.zeros(3, dtype=torch.long), None, 1, 40)
    # Probes: eta 1 for three rows, eta 1/2 for three, eta 1/4 for the two left; two bisections.
    assert (gradients, forwards) == (3, 3 + 3 + 2 + 2 * 40)
    for row, (_, _, eta) in enumerate(cases):
        d = float(start[row].norm())
        if eta is None:
            assert torch.equal(delta[row], start[row])
            continue
        u = (start[row] / d).numpy()
        n = -(on_sphere[row] / on_sphere[row].norm()).numpy()
        turned = u + eta * (n - u)
        turned /= np.linalg.norm(turned)
        t = ball_crossing(x[row].numpy(), turned, 1.0)
        assert t < d
        np.testing.assert_allclose(delta[row].numpy() / float(delta[row].norm()), turned, rtol=0, atol=1e-14)
        assert t <= float(delta[row].norm()) <= t + d / 2**40 + 1e-15


def test_a_walk_keeps_a_start_that_no_turned_ray_shortens():
    """Without bisection (0 steps) a crossing turned ray comes back at the current distance: never
    shorter, so each of eta = 1, 1/2, 1/4 is probed and the start is kept (plane x_1 = 1 in R^2,
    start (1.5, 1.001), whose turned rays all cross)."""
    model = affine([0.0, 1.0], -1.0)
    start = torch.tensor([[1.5, 1.001]], dtype=F64)
    delta, gradients, forwards = walk_to_nearest(model, torch.zeros(1, 2, dtype=F64), start,
                                                 torch.zeros(1, dtype=torch.long), None, 3, 0)
    assert torch.equal(delta, start) and (gradients, forwards) == (1, 3)


def test_a_walk_round_must_shorten_by_more_than_the_tolerance():
    """R^1, class 1 where x > 0.999, start delta = 2, 9 bisections of [0, 2]: the first midpoint
    1 crosses and the next eight (0.5 .. 0.998) do not, so t = 1.0 exactly. With tolerance 1/2
    the round shortened 2 to exactly 2 (1 - 1/2): not more than the tolerance, so the row stops
    (one gradient). With tolerance 0.4 it goes on (a second round, a second gradient)."""
    model = affine([1.0], -0.999)
    x, start, label = torch.zeros(1, 1, dtype=F64), torch.full((1, 1), 2.0, dtype=F64), torch.zeros(1, dtype=torch.long)
    delta, gradients, _ = walk_to_nearest(model, x, start, label, None, 5, 9, tolerance=0.5)
    assert delta.tolist() == [[1.0]] and gradients == 1
    _, gradients, _ = walk_to_nearest(model, x, start, label, None, 5, 9, tolerance=0.4)
    assert gradients == 2


def test_walk_tolerance_stops_rows_that_improve_too_little():
    """Ball R = 1, x = (2, 0): round 1 shortens sqrt 3 to below 0.7 sqrt 3; with tolerance 0.9
    that counts as too small (< 90%), so the row stops after one round: one gradient only."""
    model = Ball([0.0, 0.0], 1.0)
    x = torch.tensor([[2.0, 0.0]], dtype=F64)
    start = torch.tensor([[0.5 - 2.0, math.sqrt(3) / 2]], dtype=F64) * (1 - 1e-9)
    label = torch.zeros(1, dtype=torch.long)
    _, gradients, _ = walk_to_nearest(model, x, start, label, None, 10, 30, tolerance=0.9)
    assert gradients == 1
    _, gradients, _ = walk_to_nearest(model, x, start, label, None, 10, 30, tolerance=0.01)
    assert gradients > 2


def test_walk_stays_in_the_subspace_and_stops_without_a_projected_gradient():
    """Plane x_1 = 1, x = 0. Inside the line spanned by s = (1, 1)/sqrt 2 the distance is
    |f| / ||P_s w|| = 1 / (1/sqrt 2) = sqrt 2, reached along s. Inside the line of e_0 the
    projected gradient is 0: the row is not walked (one gradient, no probe)."""
    model = affine([0.0, 1.0], -1.0)
    x = torch.zeros(1, 2, dtype=F64)
    label = torch.zeros(1, dtype=torch.long)
    s = torch.tensor([1.0, 1.0], dtype=F64) / math.sqrt(2)

    def along_s(v, rows):
        assert rows.tolist() == [0]
        return (v @ s)[:, None] * s

    delta, gradients, forwards = walk_to_nearest(model, x, 2 * s[None], label, along_s, 3, 40)
    assert float(delta.norm()) == pytest.approx(math.sqrt(2), abs=1e-10)
    np.testing.assert_allclose(delta[0].numpy() / float(delta.norm()), s.numpy(), atol=1e-12)
    start = torch.tensor([[5.0, 0.0]], dtype=F64)
    stuck, gradients, forwards = walk_to_nearest(model, x, start, label, lambda v, rows: v * torch.tensor([1.0, 0.0],
                                                 dtype=F64), 3, 40)
    assert torch.equal(stuck, start) and (gradients, forwards) == (1, 0)


def test_the_walk_threshold_is_relative_to_each_rows_own_gradient():
    """A row is walked only if its projected gradient exceeds 1e-6 x its own gradient's norm.
    Plane 3 x_1 = 3 (gradient norm 3) inside the line s = (1, delta): the projected gradient is
    3 delta / sqrt(1 + delta^2); delta = 5e-7 gives 1.5e-6 < 3e-6 (not walked: no probe), delta
    = 2e-6 gives 6e-6 (walked). Three classes z = (0, x_0 - 1, 1000 (x_1 - 1)): a row whose
    rival is class 2 has gradient norm 1000, one whose rival is class 1 norm 1; inside the line
    (1e-4, 1) the second row's projected gradient 1e-4 is above its own 1e-6 threshold, so it
    is walked whether or not the first row is in the same batch."""
    plane = affine([0.0, 3.0], -3.0)
    x, label = torch.zeros(1, 2, dtype=F64), torch.zeros(1, dtype=torch.long)
    start = torch.tensor([[5.0, 1.5]], dtype=F64)
    for tilt, walked in ((5e-7, False), (2e-6, True)):
        s = torch.tensor([1.0, tilt], dtype=F64) / math.hypot(1.0, tilt)
        _, gradients, forwards = walk_to_nearest(plane, x, start, label, lambda v, rows: (v @ s)[:, None] * s, 1, 5)
        assert gradients == 1 and (forwards > 0) == walked

    three = affine_logits([[0.0, 0.0], [1.0, 0.0], [0.0, 1000.0]], [0.0, -1.0, -1000.0])
    points = torch.tensor([[-5.0, 0.999], [0.0, -5.0]], dtype=F64)
    starts = torch.tensor([[0.0, 0.002], [1.5, 0.0]], dtype=F64)
    labels = torch.zeros(2, dtype=torch.long)
    s = torch.tensor([1e-4, 1.0], dtype=F64) / math.hypot(1e-4, 1.0)

    def line(v, rows):
        return (v @ s)[:, None] * s

    def forwards_of(rows):
        return walk_to_nearest(three, points[rows], starts[rows], labels[rows], line, 1, 5)[2]

    assert forwards_of([1]) > 0
    assert forwards_of([0, 1]) == forwards_of([0]) + forwards_of([1])


def test_a_walk_at_a_zero_gradient_leaves_the_point_alone():
    """x + delta at the centre of a ball (radius 1): |x - c| has gradient 0 there (no normal at
    all), so the row is not walked: delta unchanged, one gradient, no probe."""
    model = Ball([0.0, 0.0], 1.0)
    x = torch.tensor([[3.0, 0.0]], dtype=F64)
    start = torch.tensor([[-3.0, 0.0]], dtype=F64)
    delta, gradients, forwards = walk_to_nearest(model, x, start, torch.zeros(1, dtype=torch.long), None, 3, 20)
    assert torch.equal(delta, start) and (gradients, forwards) == (1, 0)


# --------------------------------------------------------------------------- minimal_search pieces and the final check


def test_constants_of_the_search():
    """The documented constants: exhaustive up to dimension 3, 4 walked rays, 3 passes, nudges
    1e-6 .. 1e-3, and the default budget."""
    assert EXHAUSTIVE_MAX_DIM == 3 and WALKED_RAYS == 4 and SEARCH_PASSES == 3
    assert NUDGES == (1e-6, 1e-5, 1e-4, 1e-3)
    assert (BRACKETED, NONE_WITHIN_REACH, UNKNOWN) == ("bracketed", "none within reach", "unknown")
    budget = SearchBudget()
    assert (budget.directions, budget.starts, budget.march_steps, budget.walk_rounds, budget.bisect_steps,
            budget.tolerance, budget.certify) == (256, 8, 16, 20, 24, 0.02, True)


def test_finite_and_unit_or_zero():
    """_finite: a float, None for inf and NaN; _unit_or_zero: v / ||v|| per row, 0 for a zero row."""
    assert _finite(np.float64(2.5)) == 2.5 and type(_finite(np.float64(2.5))) is float
    assert _finite(np.inf) is None and _finite(np.nan) is None
    v = torch.tensor([[3.0, 4.0], [0.0, 0.0], [1e-100, 0.0]], dtype=F64)
    np.testing.assert_allclose(_unit_or_zero(v).numpy(), [[0.6, 0.8], [0.0, 0.0], [1.0, 0.0]], rtol=1e-15)
    small = torch.tensor([[1e-15, 0.0]], dtype=torch.float32)
    assert _unit_or_zero(small).tolist() == [[1.0, 0.0]]


def test_row_projection_per_mode_and_row():
    """free: no projection; on: B B^T v; off: v - B B^T v, with each row's own point's basis."""
    assert _row_projection("free", None) is None
    bases = torch.zeros(2, 3, 1, dtype=F64)
    bases[0, 0, 0] = 1.0  # point 0: e_0
    bases[1, 2, 0] = 1.0  # point 1: e_2
    basis = DenseBasis(bases)
    v = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0], [7.0, 8.0, 9.0]], dtype=F64)
    rows = torch.tensor([1, 0, 1])
    on = _row_projection("on", basis)(v, rows)
    off = _row_projection("random_off", basis)(v, rows)
    assert on.tolist() == [[0, 0, 3], [4, 0, 0], [0, 0, 9]]
    assert off.tolist() == [[1, 2, 0], [0, 5, 6], [7, 8, 0]]


def brackets_by_hand(**changes):
    values = dict(mode="on", reach=3.0, lower=np.array([0.5, 3.0, 2.0, 0.1, 0.9]),
                  upper=np.array([1.0, np.nan, 2.0, np.nan, 1.2]), delta=torch.zeros(5, 2),
                  label=torch.zeros(5, dtype=torch.long), adversarial_label=torch.ones(5, dtype=torch.long),
                  subspace_dim=2, search="exhaustive", gradient_evaluations=7, forward_evaluations=11, seconds=0.5,
                  greedy_upper=np.array([1.5, np.nan, 2.0, np.nan, np.nan]))
    values.update(changes)
    return DistanceBrackets(**values)


def test_status_and_relative_gap_by_hand():
    """Five points, reach 3: found (1.0, 2.0, 1.2) are bracketed; not found with lower 3 >= reach is
    certified none within reach, with lower 0.1 unknown. gap = (u - l) / u = 0.5, 0, 0.25, NaN else."""
    brackets = brackets_by_hand()
    assert brackets.status.tolist() == [BRACKETED, NONE_WITHIN_REACH, BRACKETED, UNKNOWN, BRACKETED]
    np.testing.assert_allclose(brackets.relative_gap, [0.5, np.nan, 0.0, np.nan, 0.25])
    # A lower end just below the reach is not a certificate.
    below = brackets_by_hand(lower=np.array([0.5, 2.999, 2.0, 0.1, 0.9]))
    assert below.status.tolist()[1] == UNKNOWN


def test_summary_by_hand():
    """The summary of the five hand-made brackets: medians and means over all points with
    upper = +inf where not found (so a median over more than half not found would be None)."""
    summary = brackets_by_hand().summary(0.02)
    assert summary == {
        "mode": "on", "n_points": 5, "search": "exhaustive", "success_rate": 0.6,
        "share_none_within_reach": 0.2, "share_unknown": 0.2,
        "median_distance_counting_failures": 2.0,  # median of (1, inf, 2, inf, 1.2)
        "median_lower_bound": 0.9, "mean_distance": None, "mean_lower_bound": pytest.approx(6.5 / 5),
        "median_relative_gap": pytest.approx(0.25), "share_settled": 0.4,  # gap 0 at point 2, and point 1 certified
        "median_greedy_distance": None,  # median of (1.5, inf, 2, inf, inf): NaN counts as not found
        "reach": 3.0, "certificate": None, "gradient_evaluations": 7, "forward_evaluations": 11, "seconds": 0.5,
    }
    assert type(summary["n_points"]) is int and type(summary["success_rate"]) is float
    # Tolerance 0.25 also settles point 4 (gap 0.25 <= 0.25), and the finite medians and means.
    wider = brackets_by_hand(upper=np.array([1.0, 4.0, 2.0, np.nan, 1.2]),
                             greedy_upper=np.array([1.5, 4.0, 2.0, 1.0, 1.0])).summary(0.25)
    assert wider["share_settled"] == pytest.approx(0.6)
    assert wider["median_distance_counting_failures"] == 2.0 and wider["mean_distance"] is None
    assert wider["median_greedy_distance"] == 1.5 and wider["share_none_within_reach"] == 0.0
    all_found = brackets_by_hand(upper=np.array([1.0, 4.0, 2.0, 3.0, 1.2]),
                                 certificate="why").summary(0.02)
    assert all_found["mean_distance"] == pytest.approx(11.2 / 5) and all_found["certificate"] == "why"
    assert all_found["median_relative_gap"] == pytest.approx(0.25)
    nothing = brackets_by_hand(upper=np.full(5, np.nan)).summary(0.02)
    assert nothing["median_relative_gap"] is None and nothing["success_rate"] == 0.0


def test_summary_counts_a_nan_greedy_distance_as_not_found():
    """median_greedy_distance takes NaN (greedy walk found nothing) as +inf: the median of
    (1.5, inf, 2, 1, 1) is 1.5 (not NaN)."""
    summary = brackets_by_hand(greedy_upper=np.array([1.5, np.nan, 2.0, 1.0, 1.0])).summary(0.02)
    assert summary["median_greedy_distance"] == 1.5


def test_verified_nudges_a_perturbation_just_short_of_the_boundary():
    """Plane x_0 = 1 from x = 0 along e_0: a delta 1 + 1e-3 is adversarial as it is; one at
    1 - 5e-6 becomes adversarial after the nudges 1e-6 and 1e-5 (length (1 - 5e-6)(1 + 1e-6)
    (1 + 1e-5)); one at 0.99 fails every nudge and counts as not found (inf, delta 0); a point
    not found (inf) is left alone. Forwards: 4 points, then 2 rows for each of the 4 nudges
    except that the middle one leaves after the second."""
    model = affine([1.0, 0.0], -1.0)
    x = torch.zeros(4, 2, dtype=F64)
    lengths = [1 + 1e-3, 1 - 5e-6, 0.99, 0.0]
    delta = torch.tensor([[length, 0.0] for length in lengths], dtype=F64)
    upper = torch.tensor([1 + 1e-3, 1 - 5e-6, 0.99, math.inf], dtype=F64)
    label = torch.zeros(4, dtype=torch.long)
    upper, delta, adversarial, forwards = _verified(model, x, label, upper, delta)
    nudged = (1 - 5e-6) * (1 + 1e-6) * (1 + 1e-5)
    np.testing.assert_allclose(upper.numpy(), [1 + 1e-3, nudged, math.inf, math.inf], rtol=1e-15)
    np.testing.assert_allclose(delta[:, 0].numpy(), [1 + 1e-3, nudged, 0.0, 0.0], rtol=1e-15)
    assert adversarial.tolist() == [1, 1, 0, 0]
    assert forwards == 4 + 2 + 2 + 1 + 1


# --------------------------------------------------------------------------- the search: affine closed forms


@pytest.mark.parametrize("mode", ["free", "on", "off"])
def test_affine_brackets_close_on_the_closed_form(mode):
    """Plane w = (1, 2, -2), ||w|| = 3: d_free = |f| / 3; with the shared line s = (2, -1, 2)/3
    (B^T w = -4/3): d_on = |f| / (4/3), d_off = |f| / ||w - (s.w) s|| = |f| / sqrt(9 - 16/9). The
    certified lower end of an affine model is exact, so the bracket closes on the closed form,
    and delta points straight across the plane within the subspace."""
    model = affine(W3, B3)
    w = torch.tensor(W3, dtype=F64)
    s = torch.tensor([[2.0], [-1.0], [2.0]], dtype=F64) / 3
    brackets = search(model, mode, X3, None if mode == "free" else s)
    direction = {"free": w, "on": (s @ (s.T @ w)), "off": w - s @ (s.T @ w)}[mode]
    exact = (F3.abs() / direction.norm()).numpy()
    np.testing.assert_allclose(brackets.upper, exact, rtol=1e-6)
    np.testing.assert_allclose(brackets.lower, exact, rtol=1e-6)
    assert np.all(brackets.lower <= brackets.upper)
    np.testing.assert_allclose((brackets.delta / brackets.delta.norm(dim=1, keepdim=True)).numpy(),
                               (direction / direction.norm()).expand(2, 3).numpy(), atol=1e-5)
    assert brackets.status.tolist() == [BRACKETED] * 2
    assert brackets.subspace_dim == {"free": 3, "on": 1, "off": 2}[mode]
    assert brackets.search == "exhaustive" and brackets.mode == mode and brackets.certificate is None
    assert brackets.reach == pytest.approx(10.0)
    assert brackets.label.tolist() == [0, 0] and brackets.adversarial_label.tolist() == [1, 1]
    np.testing.assert_allclose(brackets.greedy_upper, exact, rtol=1e-3)
    assert (brackets.basis is None) == (mode == "free")
    assert_adversarial(model, X3, brackets)


def test_off_mode_lower_ends_are_certified_in_the_complement():
    """Mode off certifies the complement of the line, not the line: with s = (2, 2, -1)/3,
    s.w = 8/3, the complement's distance is |f| / sqrt(9 - 64/9) = 3 |f| / sqrt 17 (the line's
    would be the smaller 3 |f| / 8); with s = w / 3 the complement never meets the plane:
    certified none within the reach 2."""
    model = affine(W3, B3)
    tilted = torch.tensor([[2.0], [2.0], [-1.0]], dtype=F64) / 3
    brackets = search(model, "off", X3, tilted)
    exact = (3 * F3.abs() / math.sqrt(17)).numpy()
    np.testing.assert_allclose(brackets.lower, exact, rtol=1e-6)
    np.testing.assert_allclose(brackets.upper, exact, rtol=1e-6)
    along_w = torch.tensor(W3, dtype=F64)[:, None] / 3
    none = search(model, "off", X3, along_w, reach=2.0)
    assert none.status.tolist() == [NONE_WITHIN_REACH] * 2 and np.allclose(none.lower, 2.0)


def test_affine_search_per_point_subspaces():
    """Mode on with a different line per point (DenseBasis (N, n, 1)): point 0 on e_0
    (B^T w = 1, d = |f| / 1 = 1.6), point 1 on e_1 (B^T w = 2, d = 0.8), point 2 on
    (e_0 + e_1 + e_2) / sqrt 3 (B^T w = 1/sqrt 3, d = 1.6 sqrt 3), point 3 on (2, 0, 1)/sqrt 5,
    orthogonal to w: none, certified beyond the reach 4."""
    model = affine(W3, B3)
    x = torch.cat([X3[:1], X3[:1], X3[:1], X3[:1]])  # f = -1.6 at each
    lines = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [1.0, 1.0, 1.0], [2.0, 0, 1.0]], dtype=F64)
    lines = lines / lines.norm(dim=1, keepdim=True)
    brackets = search(model, "on", x, lines[:, :, None], reach=4.0)
    np.testing.assert_allclose(brackets.upper[:3], [1.6, 0.8, 1.6 * math.sqrt(3)], rtol=1e-6)
    np.testing.assert_allclose(brackets.lower[:3], [1.6, 0.8, 1.6 * math.sqrt(3)], rtol=1e-6)
    assert math.isnan(brackets.upper[3]) and brackets.lower[3] == pytest.approx(4.0)
    assert brackets.status.tolist() == [BRACKETED] * 3 + [NONE_WITHIN_REACH]
    assert brackets.reach == 4.0 and brackets.subspace_dim == 1
    np.testing.assert_allclose(brackets.delta[:3].numpy(), (brackets.upper[:3, None] * lines[:3].numpy())
                               * np.sign((lines[:3] @ torch.tensor(W3, dtype=F64)).numpy())[:, None], atol=1e-6)
    assert torch.all(brackets.delta[3] == 0) and brackets.adversarial_label.tolist() == [1, 1, 1, 0]
    assert_adversarial(model, x, brackets)


def test_a_subspace_orthogonal_to_w_is_none_or_unknown():
    """B^T w = 0 (the plane's normal is orthogonal to the line): nothing is found. With certified
    bounds the lower end is the whole reach (none within reach); without, it is 0 (unknown), and
    the certificate says why."""
    model = affine(W3, B3)
    line = torch.tensor([[2.0], [0.0], [1.0]], dtype=F64) / math.sqrt(5)
    certified = search(model, "on", X3, line, reach=2.5)
    assert np.isnan(certified.upper).all() and np.allclose(certified.lower, 2.5)
    assert certified.status.tolist() == [NONE_WITHIN_REACH] * 2
    assert torch.all(certified.delta == 0) and certified.adversarial_label.tolist() == [0, 0]
    assert np.isnan(certified.greedy_upper).all()
    unknown = search(model, "on", X3, line, reach=2.5, budget=SearchBudget(directions=32, certify=False))
    assert unknown.status.tolist() == [UNKNOWN] * 2 and np.all(unknown.lower == 0)
    assert unknown.certificate == "certified bounds switched off (measure.attacks.search.certify: false)"


def test_the_boundary_beyond_reach_is_not_found():
    """d_free = 1.6/3 = 0.533 and 2.8/3 = 0.933; with reach 0.7 (14 steps of 0.05) the first point is
    found and the second is certified to have no boundary within reach."""
    model = affine(W3, B3)
    brackets = search(model, "free", X3, step=0.05, max_steps=14)
    assert brackets.reach == pytest.approx(0.7)
    assert brackets.upper[0] == pytest.approx(1.6 / 3, rel=1e-6) and math.isnan(brackets.upper[1])
    assert brackets.lower[1] == pytest.approx(0.7) and brackets.status[1] == NONE_WITHIN_REACH


def test_multiclass_affine_distance_is_the_nearest_rival_facet():
    """Three classes in R^2, z = (0, x_0 - 1, x_1 - 0.5): at x = 0 (class 0) the distance is
    min(1 / ||e_0||, 0.5 / ||e_1||) = 0.5 towards class 2; at x = (0, -3) it is 1 towards class 1.
    At (2, 0) (class 1) the rivals are z_0 (facet x_0 = 1, distance 1) and z_2 (facet
    x_1 = x_0 - 0.5, distance 1.5 / sqrt 2 = 1.06): 1 towards class 0."""
    model = affine_logits([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]], [0.0, -1.0, -0.5])
    x = torch.tensor([[0.0, 0.0], [0.0, -3.0], [2.0, 0.0]], dtype=F64)
    brackets = search(model, "free", x)
    np.testing.assert_allclose(brackets.upper, [0.5, 1.0, 1.0], rtol=1e-6)
    np.testing.assert_allclose(brackets.lower, [0.5, 1.0, 1.0], rtol=1e-6)
    assert brackets.label.tolist() == [0, 0, 1] and brackets.adversarial_label.tolist() == [2, 1, 0]
    assert_adversarial(model, x, brackets)


def test_numpy_points_and_the_time_taken():
    """Points given as a numpy array go to the model's dtype (float64 here) and give the same
    closed-form distances |f| / 3; `seconds` is the call's own wall time."""
    model = affine(W3, B3)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=200)
    before = time.perf_counter()
    brackets = MinimalDistanceSearch(pgd, SearchBudget(directions=16))(X3.numpy())
    elapsed = time.perf_counter() - before
    assert brackets.delta.dtype == F64
    np.testing.assert_allclose(brackets.upper, (F3.abs() / 3).numpy(), rtol=1e-6)
    assert 0 < brackets.seconds <= elapsed


def test_a_float32_search_matches_the_closed_form():
    """The same plane in float32 (model and points): the exhaustive rays are cast to the points'
    dtype; d_free = |f| / 3 within float32 precision."""
    model = affine(W3, B3).float()
    x = X3.float()
    brackets = search(model, "free", x, budget=SearchBudget(directions=16, certify=False, tolerance=0.0))
    assert brackets.delta.dtype == torch.float32
    np.testing.assert_allclose(brackets.upper, (F3.abs() / 3).numpy(), rtol=1e-5)


@pytest.mark.parametrize("n", [3, 5])
def test_a_float32_search_with_random_starts_matches_the_closed_form(n):
    """The plane in float32 in R^3 (exhaustive) and R^5 (random starts, the seeded rays drawn in
    the points' dtype): d_free = |f| / 3 within float32 precision."""
    w = torch.zeros(n, dtype=F64)
    w[:3] = torch.tensor(W3, dtype=F64)
    model = affine(w, B3).float()
    x = torch.cat([X3, torch.zeros(2, n - 3, dtype=F64)], dim=1).float()
    brackets = search(model, "free", x, budget=SearchBudget(directions=16, starts=2, certify=False, tolerance=0.0))
    assert brackets.delta.dtype == torch.float32
    np.testing.assert_allclose(brackets.upper, (F3.abs() / 3).numpy(), rtol=1e-5)


@pytest.mark.parametrize(("n", "search_kind"), [(4096, "exhaustive"), (4097, "random starts")])
def test_exhaustive_search_needs_a_small_subspace_and_at_most_4096_inputs(n, search_kind):
    """A 1-D subspace (the line of e_0) is searched exhaustively up to n = 4096 inputs; beyond,
    with random starts. Either way the plane x_0 = 0.3 is at |f| / ||B^T w|| = 0.3."""
    w = torch.zeros(n, dtype=F64)
    w[0] = 1.0
    model = affine(w, -0.3)
    line = torch.zeros(n, 1, dtype=F64)
    line[0, 0] = 1.0
    brackets = search(model, "on", torch.zeros(1, n, dtype=F64), line,
                      budget=SearchBudget(directions=8, starts=1, certify=False, tolerance=0.0), max_steps=20)
    assert brackets.search == search_kind and brackets.subspace_dim == 1
    assert brackets.upper[0] == pytest.approx(0.3, rel=1e-6)


# --------------------------------------------------------------------------- the search: passes, settling, the cost


def test_tight_brackets_skip_the_ray_search():
    """The affine bound is exact, so after the greedy walk every bracket is within tolerance: the
    search spends the walk's gradients and forwards plus one verifying forward pass per point.
    With tolerance 0 the (not exactly closed) brackets stay open and the rays are searched."""
    model = affine(W3, B3)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=200)
    greedy = pgd(X3)
    tight = MinimalDistanceSearch(pgd, SearchBudget(directions=32))(X3)
    assert tight.gradient_evaluations == greedy.gradient_evaluations
    assert tight.forward_evaluations == greedy.forward_evaluations + 2
    np.testing.assert_array_equal(tight.greedy_upper, greedy.distance.numpy())
    loose = MinimalDistanceSearch(pgd, SearchBudget(directions=32, tolerance=0.0, certify=False))(X3)
    assert loose.forward_evaluations > tight.forward_evaluations + 2 * 32 * 16
    np.testing.assert_allclose(loose.upper, tight.upper, rtol=1e-6)


def test_a_bracket_already_within_tolerance_costs_no_rays():
    """tolerance = 1 and no certified bounds (lower 0): (upper - 0) <= 1 x upper holds for every
    found point, so the search costs the greedy walk and the final check only. Distances above
    1 (|f| / 3 = 1.53 and 1.93, f = w.x - 4.5) tell `tolerance x upper` from `tolerance / upper`."""
    model = affine(W3, -4.5)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=200)
    greedy = pgd(X3)
    brackets = MinimalDistanceSearch(pgd, SearchBudget(directions=16, tolerance=1.0, certify=False))(X3)
    np.testing.assert_allclose(brackets.upper, [4.6 / 3, 5.8 / 3], rtol=1e-6)
    assert brackets.forward_evaluations == greedy.forward_evaluations + 2
    assert brackets.gradient_evaluations == greedy.gradient_evaluations


def test_no_starts_and_no_walk_leave_the_greedy_result_in_high_dimension():
    """R^5 (random starts, not exhaustive) with starts = 0 and walk_rounds = 0: nothing to search
    beyond the greedy walk; the upper end is the greedy one and the cost is the walk's plus one
    verifying pass per point. With the walk on, starts = 0 still marches the downhill ray."""
    model = affine([1.0, 2.0, -2.0, 0.0, 0.0], -1.5)
    x = torch.cat([X3, torch.zeros(2, 2, dtype=F64)], dim=1)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=200, refine_steps=0, normal_rounds=0)
    greedy = pgd(x)
    plain = MinimalDistanceSearch(pgd, SearchBudget(starts=0, walk_rounds=0, certify=False))(x)
    assert plain.search == "random starts" and plain.subspace_dim == 5
    np.testing.assert_allclose(plain.upper, greedy.distance.numpy(), rtol=1e-12)
    assert plain.forward_evaluations == greedy.forward_evaluations + 2
    assert plain.gradient_evaluations == greedy.gradient_evaluations
    walked = MinimalDistanceSearch(pgd, SearchBudget(starts=0, walk_rounds=1, certify=False))(x)
    np.testing.assert_allclose(walked.upper, (F3.abs() / 3).numpy(), rtol=1e-6)


def test_exhaustive_search_runs_without_starts_or_walk():
    """An exhaustive search needs neither random starts nor the walk: starts = 0 and walk_rounds
    = 0 still march the two rays of R^1 and find the sliver at 0.503 (the greedy walk cannot)."""
    budget = SearchBudget(directions=64, march_steps=4, starts=0, walk_rounds=0, bisect_steps=30, certify=False)
    brackets = search(sliver(), "free", torch.zeros(1, 1, dtype=F64), budget=budget, step=0.1, max_steps=1, reach=2.0)
    assert brackets.upper[0] == pytest.approx(0.503, abs=1e-6)


def test_a_search_counts_its_passes_and_stops_when_a_pass_does_not_shorten():
    """R^1, plane x > 0.9, greedy walk cut short (one step of 0.1), no walk, no bisection (the
    march's crossing probe is returned as it is). The two rays of the 1-D search (directions 2:
    4 probes) over [0, 2] give 1.0; pass 2 over [0, 1] finds 1.0 again (probes 0.25 .. 1): no
    shorter, so there is no pass 3. Forwards: greedy 2 (x and one step), 2 x (2 rays x 4
    probes), 1 verifying pass; gradients: the greedy walk's 1."""
    model = affine([1.0], -0.9)
    x = torch.zeros(1, 1, dtype=F64)
    budget = SearchBudget(directions=2, march_steps=4, walk_rounds=0, bisect_steps=0, certify=False)
    brackets = search(model, "free", x, budget=budget, step=0.1, max_steps=1, reach=2.0)
    assert brackets.upper.tolist() == [1.0] and brackets.delta.tolist() == [[1.0]]
    assert brackets.forward_evaluations == 2 + 2 * 8 + 1
    assert brackets.gradient_evaluations == 1


def test_one_random_start_without_the_walk_is_marched_pass_by_pass():
    """Two planes in R^4 (no gradient: the greedy walk cannot move, the downhill ray is zero),
    one seeded random start u, no walk, no bisection: the search returns the first probe past
    t* = min(0.31 / u_0, 2.01 / u_1) (positive components only) of each pass's march of
    [0, high] in 4 probes, high = the reach, then the previous pass's result; a pass that does
    not shorten ends the search. Forwards: the greedy walk's, 2 rays x 4 probes per pass, one
    final check."""
    model = two_planes(4, 0.3, 2.0)
    x = torch.zeros(1, 4, dtype=F64)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=4, seed=6)
    greedy = pgd(x)
    assert not bool(greedy.success.any())
    budget = SearchBudget(starts=1, march_steps=4, walk_rounds=0, bisect_steps=0, certify=False, tolerance=0.0)
    brackets = MinimalDistanceSearch(pgd, budget, reach=3.0)(x)
    u = gaussian_directions([0], 1, 4, 6, dtype=F64)[0, 0]
    u = u / u.norm()
    options = [c / float(u[i]) for i, c in ((0, 0.31), (1, 2.01)) if float(u[i]) > 0]
    t_star = min(options)
    assert t_star < 3.0
    upper, high, passes = math.inf, 3.0, 0
    for _ in range(SEARCH_PASSES):
        passes += 1
        width = high / 4
        s = next(s for s in range(1, 5) if high * (s / 4) > t_star)
        found = width * (s - 1) + width
        if not found < upper:
            break
        upper = high = found
    assert brackets.upper[0] == pytest.approx(upper, rel=1e-12)
    np.testing.assert_allclose(brackets.delta[0].numpy(), (upper * u).numpy(), atol=1e-12)
    assert brackets.forward_evaluations == greedy.forward_evaluations + passes * 2 * 4 + 1


def test_the_search_accounts_for_the_walks_forwards_and_gradients(monkeypatch):
    """R^1, plane x > 0.9, greedy cut short, one walk round per pass: every forward pass and
    gradient is counted: greedy walk + per pass (2 rays x 4 probes + 1 ray x 20 bisections + the
    walk's own) + 1 final check. Pass 1 walks its one ray, pass 2 that pass's ray and the point
    pass 1 found, and shortens nothing: no pass 3 (gradients 1 + 1 + 2)."""
    walks = []
    real_walk = minimal_search.walk_to_nearest

    def recorded_walk(*args):
        result = real_walk(*args)
        walks.append(result[1:])
        return result

    monkeypatch.setattr(minimal_search, "walk_to_nearest", recorded_walk)
    model = affine([1.0], -0.9)
    x = torch.zeros(1, 1, dtype=F64)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.1, max_steps=1)
    greedy = pgd(x)
    budget = SearchBudget(directions=2, march_steps=4, walk_rounds=1, bisect_steps=20, certify=False)
    brackets = MinimalDistanceSearch(pgd, budget, reach=2.0)(x)
    assert brackets.upper[0] == pytest.approx(0.9, abs=1e-6)
    assert [gradients for gradients, _ in walks] == [1, 2]
    assert brackets.gradient_evaluations == greedy.gradient_evaluations + 1 + 2
    assert brackets.forward_evaluations == (greedy.forward_evaluations + 2 * (2 * 4 + 20)
                                            + sum(forwards for _, forwards in walks) + 1)


def test_the_final_check_nudges_a_point_that_a_last_bit_difference_undid(monkeypatch):
    """The final forward pass can disagree with the search in the last bits (another batch
    composition). Simulated: point 0's perturbation is shortened by 5e-6 (relative) just before
    the final check, so it falls short of the plane; the check nudges it by 1e-6 (still short),
    then 1e-5 (across): upper = |delta| (1 - 5e-6)(1 + 1e-6)(1 + 1e-5), still adversarial."""
    real_verified = minimal_search._verified
    seen = {}

    def last_bits(model, x, label, upper, delta):
        seen["found"] = float(delta[0].norm())
        delta[0] *= 1 - 5e-6
        return real_verified(model, x, label, upper, delta)

    monkeypatch.setattr(minimal_search, "_verified", last_bits)
    model = affine(W3, B3)
    brackets = search(model, "free", X3)
    # The search's own upper end is within 4e-6 of d = 1.6 / 3, so one nudge is not enough:
    assert seen["found"] * (1 - 5e-6) * (1 + 1e-6) < 1.6 / 3 < seen["found"] * (1 - 5e-6) * (1 + 1e-6) * (1 + 1e-5)
    assert brackets.upper[0] == pytest.approx(seen["found"] * (1 - 5e-6) * (1 + 1e-6) * (1 + 1e-5), rel=1e-12)
    assert_adversarial(model, X3, brackets)


def test_a_lower_end_is_never_above_the_upper_end():
    """If a lower bound came out above a verified upper end (an unsound bound), the reported lower
    end is clipped to the upper end; where nothing is found it is kept."""

    class Overconfident(MinimalDistanceSearch):
        def _lower_bounds(self, x, basis, label):
            return np.full(len(x), 5.0), "a test's unsound bound"

    model = affine(W3, B3)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=200)
    brackets = Overconfident(pgd, SearchBudget(directions=16))(X3)
    np.testing.assert_allclose(brackets.upper, (F3.abs() / 3).numpy(), rtol=1e-6)
    np.testing.assert_array_equal(brackets.lower, brackets.upper)
    assert brackets.certificate == "a test's unsound bound"
    short = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=14)  # reach 0.7 < 0.933
    beyond = Overconfident(short, SearchBudget(directions=16))(X3)
    assert math.isnan(beyond.upper[1]) and beyond.lower[1] == 5.0


# --------------------------------------------------------------------------- the search: rays, restarts, nonlinear


def test_rays_of_an_exhaustive_search_are_the_sphere_directions_in_the_frame():
    """On-mode with the plane spanned by e_0 and (0, 1, 1)/sqrt 2: the rays are B (cos a, sin a)
    for the `directions` equally spaced angles a, for each worked point."""
    model = affine(W3, B3)
    basis = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]], dtype=F64)
    basis[:, 1] /= math.sqrt(2)
    pgd = GreedyProjectedPGD(model, mode="on", step_size=0.05, max_steps=10)
    finder = MinimalDistanceSearch(pgd, SearchBudget(directions=6))
    work = torch.tensor([1])
    rays = finder._rays(X3, work, DenseBasis(basis, n_points=2), torch.zeros(2, dtype=torch.long), "exhaustive", 2,
                        None)
    angles = torch.arange(6, dtype=F64) * (2 * math.pi / 6)
    expected = (basis @ torch.stack([angles.cos(), angles.sin()])).T
    assert rays.shape == (1, 6, 3)
    np.testing.assert_allclose(rays[0].numpy(), expected.numpy(), atol=1e-15)


@pytest.mark.parametrize("starts", [0, 3])
def test_random_start_rays_are_seeded_projected_and_turned_downhill(starts):
    """Random starts in R^5, mode off, a different line per point (point 0 avoids e_4, point 2
    avoids e_3): ray j of point i is +-P_i g_ij / ||P_i g_ij|| for the seeded Gaussian g_ij of
    (seed, i), P_i the projection off point i's line, its sign chosen so that it does not climb
    the margin (ray . P_i(-grad) >= 0); the last ray is the unit downhill direction
    P_i(-grad) / ||P_i(-grad)||, here P_i w / ||P_i w|| (the margin of class 0 is -f).
    starts = 0 keeps the downhill ray only."""
    w = torch.tensor([1.0, 2.0, -2.0, 0.5, 3.0], dtype=F64)
    model = affine(w, -1.5)
    x = torch.zeros(3, 5, dtype=F64)
    lines = torch.zeros(3, 5, 1, dtype=F64)
    lines[0, 4, 0] = lines[1, 0, 0] = lines[2, 3, 0] = 1
    basis = DenseBasis(lines)
    pgd = GreedyProjectedPGD(model, mode="off", step_size=0.05, max_steps=10, seed=7)
    finder = MinimalDistanceSearch(pgd, SearchBudget(starts=starts))
    work = torch.tensor([0, 2])
    project = _row_projection("off", basis)
    rays = finder._rays(x, work, basis, torch.zeros(3, dtype=torch.long), "random starts", 4, project)
    assert rays.shape == (2, starts + 1, 5)
    downhill = w.expand(2, 5).clone()
    downhill[0, 4] = downhill[1, 3] = 0
    downhill /= downhill.norm(dim=1, keepdim=True)
    np.testing.assert_allclose(rays[:, -1].numpy(), downhill.numpy(), rtol=1e-14)
    if starts:
        gaussian = gaussian_directions([0, 2], starts, 5, 7, dtype=F64)
        gaussian[0, :, 4] = gaussian[1, :, 3] = 0
        unit = gaussian / gaussian.norm(dim=-1, keepdim=True)
        sign = torch.where((unit * downhill[:, None]).sum(-1) < 0, -1.0, 1.0).to(F64)
        np.testing.assert_allclose(rays[:, :-1].numpy(), (unit * sign[..., None]).numpy(), rtol=1e-12, atol=1e-15)
        assert bool(((rays[:, :-1] * downhill[:, None]).sum(-1) >= 0).all()) and bool((sign < 0).any())
    np.testing.assert_allclose(rays.norm(dim=-1).numpy(), 1.0, rtol=1e-14)


def test_random_start_rays_without_a_gradient_are_not_flipped():
    """Between two planes of a ReLU net the gradient is 0: the downhill ray is the zero vector
    (not NaN) and the random rays keep their seeded signs."""
    model = two_planes(4, 0.3, 2.0)
    x = torch.zeros(1, 4, dtype=F64)
    pgd = GreedyProjectedPGD(model, mode="free", step_size=0.05, max_steps=10, seed=1)
    rays = MinimalDistanceSearch(pgd, SearchBudget(starts=5))._rays(
        x, torch.tensor([0]), None, torch.zeros(1, dtype=torch.long), "random starts", 4, None)
    gaussian = gaussian_directions([0], 5, 4, 1, dtype=F64)
    np.testing.assert_allclose(rays[0, :5].numpy(), (gaussian / gaussian.norm(dim=-1, keepdim=True))[0].numpy(),
                               rtol=1e-14)
    assert rays[0, 5].tolist() == [0.0] * 4


def test_best_of_restarts_finds_the_nearer_of_two_planes_without_a_gradient():
    """Two planes x_0 = 0.31 and x_1 = 2.01 in R^4 with zero gradient between them: the greedy
    walk cannot move (greedy distance NaN); the random starts cross either plane, the walk
    slides each to its plane's foot, and the best of them is the nearer plane: 0.31 - x_0."""
    model = two_planes(4, 0.3, 2.0)
    x = torch.tensor([[0.0, 0.0, 0.0, 0.0], [0.1, 0.5, -0.3, 0.2]], dtype=F64)
    brackets = search(model, "free", x, budget=SearchBudget(starts=8, walk_rounds=10, bisect_steps=40, certify=False),
                      reach=3.0)
    assert np.isnan(brackets.greedy_upper).all()
    assert brackets.search == "random starts"
    np.testing.assert_allclose(brackets.upper, [0.31, 0.21], rtol=1e-6)
    np.testing.assert_allclose(brackets.delta[:, 1:].numpy(), 0.0, atol=1e-5)
    assert_adversarial(model, x, brackets)


def test_without_the_walk_the_upper_end_is_the_best_rays_crossing():
    """Two planes x_0 = 0.31 and x_1 = 2.01 in R^2 (zero gradient between them: no greedy walk),
    exhaustive rays at angles 2 pi j / 5 + 0 and no walk: ray j = (cos a_j, sin a_j) crosses at
    t_j = min(0.31 / cos a_j (cos > 0), 2.01 / sin a_j (sin > 0)); the upper end is min_j t_j
    (bisected 30 times) and delta is that t times its ray."""
    model = two_planes(2, 0.3, 2.0)
    budget = SearchBudget(directions=5, march_steps=64, walk_rounds=0, bisect_steps=30, certify=False)
    brackets = search(model, "free", torch.zeros(1, 2, dtype=F64), budget=budget, max_steps=1, reach=3.0)
    crossings = []
    for j in range(5):
        a = 2 * math.pi * j / 5
        options = [0.31 / math.cos(a)] if math.cos(a) > 1e-12 else []
        options += [2.01 / math.sin(a)] if math.sin(a) > 1e-12 else []
        crossings.append(min(options, default=math.inf))
    best = int(np.argmin(crossings))
    assert crossings[best] == pytest.approx(0.31)  # the ray at angle 0
    assert brackets.upper[0] == pytest.approx(crossings[best], abs=3.0 / 64 / 2**30 + 1e-12)
    a = 2 * math.pi * best / 5
    np.testing.assert_allclose(brackets.delta[0].numpy(), brackets.upper[0] * np.array([math.cos(a), math.sin(a)]),
                               atol=1e-12)


def test_exhaustive_1d_search_marches_finely_enough_to_find_a_thin_sliver():
    """R^1 with class 1 only on |x - 0.513| < 0.01 and the greedy walk cut short (one step):
    the two rays (+1, -1) of a 1-D subspace are marched with march_steps x directions / 2 =
    4 x 32 = 128 probes over the reach 2, spacing 0.016 < the sliver's width 0.02, so the
    first change at x = 0.503 is found: d = 0.503 (bracket closed by bisection to 1e-6). With
    directions = 2 the march has only its 4 probes (0.5, 1, 1.5, 2): they step over the sliver."""
    model = sliver()
    x = torch.zeros(1, 1, dtype=F64)
    budget = SearchBudget(directions=64, march_steps=4, walk_rounds=2, bisect_steps=30, certify=False)
    brackets = search(model, "free", x, budget=budget, step=0.1, max_steps=1, reach=2.0)
    assert brackets.search == "exhaustive" and brackets.subspace_dim == 1
    assert np.isnan(brackets.greedy_upper).all()
    assert brackets.upper[0] == pytest.approx(0.503, abs=1e-6) and brackets.upper[0] >= 0.503
    assert brackets.adversarial_label.tolist() == [1]
    coarse = search(model, "free", x, budget=SearchBudget(directions=2, march_steps=4, walk_rounds=2, certify=False),
                    step=0.1, max_steps=1, reach=2.0)
    assert np.isnan(coarse.upper).all() and coarse.status.tolist() == [UNKNOWN]


def test_a_one_dimensional_subspace_of_a_larger_space_gets_the_fine_march():
    """The sliver along x_0 in R^3, searched on the line e_0 (mode on, dimension 1): its two rays
    get march_steps x directions / 2 = 128 probes like R^1's, whatever the ambient dimension."""
    line = torch.zeros(3, 1, dtype=F64)
    line[0, 0] = 1.0
    budget = SearchBudget(directions=64, march_steps=4, walk_rounds=0, bisect_steps=30, certify=False)
    brackets = search(sliver(n=3), "on", torch.zeros(1, 3, dtype=F64), line, budget=budget, step=0.1, max_steps=1,
                      reach=2.0)
    assert brackets.search == "exhaustive" and brackets.upper[0] == pytest.approx(0.503, abs=1e-6)
    assert type(brackets.forward_evaluations) is int


def test_later_passes_march_the_shortened_bracket_again():
    """R^1, class 1 on the sliver |x - 0.513| < 0.01 and beyond x = 1.2068 (class-1 logit
    0.01 - |x - 0.513| + 100 relu(x - 1.2)), reach 2, 80 probes per march, no walk. Pass 1
    marches [0, 2] (spacing 0.025: probes 0.5 and 0.525 straddle the sliver) and finds 1.2068;
    pass 2 marches [0, 1.2068] (spacing 0.0151 < 0.02) and finds the sliver: d = 0.503."""
    first, second = nn.Linear(1, 3).double(), nn.Linear(3, 2).double()
    with torch.no_grad():
        first.weight.copy_(torch.tensor([[1.0], [-1.0], [1.0]], dtype=F64))
        first.bias.copy_(torch.tensor([-0.513, 0.513, -1.2], dtype=F64))
        second.weight.copy_(torch.tensor([[0.0, 0.0, 0.0], [-1.0, -1.0, 100.0]], dtype=F64))
        second.bias.copy_(torch.tensor([0.0, 0.01], dtype=F64))
    model = nn.Sequential(first, nn.ReLU(), second).eval().requires_grad_(False)
    x = torch.zeros(1, 1, dtype=F64)
    budget = SearchBudget(directions=2, march_steps=80, walk_rounds=0, bisect_steps=30, certify=False)
    brackets = search(model, "free", x, budget=budget, step=0.1, max_steps=1, reach=2.0)
    assert brackets.upper[0] == pytest.approx(0.503, abs=1e-6)


@pytest.mark.parametrize("mode", ["on", "off"])
def test_rays_and_walk_stay_in_each_points_subspace(mode):
    """Forced ray searches (tolerance 0, no certified bounds) in per-point subspaces: mode on with
    a plane per point in R^3 (exhaustive), mode off of a line per point in R^5 (dimension 4,
    random starts). The rays, their walk and the result stay in each point's subspace, and the
    distance is the closed form |f| / ||P_i w|| (a walk in the free space would end below it)."""
    budget = SearchBudget(directions=24, starts=4, walk_rounds=5, certify=False, tolerance=0.0)
    if mode == "on":
        w = torch.tensor(W3, dtype=F64)
        x = X3
        bases = torch.zeros(2, 3, 2, dtype=F64)
        bases[0, 0, 0] = bases[0, 1, 1] = 1.0  # span(e_0, e_1)
        bases[1, 1, 0] = 1.0
        bases[1, 0, 1] = bases[1, 2, 1] = 1 / math.sqrt(2)  # span(e_1, (e_0 + e_2)/sqrt 2)
        projected = torch.einsum("ink,ik->in", bases, torch.einsum("ink,n->ik", bases, w))
    else:
        w = torch.tensor([1.0, 2.0, -2.0, 0.5, 3.0], dtype=F64)
        x = torch.cat([X3, torch.zeros(2, 2, dtype=F64)], dim=1)
        bases = torch.zeros(2, 5, 1, dtype=F64)
        bases[0, 4, 0] = 1.0  # avoid e_4
        bases[1, :, 0] = w / w.norm() * 0.6 + torch.tensor([0.0, 0.0, 0.0, 0.8, 0.0], dtype=F64)
        bases[1, :, 0] /= bases[1, :, 0].norm()
        line = bases[:, :, 0]
        projected = w - (line @ w)[:, None] * line
    model = affine(w, B3)
    f = x @ w + B3
    brackets = search(model, mode, x, bases, budget=budget)
    assert brackets.search == ("exhaustive" if mode == "on" else "random starts")
    np.testing.assert_allclose(brackets.upper, (f.abs() / projected.norm(dim=1)).numpy(), rtol=1e-6)
    inside = torch.einsum("ink,ik->in", bases, torch.einsum("ink,in->ik", bases, brackets.delta))
    outside = brackets.delta - inside if mode == "on" else inside
    np.testing.assert_allclose(outside.numpy(), 0.0, atol=1e-9)
    assert_adversarial(model, x, brackets)


def test_a_ball_is_searched_to_its_radial_distance_without_certified_bounds():
    """Ball of radius 1 at c = (0.5, 0, ...): from a point at distance r from c the distance is
    |r - R| (outside: towards c; inside: away from it). The ball is not a network the bounds
    cover, so every lower end is 0 and the certificate says why. In R^2 (exhaustive) and R^5
    (random starts)."""
    for n, kind in ((2, "exhaustive"), (5, "random starts")):
        centre = torch.zeros(n, dtype=F64)
        centre[0] = 0.5
        model = Ball(centre, 1.0)
        x = torch.zeros(3, n, dtype=F64)
        x[0, 0], x[1, 1], x[2, 0] = 3.0, 0.5, 0.3  # r = 2.5, sqrt(0.5), 0.2
        r = (x - centre).norm(dim=1)
        brackets = search(model, "free", x, budget=SearchBudget(directions=16, starts=2, walk_rounds=5))
        assert brackets.search == kind
        np.testing.assert_allclose(brackets.upper, (r - 1).abs().numpy(), rtol=1e-6)
        assert np.all(brackets.lower == 0)
        assert brackets.certificate.startswith("no certified bounds for this model: certified bounds support")
        assert brackets.label.tolist() == [0, 1, 1] and brackets.adversarial_label.tolist() == [1, 0, 0]
        assert_adversarial(model, x, brackets)


# --------------------------------------------------------------------------- devices


def test_work_tensors_follow_the_points_device_under_a_meta_default_device():
    """With `meta` as the default device, a tensor made without an explicit device has no data,
    so any such tensor among the search's own work tensors fails, as it would on a second device.
    The boundary walk (ball, x = (2, 0): d* = 1) and a random-starts search in R^5 (plane,
    |f| / 3) run with every work tensor on the points' CPU. Not run here: the exhaustive path
    (its sphere directions are made on the default device and then moved, which works for CUDA
    but cannot copy out of meta) and the certified bounds (they index with `torch.arange`
    tensors made on the default device: accepted on CUDA, silently wrong numbers under meta)."""
    model = Ball(torch.zeros(2, dtype=F64), 1.0)
    x = torch.tensor([[2.0, 0.0]], dtype=F64)
    start = torch.tensor([[0.5 - 2.0, math.sqrt(3) / 2]], dtype=F64) * (1 - 1e-9)
    label = torch.zeros(1, dtype=torch.long)
    plane = affine([1.0, 2.0, -2.0, 0.0, 0.0], B3)
    x5 = torch.cat([X3, torch.zeros(2, 2, dtype=F64)], dim=1)
    pgd = GreedyProjectedPGD(plane, mode="free", step_size=0.2, max_steps=20, normal_rounds=1)
    with torch.device("meta"):
        delta, _, _ = walk_to_nearest(model, x, start, label, None, 5, 30)
        brackets = MinimalDistanceSearch(pgd, SearchBudget(starts=1, walk_rounds=1, bisect_steps=20, certify=False,
                                                           tolerance=0.0))(x5)
    assert delta.device.type == "cpu" and float(delta.norm()) == pytest.approx(1.0, abs=1e-8)
    np.testing.assert_allclose(brackets.upper, (F3.abs() / 3).numpy(), rtol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_search_on_cuda_matches_the_closed_form():
    """The same brackets on a CUDA device (the per-point work tensors must follow the points):
    the plane in every subspace kind the search has (free exhaustive, a per-point line, random
    starts in R^5), and a walk, against the closed forms."""
    device = torch.device("cuda")
    model = affine(W3, B3).to(device)
    x = X3.to(device)
    free = search(model, "free", x, budget=SearchBudget(directions=16, certify=False, tolerance=0.0))
    np.testing.assert_allclose(free.upper, (F3.abs() / 3).numpy(), rtol=1e-6)
    lines = torch.tensor([[[1.0], [0.0], [0.0]], [[0.0], [1.0], [0.0]]], dtype=F64, device=device)
    on = search(model, "on", x, lines, budget=SearchBudget(directions=16, tolerance=0.0))
    np.testing.assert_allclose(on.upper, [1.6, 1.4], rtol=1e-6)
    w5 = torch.tensor([1.0, 2.0, -2.0, 0.0, 0.0], dtype=F64)
    wide = search(affine(w5, B3).to(device), "free", torch.cat([X3, torch.zeros(2, 2, dtype=F64)], 1).to(device),
                  budget=SearchBudget(starts=3, certify=False, tolerance=0.0))
    np.testing.assert_allclose(wide.upper, (F3.abs() / 3).numpy(), rtol=1e-6)
    ball = Ball(torch.zeros(2, dtype=F64, device=device), 1.0)
    start = (torch.tensor([[0.5, math.sqrt(3) / 2]], dtype=F64) * (1 - 1e-9) - torch.tensor([[2.0, 0.0]], dtype=F64))
    delta, _, _ = walk_to_nearest(ball, torch.tensor([[2.0, 0.0]], dtype=F64, device=device), start.to(device),
                                  torch.zeros(1, dtype=torch.long, device=device), None, 5, 30)
    assert float(delta.norm()) == pytest.approx(1.0, abs=1e-8)
