"""Closed forms for the certified bounds (simulator/attacks/certify.py, linear_bounds.py).

Every test here checks numbers, each against a closed form or an independent second method:

* affine networks, where every bound is exact: the certified radius is |f_y - f_j| / ||A^T (w_y - w_j)||
  for the map A of the searched subspace (I, an orthonormal B, or I - B B^T), per point;
* hand-set one-hidden-layer ReLU networks whose IBP and CROWN bounds are worked out by hand;
* a plain numpy re-implementation of IBP and CROWN from the papers' formulas (explicit per-point
  loops, CROWN's ReLU lines written case by case) for ReLU networks of depth 1 to 3 and a tanh
  network of depth 3, over a ball, a box and their intersection;
* the activations' lines: exact offsets (a dense grid), the chord-or-tangent rule at the
  midpoint, the closed forms of tanh, softplus and GELU and their critical points;
* the exact minimal distance of a one-hidden-layer ReLU network in a line or a plane, found by
  enumerating its activation regions (the nearest point of a polygon is the projection onto an
  edge or a vertex), which must lie between the certified radius and a ray-search attack;
* the bisection on the radius, on synthetic bound functions whose root is known (the grid point
  below it for plain bisection; a plain-Python Illinois false position otherwise), and the
  branch-and-bound ray search against a plain-Python recomputation of its probes and halvings;
* sampling: no sampled point of a certified ball changes the label.

The whole file runs in a few seconds (docs/mutation/certify_bounds.md lists the mutants it
kills and those left).
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from torch import nn

from simulator.attacks import certify
from simulator.attacks import linear_bounds as lb
from simulator.attacks.certify import certified_radius, margin_lower_bound
from simulator.attacks.linear_bounds import (
    Ball,
    Box,
    FirstLayer,
    Intersection,
    Network,
    activation_interval,
    crown_margins,
    exclude_own_class,
    interval_margins,
    linear_relaxation,
    margin_coefficients,
    network_layers,
)
from simulator.attacks.operators import CoordinateSubset, DenseBasis, FactoredBasis

F64 = torch.float64


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny tensors: one thread is fastest and immune to a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# --------------------------------------------------------------------------- helpers


def linear(weight, bias=None) -> nn.Linear:
    weight = torch.as_tensor(weight, dtype=F64)
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=bias is not None).double()
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(torch.as_tensor(bias, dtype=F64))
    return layer.requires_grad_(False)


def mlp(n: int, hidden: list[int], classes: int, seed: int, activation=nn.ReLU) -> nn.Sequential:
    torch.manual_seed(seed)
    layers, width = [], n
    for out in hidden:
        layers += [nn.Linear(width, out), activation()]
        width = out
    return nn.Sequential(*layers, nn.Linear(width, classes)).double().requires_grad_(False)


def orthonormal(count: int, n: int, k: int, seed: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.linalg.qr(torch.randn(count, n, k, generator=generator, dtype=F64)).Q


def first_layer(model: nn.Sequential, x: torch.Tensor, maps: torch.Tensor | None = None) -> FirstLayer:
    """The first layer composed with x + A z by hand: weight W A (M, h, d), bias W x + b."""
    weight, bias = model[0].weight, model[0].bias
    composed = weight.expand(len(x), -1, -1) if maps is None else torch.einsum("hn,pnd->phd", weight, maps)
    return FirstLayer(composed.clone(), x @ weight.T + bias)


def affine_radius(head: nn.Linear, x: torch.Tensor, maps: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """Closed form for an affine classifier: min_j (f_y - f_j)(x) / ||A^T (w_y - w_j)||, by a loop."""
    out = []
    for p in range(len(x)):
        logits = head(x[p])
        y = int(label[p])
        best = math.inf
        for j in range(head.out_features):
            if j != y:
                slope = float((maps[p].T @ (head.weight[y] - head.weight[j])).norm())
                best = min(best, float(logits[y] - logits[j]) / slope)
        out.append(best)
    return torch.tensor(out, dtype=F64)


def region_interval_np(region, a: np.ndarray, c: np.ndarray, p: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact range of a z + c (rows) over point p's ball or box (numpy)."""
    if isinstance(region, Ball):
        spread = float(region.radius[p]) * np.linalg.norm(a, axis=1)
        return c - spread, c + spread
    if isinstance(region, Box):
        m, h = region.center[p].numpy(), region.half[p].numpy()
        middle = c + a @ m
        return middle - np.abs(a) @ h, middle + np.abs(a) @ h
    (la, ua), (lb_, ub) = region_interval_np(region.first, a, c, p), region_interval_np(region.second, a, c, p)
    low, high = np.maximum(la, lb_), np.minimum(ua, ub)
    return np.minimum(low, high), np.maximum(low, high)


def region_minimum_np(region, g: np.ndarray, c: float, p: int) -> float:
    """min over point p's region of g . z + c: c - r ||g|| (ball), c + g.m - |g|.h (box)."""
    if isinstance(region, Ball):
        return c - float(region.radius[p]) * float(np.linalg.norm(g))
    if isinstance(region, Box):
        return c + float(g @ region.center[p].numpy()) - float(np.abs(g) @ region.half[p].numpy())
    return max(region_minimum_np(region.first, g, c, p), region_minimum_np(region.second, g, c, p))


def relu_lines_np(low: np.ndarray, high: np.ndarray):
    """CROWN's ReLU lines, case by case (Zhang et al. 2018 with the adaptive lower slope):
    dead (u <= 0): 0 <= relu <= 0; alive (l >= 0): z <= relu <= z; unstable: the chord
    u (z - l) / (u - l) above and, below, z where the midpoint is positive, 0 where negative,
    the chord's slope (through 0) where it is exactly 0."""
    slopes_lo, offsets_lo = np.zeros_like(low), np.zeros_like(low)
    slopes_up, offsets_up = np.zeros_like(low), np.zeros_like(low)
    for i, (l, u) in enumerate(zip(low, high)):
        if u <= 0:
            continue
        if l >= 0:
            slopes_lo[i] = slopes_up[i] = 1.0
            continue
        k = u / (u - l)
        slopes_up[i], offsets_up[i] = k, -k * l
        middle = (l + u) / 2
        slopes_lo[i] = 1.0 if middle > 0 else (0.0 if middle < 0 else k)
    return slopes_lo, offsets_lo, slopes_up, offsets_up


def reference_bounds(model: nn.Sequential, first: FirstLayer, label: torch.Tensor, region, method: str,
                     slopes: bool = False):
    """(M, C) IBP or CROWN lower bounds on f_y - f_j, from the formulas, one point at a time in
    numpy (every intermediate CROWN bound intersected with IBP, the margins the larger of CROWN
    and IBP). ReLU networks use the case-by-case lines above; tanh networks take the lines from
    `linear_relaxation` (checked on their own below) and tanh's monotone image for IBP.
    slopes=True: also CROWN's coefficients in z of the margins (M, C, d)."""
    relu = isinstance(model[1], nn.ReLU)
    act = (lambda v: np.maximum(v, 0)) if relu else np.tanh

    def lines_np(low, high):
        if relu:
            return relu_lines_np(low, high)
        lines = linear_relaxation(model[1], torch.from_numpy(low), torch.from_numpy(high))
        return (lines.lower_slope.numpy(), lines.lower_offset.numpy(), lines.upper_slope.numpy(),
                lines.upper_offset.numpy())

    linears = [m for m in model if isinstance(m, nn.Linear)]
    weights = [m.weight.numpy() for m in linears]
    biases = [m.bias.numpy() for m in linears]
    depth = len(linears) - 1
    out = np.zeros((len(label), weights[-1].shape[0]))
    coefficients_out = np.zeros((len(label), weights[-1].shape[0], first.weight.shape[2]))
    for p in range(len(label)):
        a0, c0 = first.weight[p].numpy(), first.bias[p].numpy()
        y = int(label[p])
        head_w = weights[-1][y][None] - weights[-1]
        head_b = biases[-1][y] - biases[-1]
        low, high = region_interval_np(region, a0, c0, p)
        lines = []

        def backward(coefficients, constant, lines=lines, a0=a0, c0=c0):
            """A lower bound g . z + c of coefficients . relu(pre_top) + constant (top = len(lines) - 1)."""
            coefficients, constant = coefficients.copy(), float(constant)
            for level in reversed(range(len(lines))):
                s_lo, o_lo, s_up, o_up = lines[level]
                positive = coefficients > 0
                constant += float(np.where(positive, coefficients * o_lo, coefficients * o_up).sum())
                coefficients = np.where(positive, coefficients * s_lo, coefficients * s_up)
                if level > 0:
                    constant += float(coefficients @ biases[level])
                    coefficients = coefficients @ weights[level]
            return coefficients @ a0, constant + float(coefficients @ c0)

        def ibp_step(w, b, low, high):
            a_lo, a_hi = act(low), act(high)
            center, half = (a_lo + a_hi) / 2, (a_hi - a_lo) / 2
            return w @ center + b - np.abs(w) @ half, w @ center + b + np.abs(w) @ half

        for level in range(1, depth):
            interval_low, interval_high = ibp_step(weights[level], biases[level], low, high)
            if method == "ibp":
                low, high = interval_low, interval_high
                continue
            lines.append(lines_np(low, high))
            crown_low = np.array([region_minimum_np(region, *backward(row, b), p)
                                  for row, b in zip(weights[level], biases[level])])
            crown_high = -np.array([region_minimum_np(region, *backward(-row, -b), p)
                                    for row, b in zip(weights[level], biases[level])])
            low, high = np.maximum(crown_low, interval_low), np.minimum(crown_high, interval_high)
            low, high = np.minimum(low, high), np.maximum(low, high)
        a_lo, a_hi = act(low), act(high)
        center, half = (a_lo + a_hi) / 2, (a_hi - a_lo) / 2
        ibp = head_w @ center + head_b - np.abs(head_w) @ half
        if method == "ibp":
            out[p] = ibp
            continue
        lines.append(lines_np(low, high))
        lines_in_z = [backward(row, b) for row, b in zip(head_w, head_b)]
        crown = np.array([region_minimum_np(region, g, c, p) for g, c in lines_in_z])
        coefficients_out[p] = np.stack([g for g, _ in lines_in_z])
        out[p] = np.maximum(crown, ibp)
    if slopes:
        return torch.from_numpy(out), torch.from_numpy(coefficients_out)
    return torch.from_numpy(out)


def exact_distance(model: nn.Sequential, x0: torch.Tensor, frame: torch.Tensor, label: int) -> float:
    """The true minimal distance from x0 to a label change within x0 + span(frame) (frame (n, d),
    d = 1 or 2, orthonormal) of a one-hidden-layer ReLU network, by enumeration: the set of
    changed labels is a union of polytopes (activation pattern s, class j: the region of s where
    f_j >= f_y, affine there), and the point of a polytope nearest to 0 is the projection onto
    one of its edge lines or a vertex, the crossing of two lines. The candidates are those points
    for every neuron line and every (s, j) margin line; the nearest one where the network's
    label really changes (within 1e-9 of the margin) is the distance."""
    weight, bias = model[0].weight, model[0].bias
    head_w, head_b = model[2].weight, model[2].bias
    a, c = weight @ frame, weight @ x0 + bias  # pre-activations c + a z
    normals, offsets = list(a), list(c)
    for pattern in itertools.product([0.0, 1.0], repeat=len(c)):
        s = torch.tensor(pattern, dtype=F64)
        for j in range(len(head_b)):
            if j != label:
                v = (head_w[label] - head_w[j]) * s
                normals.append(v @ a)
                offsets.append(v @ c + head_b[label] - head_b[j])
    normals, offsets = torch.stack(normals), torch.stack(offsets)
    keep = normals.norm(dim=1) > 1e-12
    normals, offsets = normals[keep], offsets[keep]
    candidates = [-(offsets / (normals**2).sum(1))[:, None] * normals]
    if frame.shape[1] == 2:
        i, j = torch.triu_indices(len(normals), len(normals), 1)
        pairs = torch.stack([normals[i], normals[j]], dim=1)
        solvable = torch.linalg.det(pairs).abs() > 1e-12
        candidates.append(torch.linalg.solve(pairs[solvable], -torch.stack([offsets[i], offsets[j]], 1)[solvable]))
    z = torch.cat(candidates)
    logits = model(x0 + z @ frame.T)
    own = logits[:, label].clone()
    logits[:, label] = -math.inf
    changed = logits.max(1).values >= own - 1e-9
    return float(z[changed].norm(dim=1).min()) if changed.any() else math.inf


def ray_attack(model: nn.Module, x0: torch.Tensor, frame: torch.Tensor, label: int, reach: float) -> float:
    """An upper bound: the nearest label change found on 720 rays of the plane (both signs of a
    line), each marched in 400 steps and bisected 40 times; every change found is real."""
    d = frame.shape[1]
    if d == 1:
        directions = torch.tensor([[1.0], [-1.0]], dtype=F64)
    else:
        angle = torch.arange(720, dtype=F64) * (2 * math.pi / 720)
        directions = torch.stack([angle.cos(), angle.sin()], 1)
    rays = directions @ frame.T
    radii = torch.linspace(0, reach, 401, dtype=F64)[1:]
    changed = model(x0 + radii[:, None, None] * rays[None]).argmax(-1) != label
    hit = changed.any(0)
    if not hit.any():
        return math.inf
    first = changed.to(torch.int8).argmax(0)[hit]
    rays, outer = rays[hit], radii[first]
    inner = torch.where(first > 0, radii[(first - 1).clamp(min=0)], torch.zeros_like(outer))
    for _ in range(40):
        middle = (inner + outer) / 2
        crossed = model(x0 + middle[:, None] * rays).argmax(-1) != label
        outer, inner = torch.where(crossed, middle, outer), torch.where(crossed, inner, middle)
    return float(outer.min())


# --------------------------------------------------------------------------- affine networks: exact


@pytest.mark.parametrize("subspace", ["free", "per_row", "shared", "complement", "shared_complement"])
def test_an_affine_network_is_certified_at_its_exact_distance(subspace):
    """No hidden layer: the certified radius (IBP and CROWN alike) is the closed form
    min_j (f_y - f_j) / ||A^T (w_y - w_j)|| with A = I, B (per point, or one shared (n, k)
    basis) or I - B B^T, to the bisection's max_radius / 2^steps."""
    torch.manual_seed(0)
    head = linear(torch.randn(3, 4), torch.randn(3))
    x = torch.randn(6, 4, dtype=F64)
    label = head(x).argmax(1)
    bases = orthonormal(6, 4, 2, seed=1)
    basis, maps = {
        "free": (None, torch.eye(4, dtype=F64).expand(6, -1, -1)),
        "per_row": (bases, bases),
        "shared": (bases[0], bases[0].expand(6, -1, -1)),
        "complement": (bases, torch.eye(4, dtype=F64) - bases @ bases.transpose(1, 2)),
        "shared_complement": (bases[0], (torch.eye(4, dtype=F64) - bases[0] @ bases[0].T).expand(6, -1, -1)),
    }[subspace]
    expected = affine_radius(head, x, maps, label)
    for bound in ("ibp", "crown"):
        radius = certified_radius(head, x, basis, max_radius=16.0, steps=44, complement="complement" in subspace,
                                  bound=bound)
        assert (radius <= expected).all(), bound
        assert torch.allclose(radius, expected, rtol=0, atol=16.0 / 2**44 * 1.01), (bound, radius - expected)


def test_affine_subspace_operators_give_the_closed_form_per_row():
    """A FactoredBasis (E Q_i), a CoordinateSubset (coordinates e_j, j in S_i, orthonormal as
    they are) and a non-orthonormal dense basis (same span: re-orthonormalised by QR) in float32:
    the affine closed form with each row's own subspace."""
    torch.manual_seed(2)
    head = linear(torch.randn(2, 5), torch.randn(2))
    x = torch.randn(4, 5, dtype=F64)
    label = head(x).argmax(1)
    embedding = orthonormal(1, 5, 3, seed=3)[0]
    local = orthonormal(4, 3, 2, seed=4)
    indices = torch.tensor([[0, 3], [1, 2], [4, 0], [2, 3]])
    eye = torch.eye(5, dtype=F64)
    skew = torch.randn(4, 5, 2, dtype=F64) @ torch.tensor([[2.0, 0.5], [0.0, 0.25]], dtype=F64)
    cases = [
        (FactoredBasis(embedding, local), embedding @ local),
        (CoordinateSubset(indices, 5, dtype=torch.float32), eye[:, indices].permute(1, 0, 2)),
        (skew.float(), torch.linalg.qr(skew.float().double()).Q),
    ]
    for basis, maps in cases:
        expected = affine_radius(head, x, maps, label)
        radius = certified_radius(head, x, basis, max_radius=16.0, steps=44)
        assert torch.allclose(radius, expected, rtol=0, atol=2e-12), (type(basis), radius - expected)
        complement = certified_radius(head, x, basis, max_radius=16.0, steps=44, complement=True)
        expected = affine_radius(head, x, eye - maps @ maps.transpose(1, 2), label)
        assert torch.allclose(complement, expected, rtol=0, atol=2e-12), type(basis)


def test_affine_label_max_radius_and_steps():
    """The given label (not the prediction) is certified: 0 for the wrong one (the point
    itself is not certified); max_radius caps the radius (the whole ball certified); steps sets
    the bisection's resolution: radius = floor(d 2^s / R) R / 2^s, the grid point below d."""
    head = linear([[1.0, 0.0], [0.0, 0.0]], [0.0, 0.0])  # margin of class 0: x_1, distance |x_1|
    x = torch.tensor([[0.3, 5.0], [2.5, -1.0], [-0.7, 0.0]], dtype=F64)
    label = torch.tensor([0, 0, 1])
    radius = certified_radius(head, x, label=label, max_radius=2.0, steps=10)
    assert radius[0] == math.floor(0.3 * 1024 / 2) * 2 / 1024
    assert radius[1] == 2.0
    assert radius[2] == math.floor(0.7 * 1024 / 2) * 2 / 1024
    wrong = certified_radius(head, x, label=1 - label)
    assert (wrong == 0).all()
    assert certified_radius(head, x[:1])[0] == math.floor(0.3 * 2**40 / 10) * 10 / 2**40


def test_float32_points_get_the_float64_radius_rounded_down():
    """A float32 point's radius is the float64 radius rounded to the float32 at or below it:
    margin 2 x_1, distances 0.1 and 0.25; the bisection's grid points just below them round up
    in float32 (to 0.1f and 0.25), so the result is the next float32 down."""
    weight, bias = [[1.0, 0.0], [-1.0, 0.0]], [0.0, 0.0]
    x = torch.tensor([[0.1, 0.0], [0.25, 0.0]])
    radius = certified_radius(linear(weight, bias).float(), x, max_radius=1.0, steps=50)
    exact = certified_radius(linear(weight, bias), x.double(), max_radius=1.0, steps=50)
    assert radius.dtype == torch.float32
    assert (radius.double() <= exact).all()
    assert float(exact[1]) == 0.25 - 2**-50
    assert radius[0] == np.nextafter(np.float32(0.1), np.float32(0))
    assert radius[1] == np.float32(0.25 - 2**-26)


def test_round_down_closed_forms():
    """_round_down: 0.1 and 1/3 round up in float32 (0.100000001490116, 0.333333343267), so
    the next float32 below; 0.7 rounds down (0.699999988079) and is kept; 0.5 and 0 are exact;
    float64 is unchanged."""
    values = torch.tensor([0.1, 0.5, 0.0, 1 / 3, 0.7], dtype=F64)
    down = certify._round_down(values, torch.float32)
    assert down.dtype == torch.float32
    assert down[0] == np.nextafter(np.float32(0.1), np.float32(0))
    assert down[1] == 0.5 and down[2] == 0.0
    assert down[3] == np.nextafter(np.float32(1 / 3), np.float32(0))
    assert down[4] == np.float32(0.7)
    assert torch.equal(certify._round_down(values, F64), values)


# --------------------------------------------------------------------------- hand-set ReLU networks


def hand_network() -> nn.Sequential:
    """x in R^1, hidden p1 = x, p2 = x + 10, logits (h1 - 0.4 h2 + 4.1, 0): margin of class 0
    m(x) = relu(x) - 0.4 x + 0.1 (h2 is always active near 0)."""
    return nn.Sequential(linear([[1.0], [1.0]], [0.0, 10.0]), nn.ReLU(),
                         linear([[1.0, -0.4], [0.0, 0.0]], [4.1, 0.0]))


def test_hand_network_bounds_over_the_unit_ball():
    """x0 = 0, r = 1: p1 in [-1, 1], p2 in [9, 11]. IBP: h1 in [0, 1], so m >= 0 - 4.4 + 4.1 =
    -0.3. CROWN: h1 >= the chord through 0 (midpoint 0), slope 1/2, so m >= 0.1 x + 0.1 >= 0.
    The true minimum is 0.1 (at x = 0). The margin against the own class is 0."""
    model = hand_network()
    x, label, radius = torch.zeros(1, 1, dtype=F64), torch.tensor([0]), torch.ones(1, dtype=F64)
    net = Network.from_layers(network_layers(model))
    first = first_layer(model, x)
    ibp = interval_margins(net, first, label, Ball(radius))
    crown = crown_margins(net, first, label, Ball(radius))
    assert torch.allclose(ibp, torch.tensor([[0.0, -0.3]], dtype=F64), atol=1e-12)
    assert torch.allclose(crown, torch.tensor([[0.0, 0.0]], dtype=F64), atol=1e-12)
    assert math.isclose(float(margin_lower_bound(model, x, label, radius, bound="ibp")), -0.3, abs_tol=1e-12)
    assert abs(float(margin_lower_bound(model, x, label, radius))) < 1e-12
    _, slopes = crown_margins(net, first, label, Ball(radius), slopes=True)
    assert torch.allclose(slopes, torch.tensor([[[0.0], [0.1]]], dtype=F64), atol=1e-12)  # 0.5 - 0.4


def test_hand_network_radii():
    """x0 = 0 (label 0). IBP over radius r: m >= 0 - 0.4 (10 + r) + 4.1 = 0.1 - 0.4 r, certified
    below r = 1/4. CROWN: h1 >= r/(2r) x = x/2 (midpoint 0, chord through the origin), so
    m >= 0.1 x + 0.1 >= 0.1 - 0.1 r: certified below r = 1; the IBP radius is the start.
    The true distance is infinite on the left (m = 0.1 - 1.4 x > 0) and on the right
    (m = 0.6 x + 0.1 > 0): the whole line is certified only up to CROWN's 1."""
    model = hand_network()
    x = torch.zeros(1, 1, dtype=F64)
    ibp = certified_radius(model, x, bound="ibp", max_radius=4.0, steps=40)
    assert 0.25 - 4.0 / 2**40 <= float(ibp) < 0.25
    crown = certified_radius(model, x, max_radius=4.0, max_boxes=0, rtol=1e-6)
    assert 1 - 1e-6 <= float(crown) < 1.0
    assert margin_lower_bound(model, x, torch.tensor([0]), torch.tensor([0.99], dtype=F64)) > 0
    assert margin_lower_bound(model, x, torch.tensor([0]), torch.tensor([1.01], dtype=F64)) < 0


def test_hand_network_with_a_stable_hidden_layer_is_exact():
    """x0 = 0.5, r = 0.25: p1 in [0.25, 0.75] is alive, so both lines are the identity and the
    bound is exact: m = 0.6 x + 0.1 >= 0.6 * 0.25 + 0.1 = 0.25 (CROWN and IBP: IBP gives
    0.25 - 0.4 * 10.75 + 4.1 = 0.05, the looser)."""
    model = hand_network()
    x, label = torch.full((1, 1), 0.5, dtype=F64), torch.tensor([0])
    radius = torch.full((1,), 0.25, dtype=F64)
    assert math.isclose(float(margin_lower_bound(model, x, label, radius)), 0.25, abs_tol=1e-12)
    assert math.isclose(float(margin_lower_bound(model, x, label, radius, bound="ibp")), 0.05, abs_tol=1e-12)


# --------------------------------------------------------------------------- IBP and CROWN against numpy


REFERENCE_NETS = [(3, [5], 3, 10, nn.ReLU), (3, [5, 4], 3, 11, nn.ReLU), (2, [4, 5, 4], 4, 12, nn.ReLU),
                  (2, [4, 5, 4], 3, 13, nn.Tanh)]


def regions(count: int, d: int, seed: int):
    generator = torch.Generator().manual_seed(seed)
    ball = Ball(0.2 + 0.8 * torch.rand(count, generator=generator, dtype=F64))
    box = Box(0.3 * torch.randn(count, d, generator=generator, dtype=F64),
              0.1 + 0.5 * torch.rand(count, d, generator=generator, dtype=F64))
    return {"ball": ball, "box": box, "intersection": Intersection(box, ball)}


@pytest.mark.parametrize("n, hidden, classes, seed, activation", REFERENCE_NETS)
@pytest.mark.parametrize("subspace", ["free", "on", "complement"])
def test_ibp_and_crown_match_a_numpy_reimplementation(n, hidden, classes, seed, activation, subspace):
    """Random ReLU networks of depth 1 to 3 and a tanh network of depth 3 (depth 3 takes the
    shared back-substitution through two relaxations; tanh's lower lines have nonzero offsets),
    free space / a 2-D subspace / its complement, over a ball, a box and their intersection:
    every class's IBP and CROWN bound equals the numpy re-implementation of the formulas to 1e-9;
    the own class's margin is 0 (coefficients 0), and `exclude_own_class` takes the others' min."""
    model = mlp(n, hidden, classes, seed, activation)
    x = torch.randn(3, n, generator=torch.Generator().manual_seed(seed), dtype=F64)
    label = model(x).argmax(1)
    maps = None
    if subspace != "free":
        bases = orthonormal(3, n, 1 if n == 2 else 2, seed)
        maps = bases if subspace == "on" else torch.eye(n, dtype=F64) - bases @ bases.transpose(1, 2)
    first = first_layer(model, x, maps)
    net = Network.from_layers(network_layers(model))
    for name, region in regions(3, first.weight.shape[2], seed).items():
        ibp = interval_margins(net, first, label, region)
        assert torch.allclose(ibp, reference_bounds(model, first, label, region, "ibp"), rtol=1e-9, atol=1e-9), name
        crown, slopes = crown_margins(net, first, label, region, slopes=True)
        assert torch.allclose(crown, reference_bounds(model, first, label, region, "crown"), rtol=1e-9, atol=1e-9), name
        assert torch.equal(crown, crown_margins(net, first, label, region))
        own = crown.gather(1, label[:, None])[:, 0]
        assert (own.abs() < 1e-12).all()
        assert torch.equal(exclude_own_class(crown, label),
                           crown.scatter(1, label[:, None], math.inf).min(1).values)
        assert slopes.shape == (3, classes, first.weight.shape[2])
        assert (slopes.gather(1, label[:, None, None].expand(-1, 1, slopes.shape[2])).abs() < 1e-12).all()


def test_crown_slopes_equal_the_numpy_backward_pass():
    """CROWN's coefficients in z for each class (slopes=True), on depth-1 and depth-2 networks
    over a ball and a box, equal the numpy backward pass's; the own class's are 0."""
    for hidden, seed in (([4], 20), ([4, 4], 21)):
        model = mlp(2, hidden, 3, seed=seed)
        x = torch.randn(2, 2, generator=torch.Generator().manual_seed(seed), dtype=F64)
        label = model(x).argmax(1)
        first = first_layer(model, x)
        net = Network.from_layers(network_layers(model))
        for region in (Ball(torch.tensor([0.5, 1.5], dtype=F64)),
                       Box(torch.tensor([[0.1, -0.2], [0.0, 0.3]], dtype=F64), torch.full((2, 2), 0.7, dtype=F64))):
            _, slopes = crown_margins(net, first, label, region, slopes=True)
            _, expected = reference_bounds(model, first, label, region, "crown", slopes=True)
            assert torch.allclose(slopes, expected, rtol=1e-9, atol=1e-12)


def test_depth_zero_margins_are_exact_over_a_box_and_a_ball():
    """No hidden layer: margin (w_y - w_j) . (x + z) + b_y - b_j minimised exactly: over a ball
    its value at x minus r ||w_y - w_j||, over a box its value at the centre minus
    |w_y - w_j| . half; CROWN returns the same and the slopes w_y - w_j."""
    head = linear([[1.0, 2.0], [-1.0, 0.5], [0.0, 0.0]], [0.5, 0.0, -1.0])
    net = Network.from_layers(network_layers(nn.Sequential(head)))
    x = torch.tensor([[1.0, 1.0]], dtype=F64)
    first = first_layer(nn.Sequential(head), x)
    label = torch.tensor([0])
    values = torch.tensor([3.5, -0.5, -1.0], dtype=F64)  # logits at x
    rows = torch.tensor([[0.0, 0.0], [2.0, 1.5], [1.0, 2.0]], dtype=F64)
    ball = interval_margins(net, first, label, Ball(torch.tensor([0.5], dtype=F64)))
    assert torch.allclose(ball[0], values[0] - values - 0.5 * rows.norm(dim=1), atol=1e-12)
    box = Box(torch.tensor([[0.2, -0.1]], dtype=F64), torch.tensor([[0.3, 0.1]], dtype=F64))
    center, half = torch.tensor([0.2, -0.1], dtype=F64), torch.tensor([0.3, 0.1], dtype=F64)
    expected = values[0] - values + rows @ center - rows.abs() @ half
    assert torch.allclose(interval_margins(net, first, label, box)[0], expected, atol=1e-12)
    crown, slopes = crown_margins(net, first, label, box, slopes=True)
    assert torch.allclose(crown[0], expected, atol=1e-12)
    assert torch.equal(slopes[0], rows)
    assert torch.equal(crown_margins(net, first, label, box), crown)  # slopes=False: the margins alone


# --------------------------------------------------------------------------- regions, network, head


def test_ball_box_and_intersection_closed_forms():
    """Ball: min c - r ||a||, interval bias +- r ||w_row||. Box: min c + a.m - |a|.h, interval
    bias + w m +- |w| h. Intersection: the larger minimum, the tighter interval, ordered."""
    a = torch.tensor([[[3.0, -4.0], [0.0, 1.0]]], dtype=F64)  # (1, 2, 2)
    c = torch.tensor([[1.0, 2.0]], dtype=F64)
    ball = Ball(torch.tensor([2.0], dtype=F64))
    assert torch.equal(ball.minimum(a, c), torch.tensor([[1.0 - 10.0, 2.0 - 2.0]], dtype=F64))
    box = Box(torch.tensor([[1.0, 1.0]], dtype=F64), torch.tensor([[0.5, 2.0]], dtype=F64))
    assert torch.equal(box.minimum(a, c), torch.tensor([[1.0 - 1.0 - 9.5, 2.0 + 1.0 - 2.0]], dtype=F64))
    both = Intersection(ball, box)
    assert torch.equal(both.minimum(a, c), torch.tensor([[-9.0, 1.0]], dtype=F64))
    first = FirstLayer(a, c)
    assert torch.equal(torch.stack(ball.interval(first)), torch.tensor([[[-9.0, 0.0]], [[11.0, 4.0]]], dtype=F64))
    assert torch.equal(torch.stack(box.interval(first)), torch.tensor([[[-9.5, 1.0]], [[9.5, 5.0]]], dtype=F64))
    assert torch.equal(torch.stack(both.interval(first)), torch.tensor([[[-9.0, 1.0]], [[9.5, 4.0]]], dtype=F64))
    # Disjoint intervals (round-off on a point): the ends come back ordered.
    far = Box(torch.tensor([[10.0, 0.0]], dtype=F64), torch.tensor([[0.0, 0.0]], dtype=F64))
    low, high = Intersection(ball, far).interval(first)
    assert torch.equal(low, torch.tensor([[11.0, 2.0]], dtype=F64))
    assert torch.equal(high, torch.tensor([[31.0, 2.0]], dtype=F64))
    assert torch.equal(first[torch.tensor([0])].weight, a) and torch.equal(first[0].bias, c[0])


def test_network_composes_linears_and_evaluates_logits():
    """Linear layers in a row are composed (W2 W1, W2 b1 + b2; a missing bias is 0); the
    network's logits at x0 + A z equal the model's forward pass."""
    torch.manual_seed(30)
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2),
                          nn.Linear(2, 3, bias=False)).double()
    net = Network.from_layers(network_layers(model))
    assert net.depth == 1 and len(net.linears) == 2
    assert torch.allclose(net.linears[0][0], model[1].weight @ model[0].weight)
    assert torch.allclose(net.linears[0][1], model[1].bias)
    assert torch.allclose(net.linears[1][0], model[4].weight @ model[3].weight)
    assert torch.allclose(net.linears[1][1], model[4].weight @ model[3].bias)
    assert net.linears[0][0].dtype == F64
    x = torch.randn(4, 3, dtype=F64)
    maps = orthonormal(4, 3, 2, seed=31)
    z = torch.randn(4, 2, dtype=F64)
    first = certify.subspace_first_layer(net, x, maps, complement=False)
    with torch.no_grad():
        expected = model(x + torch.einsum("pnd,pd->pn", maps, z))
    assert torch.allclose(net.logits(first, z), expected, atol=1e-12)
    no_bias = Network.from_layers([nn.Linear(2, 3, bias=False)])
    assert torch.equal(no_bias.linears[0][1], torch.zeros(3, dtype=F64))
    single = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2), nn.Linear(2, 2))  # float32
    for weight, bias in Network.from_layers(network_layers(single)).linears:
        assert weight.dtype == F64 and bias.dtype == F64


def test_network_layers_accepts_mlps_and_refuses_others():
    """A Linear first and last, activations never two in a row, only supported modules."""
    ok = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 3), nn.Linear(3, 2))
    assert [type(m) for m in network_layers(ok)] == [nn.Linear, nn.ReLU, nn.Linear, nn.Linear]
    assert len(network_layers(nn.Linear(2, 2))) == 1
    for bad in (nn.Sequential(nn.ReLU(), nn.Linear(2, 2)), nn.Sequential(nn.Linear(2, 2), nn.ReLU()),
                nn.Sequential(nn.Linear(2, 2), nn.ReLU(), nn.Tanh(), nn.Linear(2, 2))):
        with pytest.raises(ValueError, match=r"^certified bounds need a Linear layer first and last, "
                                             r"and no two activations in a row$"):
            network_layers(bad)
    with pytest.raises(TypeError, match=r"^certified bounds support Linear layers and ReLU/tanh/softplus/GELU "
                                        r"activations, not Sigmoid$"):
        network_layers(nn.Sequential(nn.Linear(2, 2), nn.Sigmoid(), nn.Linear(2, 2)))


def test_margin_coefficients_and_exclude_own_class():
    """The head folded into f_y - f_j: rows w_y - w_j and biases b_y - b_j; the smallest margin
    over j != y."""
    net = Network([(torch.eye(2, dtype=F64), torch.zeros(2, dtype=F64)),
                   (torch.tensor([[1.0, 2.0], [3.0, 5.0], [0.0, -1.0]], dtype=F64),
                    torch.tensor([0.5, -0.5, 2.0], dtype=F64))], [nn.ReLU()])
    weights, biases = margin_coefficients(net, torch.tensor([1, 2]))
    assert torch.equal(weights[0], torch.tensor([[2.0, 3.0], [0.0, 0.0], [3.0, 6.0]], dtype=F64))
    assert torch.equal(biases[1], torch.tensor([1.5, 2.5, 0.0], dtype=F64))
    margins = torch.tensor([[5.0, -1.0, 2.0], [0.5, 3.0, -7.0]], dtype=F64)
    assert torch.equal(exclude_own_class(margins, torch.tensor([1, 2])), torch.tensor([2.0, 0.5], dtype=F64))


def test_shared_and_batched_products():
    """_shared_matmul: matrix @ batch[p] for every p; _batched_dot: coefficients[p] @ vectors[p]."""
    generator = torch.Generator().manual_seed(40)
    matrix = torch.randn(3, 4, generator=generator, dtype=F64)
    batch = torch.randn(5, 4, 2, generator=generator, dtype=F64)
    assert torch.allclose(lb._shared_matmul(matrix, batch), torch.stack([matrix @ b for b in batch]))
    coefficients = torch.randn(5, 3, 4, generator=generator, dtype=F64)
    vectors = torch.randn(5, 4, generator=generator, dtype=F64)
    expected = torch.stack([c @ v for c, v in zip(coefficients, vectors)])
    assert torch.allclose(lb._batched_dot(coefficients, vectors), expected)


# --------------------------------------------------------------------------- activations


def test_relu_lines_case_by_case():
    """ReLU: dead -> 0, alive -> identity, unstable -> chord u (z - l) / (u - l) above and z / 0
    below by the midpoint's sign (the chord through 0 at midpoint exactly 0); the offsets are
    exact (no slack), and a point interval gets the derivative there."""
    lower = torch.tensor([-3.0, 1.0, -1.0, -3.0, -2.0, 2.0, -2.0, 0.0], dtype=F64)
    upper = torch.tensor([-1.0, 2.0, 3.0, 1.0, 2.0, 2.0, -2.0, 4.0], dtype=F64)
    lines = linear_relaxation(nn.ReLU(), lower, upper)
    assert torch.equal(lines.upper_slope, torch.tensor([0, 1, 0.75, 0.25, 0.5, 1, 0, 1], dtype=F64))
    assert torch.equal(lines.upper_offset, torch.tensor([0, 0, 0.75, 0.75, 1.0, 0, 0, 0], dtype=F64))
    assert torch.equal(lines.lower_slope, torch.tensor([0, 1, 1, 0, 0.5, 1, 0, 1], dtype=F64))
    assert torch.equal(lines.lower_offset, torch.zeros(8, dtype=F64))


SMOOTH = [nn.Tanh(), nn.Softplus(), nn.Softplus(beta=2.0, threshold=5.0), nn.GELU()]


@pytest.mark.parametrize("activation", SMOOTH, ids=["tanh", "softplus", "softplus_b2_t5", "gelu"])
def test_smooth_lines_are_tight_and_chosen_by_the_midpoint(activation):
    """For each interval, the offsets are the exact minimum and maximum of act(z) - k z over it
    (a 20001-point grid, within its resolution plus the documented slack), and each side's line
    is whichever of the chord and the midpoint tangent is closer to act at the midpoint."""
    lower = torch.tensor([-6.0, -3.0, -1.0, -0.5, 0.2, 1.0, -2.5, -0.9, 4.0], dtype=F64)
    upper = torch.tensor([6.0, -1.0, 2.0, 0.0, 0.3, 5.0, 0.5, -0.6, 8.0], dtype=F64)
    lines = linear_relaxation(activation, lower, upper)
    profile = lb._profile(activation)
    grid = lower + (upper - lower) * torch.linspace(0, 1, 20001, dtype=F64)[:, None]
    smooth = profile.value(grid)
    torch_value = activation(grid)
    width = upper - lower
    # The grid's resolution, plus softplus's documented widening e^(-threshold) / beta.
    _, extra = profile.critical_points(torch.full_like(lower, 0.5), lower, upper)
    tol = 1e-7 * (1 + width) ** 2 + extra
    for slope, offset, side in ((lines.lower_slope, lines.lower_offset, "low"),
                                (lines.upper_slope, lines.upper_offset, "high")):
        gap = smooth - slope * grid - offset
        line = slope * grid + offset
        if side == "low":
            assert (line <= torch_value + 1e-12).all() and (gap.amin(0) >= -1e-12).all()
            assert (gap.amin(0) <= tol).all(), gap.amin(0)
        else:
            assert (line >= torch_value - 1e-12).all() and (gap.amax(0) <= 1e-12).all()
            assert (gap.amax(0) >= -tol).all(), gap.amax(0)
    middle = (lower + upper) / 2
    tangent = profile.derivative(middle)
    chord = (profile.value(upper) - profile.value(lower)) / width
    for slope, offset, pick in ((lines.lower_slope, lines.lower_offset, torch.maximum),
                                (lines.upper_slope, lines.upper_offset, torch.minimum)):
        extreme = torch.amin if pick is torch.maximum else torch.amax
        at_middle = []
        for k in (tangent, chord):
            values = profile.value(grid) - k * grid
            at_middle.append(k * middle + extreme(values, 0))
        best = pick(*at_middle)
        assert torch.allclose(slope * middle + offset, best, atol=tol.max().item())
        uses_tangent = (at_middle[0] - at_middle[1]).abs() > 1e-6
        chosen = torch.where(at_middle[0] == best, tangent, chord)
        assert torch.allclose(slope[uses_tangent], chosen[uses_tangent], atol=1e-12)


def test_point_intervals_get_the_tangent_line():
    """l = u: both lines are the tangent at that point, offset act(l) - act'(l) l (plus the slack)."""
    point = torch.tensor([-1.0, 0.0, 2.0], dtype=F64)
    for activation in (nn.Tanh(), nn.GELU(), nn.Softplus()):
        lines = linear_relaxation(activation, point, point.clone())
        profile = lb._profile(activation)
        slope = profile.derivative(point)
        assert torch.equal(lines.lower_slope, slope) and torch.equal(lines.upper_slope, slope)
        offset = profile.value(point) - slope * point
        assert torch.allclose(lines.lower_offset, offset, atol=1e-10) and (lines.lower_offset <= offset).all()
        assert torch.allclose(lines.upper_offset, offset, atol=1e-10) and (lines.upper_offset >= offset).all()


def test_narrow_intervals_switch_from_the_chord_to_the_tangent_at_1e_12_relative():
    """An interval no wider than 1e-12 (1 + |midpoint|) uses the midpoint tangent as its chord
    (both lines get the derivative's slope); a wider one the difference quotient. At midpoint 1
    the switch is at width 2e-12: 1.5e-12 is narrow, 2.5e-12 wide; at midpoint 0 it is at 1e-12,
    and exactly 1e-12 (2 x fl(5e-13) = fl(1e-12)) still counts as narrow."""
    cases = [(1.0, 1.5e-12, True), (1.0, 2.5e-12, False), (0.0, 0.9e-12, True), (0.0, 1e-12, True),
             (0.0, 1.5e-12, False)]
    for activation in (nn.Softplus(), nn.Tanh()):
        profile = lb._profile(activation)
        for middle, width, narrow in cases:
            lower = torch.tensor([middle - width / 2], dtype=F64)
            upper = torch.tensor([middle + width / 2], dtype=F64)
            lines = linear_relaxation(activation, lower, upper)
            slope = profile.derivative((lower + upper) / 2) if narrow else \
                (profile.value(upper) - profile.value(lower)) / (upper - lower)
            assert torch.equal(lines.lower_slope, slope) and torch.equal(lines.upper_slope, slope), (activation, width)


def test_profiles_closed_forms():
    """tanh' = 1 - tanh^2 and its critical points +-atanh(sqrt(1 - k)); softplus = log(1 + e^(b z))
    / b, softplus' = sigmoid(b z), critical point logit(k) / b, slack e^(-threshold) / b; GELU =
    z Phi(z), GELU' = Phi + z phi, critical points bracketing GELU'(z) = k; the lines' slack
    1e-12 (1 + |l| + |u|) for smooth activations and none for ReLU."""
    z = torch.tensor([-2.0, -0.5, 0.0, 0.7, 3.0], dtype=F64)
    tanh, soft, gelu = lb._Tanh(), lb._Softplus(2.0, 5.0), lb._GELU()
    assert torch.allclose(tanh.derivative(z), 1 / torch.cosh(z) ** 2)
    k = torch.tensor([0.25, 0.5, 0.75], dtype=F64)
    (plus, minus), extra = tanh.critical_points(k, -torch.ones(3, dtype=F64), torch.ones(3, dtype=F64))
    assert torch.allclose(tanh.derivative(plus), k) and torch.allclose(minus, -plus) and (plus > 0).all() and extra == 0
    assert torch.allclose(soft.value(z), torch.log1p(torch.exp(2 * z)) / 2)
    assert torch.allclose(soft.derivative(z), 1 / (1 + torch.exp(-2 * z)))
    (point,), extra = soft.critical_points(k, z[:3], z[:3])
    assert torch.allclose(soft.derivative(point), k) and extra == math.exp(-5.0) / 2
    phi = torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)
    cdf = 0.5 * (1 + torch.erf(z / math.sqrt(2)))
    assert torch.allclose(gelu.value(z), z * cdf) and torch.allclose(gelu.derivative(z), cdf + z * phi)
    assert lb._ReLU().slack_scale == 0 and tanh.slack_scale == 1e-12
    derivative = lb._ReLU().derivative(z)
    assert derivative.dtype == F64 and torch.equal(derivative, torch.tensor([0, 0, 0, 1, 1], dtype=F64))
    # Slopes outside (0, 1) (documented as harmless): tanh's points are 0 (k > 1) or +-inf
    # (k <= 0), softplus's -inf (k <= 0) or +inf (k >= 1); never NaN.
    outside = torch.tensor([-0.5, 0.0, 1.0, 1.5], dtype=F64)
    (plus, minus), _ = tanh.critical_points(outside, outside, outside)
    assert plus.tolist() == [math.inf, math.inf, 0.0, 0.0] and minus.tolist() == [-math.inf, -math.inf, 0.0, 0.0]
    (point,), _ = soft.critical_points(outside, outside, outside)
    assert point.tolist() == [-math.inf, -math.inf, math.inf, math.inf]
    assert torch.equal(lb._ReLU().value(z), z.clamp(min=0))
    # GELU on [-3, 4] with slope 1.05: GELU' = 1.05 once on its rising piece [-sqrt 2, sqrt 2] and
    # once on its falling piece [sqrt 2, inf): two brackets of width (piece) / 2^14, both ends kept.
    lower, upper = torch.full((1,), -3.0, dtype=F64), torch.full((1,), 4.0, dtype=F64)
    points, slack = gelu.critical_points(torch.full((1,), 1.05, dtype=F64), lower, upper)
    roots = sorted(float(p) for p in points if abs(float(gelu.derivative(p)) - 1.05) < 1e-3)
    assert len(roots) == 4
    assert 0 < roots[1] - roots[0] <= 2 * math.sqrt(2) / 2**14 * 1.0001
    assert 0 < roots[3] - roots[2] <= (4 - math.sqrt(2)) / 2**14 * 1.0001
    assert 0 < float(slack) < 0.8 * (3 / 2**14) ** 2
    assert lb._profile(nn.GELU(approximate="tanh")) is None
    assert isinstance(lb._profile(nn.Softplus(beta=3.0, threshold=7.0)), lb._Softplus)
    assert lb._profile(nn.Softplus(beta=3.0, threshold=7.0)).beta == 3.0
    assert lb._profile(nn.Softplus(beta=3.0, threshold=7.0)).threshold == 7.0


def test_activation_intervals():
    """The image of [l, u]: monotone activations their ends; softplus's lower end less
    e^(-threshold) / beta (the threshold's dip); GELU the dip value where [l, u] contains its
    minimiser (about -0.7518, value -0.16997), else the ends' min and max; the tanh-approximate
    GELU gets constant lines at that interval."""
    lower = torch.tensor([-2.0, -1.0, 0.5], dtype=F64)
    upper = torch.tensor([-1.0, 1.0, 2.0], dtype=F64)
    for act in (nn.ReLU(), nn.Tanh()):
        low, high = activation_interval(act, lower, upper)
        assert torch.equal(low, act(lower)) and torch.equal(high, act(upper))
    soft = nn.Softplus(beta=2.0, threshold=5.0)
    low, high = activation_interval(soft, lower, upper)
    assert torch.allclose(low, soft(lower) - math.exp(-5.0) / 2, rtol=0, atol=1e-15) and torch.equal(high, soft(upper))
    # An interval that ends exactly at the dip does not contain it strictly: its ends are exact.
    dip_x, _ = lb._gelu_dip("none")
    ends = torch.tensor([dip_x, -1.0], dtype=F64), torch.tensor([0.0, dip_x], dtype=F64)
    low, _ = activation_interval(nn.GELU(), *ends)
    assert torch.equal(low, nn.GELU()(torch.tensor([dip_x, dip_x], dtype=F64)))
    for approximate in ("none", "tanh"):
        gelu = nn.GELU(approximate=approximate)
        low, high = activation_interval(gelu, lower, upper)
        assert torch.equal(low[[0, 2]], torch.minimum(gelu(lower), gelu(upper))[[0, 2]])
        minimum = float(gelu(torch.linspace(-1, -0.5, 100001, dtype=F64)).min())  # -0.169971 / -0.170042 (tanh)
        assert minimum - 2e-6 < float(low[1]) < minimum
        assert torch.equal(high, torch.maximum(gelu(lower), gelu(upper)))
        if approximate == "tanh":
            lines = linear_relaxation(gelu, lower, upper)
            assert torch.equal(lines.lower_offset, low) and torch.equal(lines.upper_offset, high)
            assert (lines.lower_slope == 0).all() and (lines.upper_slope == 0).all()


def test_offset_range_is_the_exact_extreme():
    """_offset_range for ReLU with slope 1/2 on [-2, 4]: relu(z) - z/2 is 1 at -2, 0 at 0, 2 at 4:
    min 0, max 2; for tanh with slope 0 on [-1, 2]: tanh's own range, widened by 1e-12 * 4."""
    relu = lb._ReLU()
    lower, upper = torch.tensor([-2.0], dtype=F64), torch.tensor([4.0], dtype=F64)
    half = torch.tensor([0.5], dtype=F64)
    low, high = lb._offset_range(relu, half, lower, upper, relu.value(lower), relu.value(upper))
    assert float(low) == 0.0 and float(high) == 2.0
    tanh = lb._Tanh()
    lower, upper, zero = torch.tensor([-1.0], dtype=F64), torch.tensor([2.0], dtype=F64), torch.zeros(1, dtype=F64)
    low, high = lb._offset_range(tanh, zero, lower, upper, tanh.value(lower), tanh.value(upper))
    assert math.isclose(float(low), math.tanh(-1) - 4e-12, rel_tol=0, abs_tol=1e-16)
    assert math.isclose(float(high), math.tanh(2) + 4e-12, rel_tol=0, abs_tol=1e-16)


# --------------------------------------------------------------------------- subspaces


def test_subspace_first_layer_closed_forms():
    """The first layer composed with x + A z: weight W (free), W B_p (per-point basis), W B
    (shared basis), W E Q_p (factored), W (I - B B^T) (complement); bias W x + b always."""
    torch.manual_seed(50)
    model = mlp(4, [3], 2, seed=50)
    net = Network.from_layers(network_layers(model))
    weight, bias = model[0].weight, model[0].bias
    x = torch.randn(3, 4, dtype=F64)
    bases = orthonormal(3, 4, 2, seed=51)
    embedding, local = orthonormal(1, 4, 3, seed=52)[0], orthonormal(3, 3, 2, seed=53)
    cases = [(None, False, weight.expand(3, -1, -1)),
             (bases, False, weight @ bases),
             (DenseBasis(bases[1], n_points=3), False, (weight @ bases[1]).expand(3, -1, -1)),
             (bases[1], False, (weight @ bases[1]).expand(3, -1, -1)),
             (FactoredBasis(embedding, local), False, weight @ embedding @ local),
             (bases, True, weight @ (torch.eye(4, dtype=F64) - bases @ bases.transpose(1, 2))),
             (DenseBasis(bases[1], n_points=3), True,
              (weight @ (torch.eye(4, dtype=F64) - bases[1] @ bases[1].T)).expand(3, -1, -1))]
    for basis, complement, expected in cases:
        first = certify.subspace_first_layer(net, x, basis, complement)
        assert torch.allclose(first.weight, expected, atol=1e-14), (type(basis), complement)
        assert torch.allclose(first.bias, x @ weight.T + bias, atol=1e-14)


def test_orthonormal_bases_and_refusals():
    """_orthonormal: None stays None (complement refused); a (n, k) basis is shared by every
    point; dense and factored bases are re-orthonormalised by QR in float64 (same span); a
    coordinate subset is kept (float64); wrong shapes, k = 0 and a wrong count are refused."""
    x = torch.zeros(3, 4, dtype=F64)
    assert certify._orthonormal(None, x, False) is None
    with pytest.raises(ValueError, match=r"^complement=True needs the basis of the span to avoid$"):
        certify._orthonormal(None, x, True)
    raw = torch.tensor([[2.0, 1.0], [0.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    shared = certify._orthonormal(raw, x, False)
    assert isinstance(shared, DenseBasis) and shared.bases.shape == (3, 4, 2) and shared.bases.dtype == F64
    projector = shared.bases @ shared.bases.transpose(1, 2)
    expected = torch.zeros(4, 4, dtype=F64)
    expected[0, 0] = expected[1, 1] = 1.0
    assert torch.allclose(projector, expected.expand(3, -1, -1), atol=1e-15)
    subspace = certify._orthonormal(DenseBasis(raw.double(), n_points=3), x, False)
    assert torch.allclose(subspace.bases @ subspace.bases.transpose(1, 2), expected.expand(3, -1, -1), atol=1e-15)
    factored = certify._orthonormal(FactoredBasis(2 * torch.eye(4)[:, :3], torch.ones(3, 3, 1)), x, False)
    assert isinstance(factored, FactoredBasis) and factored.embedding.dtype == F64
    dense = factored.basis()
    assert torch.allclose(dense.abs(), torch.tensor([1, 1, 1, 0], dtype=F64)[:, None].expand(3, 4, 1) / math.sqrt(3))
    coordinates = certify._orthonormal(CoordinateSubset(torch.tensor([[0], [1], [2]]), 4), x, False)
    assert isinstance(coordinates, CoordinateSubset) and coordinates.dtype == F64
    one = certify._orthonormal(torch.ones(3, 4, 1), x, False)
    assert one.dim == 1
    for bad in (torch.zeros(3, 4, 0), torch.zeros(2, 4, 1), torch.zeros(3, 5, 1), torch.zeros(3, 4, 1, 1),
                torch.zeros(4)):
        with pytest.raises(ValueError, match=r"^basis: expected \(3, 4, k\) or \(4, k\), got \("):
            certify._orthonormal(bad, x, False)
    for bad in (DenseBasis(torch.eye(4)[:, :2].expand(2, -1, -1)), DenseBasis(torch.eye(5)[:, :2].expand(3, -1, -1))):
        with pytest.raises(ValueError, match=r"^basis: expected 3 subspaces of R\^4, got [23] of R\^[45]$"):
            certify._orthonormal(bad, x, False)


def test_subspace_dimension_and_frame():
    """d = n (free), k (the span), n - k (its complement); the frame is I, the basis itself,
    or an orthonormal basis Q of the complement (Q Q^T = I - B B^T, Q^T B = 0)."""
    x = torch.zeros(2, 4, dtype=F64)
    bases = orthonormal(2, 4, 1, seed=60)
    subspace = DenseBasis(bases)
    assert certify._subspace_dim(x, None, False) == 4
    assert certify._subspace_dim(x, subspace, False) == 1
    assert certify._subspace_dim(x, subspace, True) == 3
    assert torch.equal(certify._frame(x, None, False), torch.eye(4, dtype=F64).expand(2, -1, -1))
    assert torch.allclose(certify._frame(x, subspace, False), bases)
    frame = certify._frame(x, subspace, True)
    assert frame.shape == (2, 4, 3)
    projector = torch.eye(4, dtype=F64) - bases @ bases.transpose(1, 2)
    assert torch.allclose(frame @ frame.transpose(1, 2), projector, atol=1e-14)
    assert torch.allclose(frame.transpose(1, 2) @ frame, torch.eye(3, dtype=F64).expand(2, -1, -1), atol=1e-14)


# --------------------------------------------------------------------------- the bisection on the radius


def linear_bound(roots: torch.Tensor, log: list | None = None):
    """A synthetic bound c - r per point, recording which rows were asked at which radii."""
    def bound(index, radius):
        if log is not None:
            log.append((index.clone(), radius.clone()))
        return roots[index] - radius
    return bound


def test_plain_bisection_lands_on_the_grid_point_below_the_root():
    """rtol = 0, from 0 to R = 8 in s = 10 halvings: the largest multiple of 8 / 2^10 strictly
    below the root c (the bound c - r is not positive at r = c, so a root at R itself is not
    "whole"), R where c > R, 0 where c <= 0. Rows certified at R are not evaluated again; the
    others are asked every step."""
    roots = torch.tensor([1 / 3, 2.0, 9.0, -1.0, math.e, 8.0], dtype=F64)
    log = []
    radius = certify._largest_certified(linear_bound(roots, log), torch.zeros(6, dtype=F64), 8.0, 10, rtol=0.0)
    grid = 8.0 / 2**10
    expected = [math.floor(1 / 3 / grid) * grid, 2.0 - grid, 8.0, 0.0, math.floor(math.e / grid) * grid, 8.0 - grid]
    assert radius.tolist() == expected
    assert len(log) == 11 and torch.equal(log[0][0], torch.arange(6)) and (log[0][1] == 8.0).all()
    assert all(torch.equal(index, torch.tensor([0, 1, 3, 4, 5])) for index, _ in log[1:])
    assert torch.equal(log[1][1], torch.full((5,), 4.0, dtype=F64))  # the midpoint of [0, 8]
    assert torch.equal(log[2][1], torch.tensor([2.0, 2.0, 2.0, 2.0, 6.0], dtype=F64))


def test_bisection_starts_from_a_certified_low_end():
    """A certified low end (0.5) is kept; rtol = 0 halves [0.5, 4]: 2.25 first. rtol > 0 with the
    value at the low end unknown: the geometric mean sqrt(0.5 * 4) = sqrt 2 first."""
    roots = torch.tensor([3.0], dtype=F64)
    log = []
    certify._largest_certified(linear_bound(roots, log), torch.tensor([0.5], dtype=F64), 4.0, 3, rtol=0.0)
    assert [float(r) for _, r in log] == [4.0, 2.25, 3.125, 2.6875]
    log = []
    certify._largest_certified(linear_bound(roots, log), torch.tensor([0.5], dtype=F64), 4.0, 1, rtol=1e-3)
    assert [float(r) for _, r in log] == [4.0, math.sqrt(2.0)]
    low = torch.tensor([0.5], dtype=F64)
    certify._largest_certified(linear_bound(roots), low, 4.0, 3, rtol=0.0)
    assert float(low) == 0.5  # the caller's tensor is not changed in place


def illinois_reference(bound, low: float, high: float, steps: int, rtol: float) -> tuple[float, list[float]]:
    """The documented false position, one point, plain Python: secant on the bound's values,
    kept at least 1/16 of the bracket from either end; the end kept twice in a row has its
    value halved (Illinois); geometric mean (or midpoint from 0) while the low value is unknown."""
    asked = [high]
    high_value = bound(high)
    if high_value > 0:
        return high, asked
    low_value, kept = math.nan, 0
    for _ in range(steps):
        if not high - low > rtol * high:
            break
        width = high - low
        secant = (low * high_value - high * low_value) / (high_value - low_value)
        if math.isfinite(secant):
            middle = min(max(secant, low + width / 16), high - width / 16)
        else:
            middle = math.sqrt(low * high) if low > 0 else (low + high) / 2
        asked.append(middle)
        value = bound(middle)
        if value > 0:
            low, low_value = middle, value
            high_value = high_value / 2 if kept == 1 else high_value
            kept = 1
        else:
            high, high_value = middle, value
            low_value = low_value / 2 if kept == -1 else low_value
            kept = -1
    return low, asked


BOUND_SHAPES = {  # a bound that is positive below its root c and negative above it, by shape
    "linear": (lambda c, r: c - r, lambda c, r: c - r),
    "concave": (lambda c, r: c**2 - r**2, lambda c, r: c**2 - r**2),  # the high end kept twice
    "sqrt": (lambda c, r: c**0.5 - r**0.5, lambda c, r: math.sqrt(c) - math.sqrt(r)),
    # convex and flattening like a CROWN bound: the low end kept twice, its value halved
    "convex": (lambda c, r: torch.exp(-3 * r) - torch.exp(-3 * c), lambda c, r: math.exp(-3 * r) - math.exp(-3 * c)),
}


@pytest.mark.parametrize("shape", BOUND_SHAPES)
def test_false_position_matches_the_documented_algorithm(shape):
    """rtol > 0 on bounds of four shapes: the radii asked and the result equal a plain-Python
    Illinois false position (in the convex case its halving of the low end's value changes
    the radii asked), the result is certified, and the bracket closes to rtol (within
    `steps`)."""
    roots = torch.tensor([0.3, 0.7, 1.7, 2.9, 3.9], dtype=F64)
    in_torch, in_python = BOUND_SHAPES[shape]
    log = []

    def bound(index, radius):
        log.append((index.clone(), radius.clone()))
        return in_torch(roots[index], radius)

    radius = certify._largest_certified(bound, torch.zeros(5, dtype=F64), 4.0, 40, rtol=1e-4)
    for p in range(5):
        c = float(roots[p])
        expected, asked = illinois_reference(lambda r, c=c: in_python(c, r), 0.0, 4.0, 40, 1e-4)
        assert float(radius[p]) == pytest.approx(expected, rel=1e-12, abs=0)
        mine = [float(r[(index == p).nonzero()[0, 0]]) for index, r in log if (index == p).any()]
        assert mine == pytest.approx(asked, rel=1e-12, abs=0)
        assert radius[p] < roots[p] and radius[p] >= roots[p] * (1 - 1e-4) - 1e-12


def test_a_bracket_already_within_rtol_is_not_refined():
    """A certified low end 7.5 below R = 8: the bracket's width 0.5 is exactly rtol x R for
    rtol = 1/16, so it is closed (only R is asked, 7.5 comes back); rtol = 1/32 refines it.
    rtol = 1/2 from 0 with root 3: 8 and 4 fail, 2 passes, and [2, 4] is exactly rtol x 4
    wide: closed after three questions."""
    roots = torch.tensor([7.9], dtype=F64)
    log = []
    radius = certify._largest_certified(linear_bound(roots, log), torch.tensor([7.5], dtype=F64), 8.0, 10, rtol=1 / 16)
    assert float(radius) == 7.5 and len(log) == 1
    log = []
    radius = certify._largest_certified(linear_bound(roots, log), torch.tensor([7.5], dtype=F64), 8.0, 10, rtol=1 / 32)
    assert 7.5 < float(radius) < 7.9 and len(log) > 1
    log = []
    radius = certify._largest_certified(linear_bound(torch.tensor([3.0], dtype=F64), log), torch.zeros(1, dtype=F64),
                                        8.0, 10, rtol=0.5)
    assert float(radius) == 2.0 and [float(r) for _, r in log] == [8.0, 4.0, 2.0]
    assert illinois_reference(lambda r: 3.0 - r, 0.0, 8.0, 10, 0.5) == (2.0, [8.0, 4.0, 2.0])


def test_bisection_stops_when_every_bracket_is_closed():
    """The loop ends once no bracket is open: a bound positive everywhere asks only once."""
    log = []
    certify._largest_certified(linear_bound(torch.tensor([5.0, 6.0], dtype=F64), log),
                               torch.zeros(2, dtype=F64), 4.0, 30, rtol=0.0)
    assert len(log) == 1


# --------------------------------------------------------------------------- exact distances of ReLU networks


PLANE_CASES = [  # (n, k or None, complement): the searched plane or line
    (2, None, False),
    (3, 2, False),
    (3, 1, True),
    (3, 1, False),
]


@pytest.mark.parametrize("n, k, complement", PLANE_CASES)
def test_bounds_bracket_the_exact_distance_of_a_relu_network(n, k, complement):
    """One hidden ReLU layer (6 neurons, 3 classes), searched in free R^2, a plane of R^3, the
    complement of a line in R^3, and a line: IBP <= CROWN <= branch and bound <= the exact
    distance (activation-region enumeration) <= a ray attack, branch and bound within 1% of
    the exact distance, and the attack within 1% of it."""
    model = mlp(n, [6], 3, seed=70 + n)
    x = 0.5 * torch.randn(4, n, generator=torch.Generator().manual_seed(71), dtype=F64)
    basis = None if k is None else orthonormal(4, n, k, seed=72)
    label = model(x).argmax(1)
    ibp = certified_radius(model, x, basis, bound="ibp", max_radius=4.0, complement=complement)
    crown = certified_radius(model, x, basis, max_radius=4.0, max_boxes=0, complement=complement)
    boxed = certified_radius(model, x, basis, max_radius=4.0, complement=complement)
    frames = certify._frame(x, None if basis is None else DenseBasis(basis), complement)
    for p in range(len(x)):
        truth = exact_distance(model, x[p], frames[p], int(label[p]))
        attack = ray_attack(model, x[p], frames[p], int(label[p]), reach=4.0)
        assert ibp[p] <= crown[p] <= boxed[p], p
        assert boxed[p] <= truth + 1e-9, (p, float(boxed[p]), truth)
        if truth < 3.9:
            assert truth <= attack + 1e-9 and attack <= truth * 1.01, (p, truth, attack)
            assert boxed[p] >= 0.99 * truth, (p, float(boxed[p]), truth)
        assert 0 < ibp[p]


def test_branch_and_bound_in_a_line_reaches_its_target():
    """In a line (d = 1) the nearest change is found by the ray (12 halvings of a bracket of a
    few percent) and the probes, so the certified radius is (1 - BAB_RTOL) x the exact distance
    to 1e-4 relative (or CROWN's, where that is larger), and never above it."""
    model = mlp(3, [8], 3, seed=75)
    x = 0.5 * torch.randn(8, 3, generator=torch.Generator().manual_seed(74), dtype=F64)
    basis = orthonormal(8, 3, 1, seed=75)
    label = model(x).argmax(1)
    radius = certified_radius(model, x, basis, max_radius=4.0)
    crown = certified_radius(model, x, basis, max_radius=4.0, max_boxes=0)
    reached = 0
    for p in range(len(x)):
        truth = exact_distance(model, x[p], basis[p], int(label[p]))
        assert float(radius[p]) <= truth * (1 + 1e-12)  # CROWN is exact on an affine stretch
        if truth < 3.9:
            target = (1 - certify.BAB_RTOL) * truth
            expected = max(target, float(crown[p]))  # CROWN alone may already be nearer
            assert expected * (1 - 1e-12) <= float(radius[p]) <= expected * (1 + 1e-4), (p, float(radius[p]) / target)
            reached += float(crown[p]) < target
    assert reached >= 4


def ray_reference(distance: float, inner: float, max_radius: float) -> float:
    """The documented ray search in plain Python, for a label change at `distance` on the ray:
    48 probes start (R / start)^(k / 48), start = max(inner, 1e-9 R); the first probe past the
    change and the one before it (or start) bracket it; 12 halvings; R where no probe changes."""
    start = max(inner, max_radius * 1e-9)
    probes = [start * (max_radius / start) ** (k / 48) for k in range(1, 49)]
    crossed = [probe > distance for probe in probes]
    if not any(crossed):
        return max_radius
    first = crossed.index(True)
    low, high = (probes[first - 1] if first > 0 else start), probes[first]
    for _ in range(12):
        middle = (low + high) / 2
        low, high = (low, middle) if middle > distance else (middle, high)
    return high


def test_ray_change_matches_the_documented_probes_and_halvings():
    """_ray_change on a network that is affine where it is used (a ReLU layer alive on every
    input, margin 0.5 (x_1 + 0.5): slope norm 1/2): the steepest ray is -e_1 and the change lies
    at t = x_1 + 0.5; the result equals the plain-Python probe-and-halve recomputation to 1e-12,
    with the change past the first probe, past the second, far out, beyond max_radius (R),
    between R and where a 49th probe would be, and between the last two probes."""
    model = nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]], [100.0, 100.0]), nn.ReLU(),
                          linear([[0.5, 0.0], [0.0, 0.0]], [0.25 - 50.0, 0.0]))
    net = Network.from_layers(network_layers(model))
    shift = torch.tensor([0.0, 0.01, 0.2, 3.0, 1.51, 1.48], dtype=F64)
    x = torch.stack([shift, torch.zeros(6, dtype=F64)], 1)
    inner = torch.tensor([0.49, 0.49, 0.0, 1.0, 1.0, 1.0], dtype=F64)
    frame = certify.subspace_first_layer(net, x, None, complement=False)
    label = torch.zeros(6, dtype=torch.long)
    change = certify._ray_change(net, frame, label, inner, 2.0)
    for p in range(6):
        expected = ray_reference(float(shift[p]) + 0.5, float(inner[p]), 2.0)
        assert float(change[p]) == pytest.approx(expected, rel=1e-12, abs=0), p
    probes = [0.49 * (2 / 0.49) ** (k / 48) for k in (1, 2)]
    assert 0.5 < probes[0] < 0.51 < probes[1]  # the first change is at probe 1, then at probe 2
    assert float(change[3]) == float(change[4]) == 2.0 and 2.01 < 2 ** (49 / 48)
    assert 2 ** (47 / 48) < 1.98 <= float(change[5]) < 2.0
    assert 0.5 <= float(change[0]) <= 0.5 + (probes[0] - 0.49) / 2**12


def test_changed_compares_the_label_at_each_offset():
    """_changed: whether argmax of the logits at x0 + A z differs from the label, per (point, z)."""
    model = nn.Sequential(linear([[1.0, 0.0], [0.0, 1.0]], [100.0, 100.0]), nn.ReLU(),
                          linear([[0.5, 0.0], [0.0, 0.0]], [0.25 - 50.0, 0.0]))
    net = Network.from_layers(network_layers(model))
    x = torch.tensor([[0.0, 0.0], [3.0, 0.0]], dtype=F64)
    frame = certify.subspace_first_layer(net, x, None, complement=False)
    z = torch.tensor([[[-0.4, 0.0], [-0.6, 0.0], [0.0, 9.0]], [[-3.6, 0.0], [-3.4, 0.0], [1.0, 1.0]]], dtype=F64)
    changed = certify._changed(net, frame, torch.tensor([0, 0]), z)
    assert changed.tolist() == [[False, True, False], [True, False, False]]
    assert certify._changed(net, frame, torch.tensor([1, 0]), z).tolist() == [[True, False, True], [True, False, False]]


def test_rank_within_owner():
    """Each box's rank by distance among the boxes of the same point (0 = nearest)."""
    owner = torch.tensor([2, 0, 2, 1, 0, 2])
    distance = torch.tensor([0.3, 0.5, 0.1, 0.2, 0.4, 0.2], dtype=F64)
    assert certify._rank_within_owner(owner, distance).tolist() == [2, 1, 0, 0, 0, 1]
    assert certify._rank_within_owner(owner[:0], distance[:0]).tolist() == []
    generator = torch.Generator().manual_seed(80)
    owner = torch.randint(0, 4, (40,), generator=generator)
    distance = torch.rand(40, generator=generator, dtype=F64)
    ranks = certify._rank_within_owner(owner, distance)
    for i in range(40):
        assert int(ranks[i]) == int(((owner == owner[i]) & (distance < distance[i])).sum())


def test_branch_and_bound_only_for_small_subspaces_and_a_positive_budget():
    """Branch and bound runs for 1 <= d <= 3 and max_boxes > 0 with CROWN: in R^4 (d = 4) and
    with max_boxes = 0 the result is CROWN's; in a line (one box already helps) and in a 3-D
    subspace it is larger; IBP never uses it."""
    model = mlp(4, [6], 3, seed=90)
    x = 0.5 * torch.randn(4, 4, generator=torch.Generator().manual_seed(91), dtype=F64)
    line = orthonormal(4, 4, 1, seed=92)
    crown = certified_radius(model, x, max_radius=4.0, max_boxes=0)
    assert torch.equal(certified_radius(model, x, max_radius=4.0), crown)
    in_line = certified_radius(model, x, line, max_radius=4.0, max_boxes=0)
    boxed = certified_radius(model, x, line, max_radius=4.0, max_boxes=2)
    full = certified_radius(model, x, line, max_radius=4.0)
    assert (boxed >= in_line).all() and (full >= boxed).all() and (full > in_line).sum() >= 3
    one_box = certified_radius(model, x, line, max_radius=4.0, max_boxes=1)  # one round of splits
    assert (one_box > in_line).sum() >= 3
    space = orthonormal(4, 4, 3, seed=93)  # d = 3: still branch and bound
    crown_3d = certified_radius(model, x, space, max_radius=4.0, max_boxes=0)
    boxed_3d = certified_radius(model, x, space, max_radius=4.0)
    assert (boxed_3d >= crown_3d).all() and (boxed_3d > crown_3d).sum() >= 2
    # The complement of a line in R^5 has d = 4: no branch and bound (the line itself has d = 1).
    wide = mlp(5, [6], 3, seed=94)
    x5 = 0.5 * torch.randn(4, 5, generator=torch.Generator().manual_seed(95), dtype=F64)
    line5 = orthonormal(4, 5, 1, seed=96)
    assert torch.equal(certified_radius(wide, x5, line5, max_radius=4.0, complement=True),
                       certified_radius(wide, x5, line5, max_radius=4.0, complement=True, max_boxes=0))
    ibp = certified_radius(model, x, line, max_radius=4.0, bound="ibp")
    assert torch.equal(ibp, certified_radius(model, x, line, max_radius=4.0, bound="ibp", max_boxes=0))
    assert (ibp < in_line).all()
    with pytest.raises(ValueError, match=r"^bound: must be one of \('ibp', 'crown'\), got 'lipschitz'$"):
        certified_radius(model, x, bound="lipschitz")


# --------------------------------------------------------------------------- soundness by sampling


@pytest.mark.parametrize("activation", [nn.Tanh, nn.Softplus, nn.GELU])
def test_no_sampled_point_of_a_certified_ball_changes_the_label(activation):
    """Smooth activations, depth 2, a 2-D subspace of R^4: 3000 points of each certified ball
    (half on its sphere) keep the label, and the margins there are at least CROWN's bound."""
    model = mlp(4, [8, 8], 3, seed=100, activation=activation)
    x = torch.randn(4, 4, generator=torch.Generator().manual_seed(101), dtype=F64)
    bases = orthonormal(4, 4, 2, seed=102)
    radius = certified_radius(model, x, bases, max_radius=4.0, max_boxes=64)
    label = model(x).argmax(1)
    bound = margin_lower_bound(model, x, label, radius, bases)
    assert (radius > 0).all()
    generator = torch.Generator().manual_seed(103)
    for p in range(len(x)):
        z = torch.randn(3000, 2, generator=generator, dtype=F64)
        z = z / z.norm(dim=1, keepdim=True)
        z[1500:] *= torch.rand(1500, 1, generator=generator, dtype=F64).sqrt()
        logits = model(x[p] + (radius[p] * z) @ bases[p].T)
        assert (logits.argmax(1) == label[p]).all(), p
        own = logits[:, label[p]].clone()
        logits[:, label[p]] = -math.inf
        assert (own - logits.max(1).values).min() >= bound[p] - 1e-9


# --------------------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_points_on_cuda_with_the_weights_and_the_basis_on_the_cpu():
    """Points on CUDA, the model (one Linear without a bias) and a DenseBasis on the CPU: the
    weights, the biases and the basis move to the points' device, and every helper builds its
    tensors there (free space R^3 and a plane: branch and bound runs; the complement of the
    plane: a line). The radii match the CPU's up to 1e-2 relative (float round-off may move a
    branch-and-bound decision)."""
    torch.manual_seed(110)
    model = nn.Sequential(nn.Linear(3, 6, bias=False), nn.ReLU(), nn.Linear(6, 3)).double().requires_grad_(False)
    x = 0.5 * torch.randn(4, 3, generator=torch.Generator().manual_seed(111), dtype=F64)
    label = model(x).argmax(1)
    plane = DenseBasis(orthonormal(4, 3, 2, seed=112))
    for basis, complement in ((None, False), (plane, False), (plane, True)):
        for bound in ("ibp", "crown"):
            expected = certified_radius(model, x, basis, label=label, max_radius=4.0, complement=complement,
                                        bound=bound)
            radius = certified_radius(model, x.cuda(), basis, label=label.cuda(), max_radius=4.0,
                                      complement=complement, bound=bound)
            assert radius.device.type == "cuda"
            assert torch.allclose(radius.cpu(), expected, rtol=1e-2, atol=1e-9), (bound, complement)
