"""Sound bounds on an MLP's class margins over a set of inputs: IBP and CROWN, in float64.

The input set is always written in the coordinates z of the perturbation: x = x0 + A z, z in a
region Z. The map is folded into the first layer (`FirstLayer`): its pre-activations are
(W0 x0 + b0) + (W0 A) z. A is the identity (free space), an orthonormal basis B (a subspace) or
the projector I - B B^T (the complement of span B: {P v : ||v|| <= r} is exactly the set of
vectors orthogonal to B with norm <= r). Z is an L2 ball around 0 (`Ball`) or a box (`Box`), and
every bound ends with the exact minimum of a linear function over Z:

    min_{z in Z} a.z + c  =  c - r ||a||_2           (ball of radius r)
                          =  c + a.m - |a|.h         (box with centre m and half-widths h)

Two propagations start from there:

* IBP, interval bound propagation (Gowal et al. 2018, arXiv 1810.12715): the first layer is
  bounded exactly as above, then intervals go through the hidden layers; the last layer is
  folded into each margin f_y - f_j, so the logits' common terms cancel.
* CROWN (Zhang et al. 2018, "Efficient Neural Network Robustness Certification with General
  Activation Functions", arXiv 1811.00866): each activation is sandwiched between two lines on
  its pre-activation interval [l, u]; going backwards from a linear function of a layer, each
  activation is replaced by the lower or the upper line according to the sign of its
  coefficient, each Linear layer is substituted, and the resulting linear function of z is
  minimised exactly over Z. Every hidden layer's pre-activation bounds come from the same
  backward pass (full CROWN), intersected with the IBP interval; the margins are bounded by
  both methods, taking the larger lower bound per class.

The lines (`linear_relaxation`) are sound for any slope: the slope is a heuristic (the chord or
the tangent at the interval's midpoint, whichever line lies closer to the activation at the
midpoint; for ReLU this is CROWN's chord above and adaptive 0/1 slope below), but the offsets
are the exact minimum and maximum of act(z) - k z over [l, u], taken over the interval's ends and
every interior critical point: closed forms for ReLU, tanh and softplus, a bracketing bisection
with a rigorous remainder for GELU. GELU's tanh approximation gets constant lines (its IBP
interval). Everything runs in float64 on float64 copies of the weights, so a bound is off by
float64 round-off at most (~1e-16 relative), never by float32's.
"""

from __future__ import annotations

import functools
import itertools
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import torch
from torch import nn

SUPPORTED = (nn.Linear, nn.ReLU, nn.Tanh, nn.Softplus, nn.GELU)
MONOTONE = (nn.ReLU, nn.Tanh, nn.Softplus)
# Slack added to the offsets of smooth activations' lines, relative to (1 + |l| + |u|): far above
# float64 round-off of the closed-form critical points, far below anything a radius resolves.
SMOOTH_SLACK = 1e-12
GELU_BISECTIONS = 14


def network_layers(model: nn.Module) -> list[nn.Module]:
    """The model's leaf modules in registration order, which for the simulator's MLP (and any
    nn.Sequential of Linear layers and activations) is the order of the forward pass.
    TypeError or ValueError for anything the bounds cannot handle."""
    layers = [module for module in model.modules() if not list(module.children())]
    for module in layers:
        if not isinstance(module, SUPPORTED):
            raise TypeError(f"certified bounds support Linear layers and ReLU/tanh/softplus/GELU activations, "
                            f"not {type(module).__name__}")
    linear = [isinstance(module, nn.Linear) for module in layers]
    if not (linear and linear[0] and linear[-1]) or any(not a and not b for a, b in itertools.pairwise(linear)):
        raise ValueError("certified bounds need a Linear layer first and last, and no two activations in a row")
    return layers


# --------------------------------------------------------------------------- the network and its input


@dataclass
class Network:
    """An MLP as float64 (weight, bias) pairs: linears[0], activations[0], linears[1], ...,
    activations[-1], linears[-1] (the head). Consecutive Linear layers are composed into one."""

    linears: list[tuple[torch.Tensor, torch.Tensor]]
    activations: list[nn.Module]

    @classmethod
    def from_layers(cls, layers: list[nn.Module], device=None) -> Network:
        linears, activations = [], []
        for module in layers:
            if not isinstance(module, nn.Linear):
                activations.append(module)
                continue
            weight = module.weight.detach().to(device=device, dtype=torch.float64)
            bias = torch.zeros(len(weight), dtype=torch.float64, device=weight.device) if module.bias is None \
                else module.bias.detach().to(device=device, dtype=torch.float64)
            if len(linears) > len(activations):  # a Linear right after a Linear: compose them
                previous_weight, previous_bias = linears.pop()
                weight, bias = weight @ previous_weight, weight @ previous_bias + bias
            linears.append((weight, bias))
        return cls(linears, activations)

    @property
    def depth(self) -> int:
        """Number of hidden (activation) layers."""
        return len(self.activations)

    def logits(self, first: FirstLayer, z: torch.Tensor) -> torch.Tensor:
        """(M, C) the logits at x0 + A z for z (M, d), in float64."""
        values = first.bias + torch.einsum("phd,pd->ph", first.weight, z)
        for activation, (weight, bias) in zip(self.activations, self.linears[1:]):
            values = activation(values) @ weight.T + bias
        return values


@dataclass
class FirstLayer:
    """The first Linear layer composed with x = x0 + A z: pre-activations bias + weight z.
    weight (M, h, d), bias (M, h); one row per query (a point, or a box of a point)."""

    weight: torch.Tensor
    bias: torch.Tensor

    def __getitem__(self, index) -> FirstLayer:
        return FirstLayer(self.weight[index], self.bias[index])


@dataclass
class Ball:
    """{z : ||z||_2 <= radius}, radius (M,)."""

    radius: torch.Tensor

    def minimum(self, coefficients: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        """(M, m): min over the ball of coefficients (M, m, d) . z + constant (M, m)."""
        return constant - self.radius[:, None] * coefficients.norm(dim=-1)

    def interval(self, first: FirstLayer) -> tuple[torch.Tensor, torch.Tensor]:
        spread = self.radius[:, None] * first.weight.norm(dim=-1)
        return first.bias - spread, first.bias + spread


@dataclass
class Box:
    """{z : |z - center| <= half} componentwise; center, half (M, d)."""

    center: torch.Tensor
    half: torch.Tensor

    def minimum(self, coefficients: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return (constant + torch.einsum("pmd,pd->pm", coefficients, self.center)
                - torch.einsum("pmd,pd->pm", coefficients.abs(), self.half))

    def interval(self, first: FirstLayer) -> tuple[torch.Tensor, torch.Tensor]:
        middle = first.bias + torch.einsum("phd,pd->ph", first.weight, self.center)
        spread = torch.einsum("phd,pd->ph", first.weight.abs(), self.half)
        return middle - spread, middle + spread


@dataclass
class Intersection:
    """The intersection of two regions: each one's bound is sound on it, the larger is kept."""

    first: Ball | Box
    second: Ball | Box

    def minimum(self, coefficients: torch.Tensor, constant: torch.Tensor) -> torch.Tensor:
        return torch.maximum(self.first.minimum(coefficients, constant), self.second.minimum(coefficients, constant))

    def interval(self, first: FirstLayer) -> tuple[torch.Tensor, torch.Tensor]:
        (low_a, high_a), (low_b, high_b) = self.first.interval(first), self.second.interval(first)
        low, high = torch.maximum(low_a, low_b), torch.minimum(high_a, high_b)
        return torch.minimum(low, high), torch.maximum(low, high)  # round-off on a point interval


# --------------------------------------------------------------------------- activations


def activation_interval(activation: nn.Module, lower: torch.Tensor, upper: torch.Tensor):
    """The image of [lower, upper] under the activation, exact up to GELU's dip value and
    softplus's threshold (both taken safely low)."""
    if isinstance(activation, nn.Softplus):  # z itself past the threshold: a dip of <= exp(-threshold) / beta
        return activation(lower) - math.exp(-activation.threshold) / activation.beta, activation(upper)
    if isinstance(activation, MONOTONE):
        return activation(lower), activation(upper)
    # GELU falls to a minimum near -0.75, then rises: the maximum of an interval is at an end, the
    # minimum at an end or at the dip when the interval contains it.
    dip_x, dip_value = _gelu_dip(activation.approximate)
    at_ends = torch.minimum(activation(lower), activation(upper))
    contains_dip = (lower < dip_x) & (dip_x < upper)
    return (torch.where(contains_dip, torch.full_like(at_ends, dip_value), at_ends),
            torch.maximum(activation(lower), activation(upper)))


@functools.cache
def _gelu_dip(approximate: str) -> tuple[float, float]:
    """Where the GELU (either variant) is smallest, and a value safely below that minimum."""
    grid = torch.linspace(-2.0, 0.0, 200_001, dtype=torch.float64)
    values = nn.functional.gelu(grid, approximate=approximate)
    index = int(values.argmin())
    # The grid minimum is within 1e-5 of the true one in x, so within ~1e-10 in value.
    return float(grid[index]), float(values[index]) - 1e-6


@dataclass
class LinearRelaxation:
    """lower_slope z + lower_offset <= act(z) <= upper_slope z + upper_offset on each neuron's [l, u]."""

    lower_slope: torch.Tensor
    lower_offset: torch.Tensor
    upper_slope: torch.Tensor
    upper_offset: torch.Tensor


class _Profile(ABC):
    """The math of one activation for `linear_relaxation`: value, derivative, and the points
    where act(z) - k z can have an interior extremum on [l, u] (any extra point is harmless)."""

    slack_scale = SMOOTH_SLACK

    @abstractmethod
    def value(self, z):
        """act(z), elementwise."""

    @abstractmethod
    def derivative(self, z):
        """act'(z), elementwise."""

    @abstractmethod
    def critical_points(self, slope, lower, upper) -> tuple[list[torch.Tensor], torch.Tensor | float]:
        """(points, extra slack): the extremum of act(z) - k z over [l, u] is at l, u, or one of
        the points; the slack covers how far the points may miss an extremum's value."""


class _ReLU(_Profile):
    slack_scale = 0.0  # the kink at 0 is exact: nothing to cover

    def value(self, z):
        return z.clamp(min=0)

    def derivative(self, z):
        return (z > 0).to(z.dtype)

    def critical_points(self, slope, lower, upper):
        return [torch.zeros_like(lower)], 0.0


class _Tanh(_Profile):
    def value(self, z):
        return torch.tanh(z)

    def derivative(self, z):
        return 1 - torch.tanh(z) ** 2

    def critical_points(self, slope, lower, upper):
        # tanh'(z) = k at z = +-atanh(sqrt(1 - k)) for 0 < k <= 1; for other slopes act(z) - kz is
        # monotone and the points (+-inf or 0, clamped into [l, u]) are harmless.
        root = torch.atanh(torch.sqrt((1 - slope).clamp(0, 1)))
        return [root, -root], 0.0


class _Softplus(_Profile):
    """torch's Softplus(beta, threshold): log(1 + exp(beta z)) / beta, but z itself where
    beta z > threshold, which is below the smooth function by at most exp(-threshold) / beta:
    the lines bound the smooth function and widen by that much."""

    def __init__(self, beta: float, threshold: float):
        self.beta, self.threshold = float(beta), float(threshold)

    def value(self, z):
        return torch.logaddexp(torch.zeros_like(z), self.beta * z) / self.beta

    def derivative(self, z):
        return torch.sigmoid(self.beta * z)

    def critical_points(self, slope, lower, upper):
        return [torch.logit(slope.clamp(0, 1)) / self.beta], math.exp(-self.threshold) / self.beta


class _GELU(_Profile):
    """x Phi(x). GELU'(z) = Phi(z) + z phi(z) falls on (-inf, -sqrt 2], rises on [-sqrt 2, sqrt 2]
    and falls on [sqrt 2, inf), so on each piece act(z) - kz is monotone (extremes at the piece's
    ends, which are candidates) or its derivative changes sign once: bisection brackets that root
    to [a, b], and as GELU' is monotone on [a, b], act(z) - kz there is within
    (b - a) max(|g'(a)|, |g'(b)|) of its value at a or b (the slack; <= 0.8 (b - a)^2)."""

    PIECES = ((-math.inf, -math.sqrt(2)), (-math.sqrt(2), math.sqrt(2)), (math.sqrt(2), math.inf))

    def value(self, z):
        return 0.5 * z * (1 + torch.erf(z / math.sqrt(2)))

    def derivative(self, z):
        return 0.5 * (1 + torch.erf(z / math.sqrt(2))) + z * torch.exp(-z * z / 2) / math.sqrt(2 * math.pi)

    def critical_points(self, slope, lower, upper):
        points, slack = [], torch.zeros_like(lower)
        for start, stop in self.PIECES:
            a = lower.clamp(min=start).clamp(max=upper)
            b = upper.clamp(max=stop).clamp(min=a)
            points += [a, b]
            falls_at_a = self.derivative(a) < slope
            root = falls_at_a != (self.derivative(b) < slope)
            if not root.any():
                continue
            a, b, k, falls_at_a = a[root], b[root], slope[root], falls_at_a[root]
            for _ in range(GELU_BISECTIONS):
                middle = (a + b) / 2
                same = (self.derivative(middle) < k) == falls_at_a
                a, b = torch.where(same, middle, a), torch.where(same, b, middle)
            steepest = torch.maximum((self.derivative(a) - k).abs(), (self.derivative(b) - k).abs())
            for bracket_end in (a, b):
                point = lower.clone()
                point[root] = bracket_end
                points.append(point)
            slack[root] = torch.maximum(slack[root], (b - a) * steepest)
        return points, slack


def _profile(activation: nn.Module) -> _Profile | None:
    if isinstance(activation, nn.ReLU):
        return _ReLU()
    if isinstance(activation, nn.Tanh):
        return _Tanh()
    if isinstance(activation, nn.Softplus):
        return _Softplus(activation.beta, activation.threshold)
    if isinstance(activation, nn.GELU) and activation.approximate == "none":
        return _GELU()
    return None  # GELU's tanh approximation: constant lines


def _offset_range(profile: _Profile, slope, lower, upper, value_lower, value_upper):
    """min and max over [lower, upper] of act(z) - slope z, widened by the profile's slack
    (value_lower, value_upper: the activation at the ends)."""
    points, extra = profile.critical_points(slope, lower, upper)
    inside = torch.stack([torch.clamp(p, lower, upper) for p in points])
    values = torch.cat([torch.stack([value_lower - slope * lower, value_upper - slope * upper]),
                        profile.value(inside) - slope * inside])
    slack = profile.slack_scale * (1 + lower.abs() + upper.abs()) + extra
    return values.amin(0) - slack, values.amax(0) + slack


def linear_relaxation(activation: nn.Module, lower: torch.Tensor, upper: torch.Tensor) -> LinearRelaxation:
    """Lines below and above the activation on each neuron's [lower, upper] (sound for any slope)."""
    profile = _profile(activation)
    if profile is None:
        low, high = activation_interval(activation, lower, upper)
        zero = torch.zeros_like(lower)
        return LinearRelaxation(zero, low, zero, high)
    width = upper - lower
    middle = (lower + upper) / 2
    value_lower, value_upper = profile.value(lower), profile.value(upper)
    tangent = profile.derivative(middle)
    wide = width > 1e-12 * (1 + middle.abs())
    chord = torch.where(wide, (value_upper - value_lower) / torch.where(wide, width, 1.0), tangent)
    chord_low, chord_high = _offset_range(profile, chord, lower, upper, value_lower, value_upper)
    tangent_low, tangent_high = _offset_range(profile, tangent, lower, upper, value_lower, value_upper)
    # Per neuron and side, the line closer to the activation at the midpoint (the smaller area).
    tangent_below = tangent * middle + tangent_low > chord * middle + chord_low
    tangent_above = tangent * middle + tangent_high < chord * middle + chord_high
    return LinearRelaxation(torch.where(tangent_below, tangent, chord), torch.where(tangent_below, tangent_low, chord_low),
                            torch.where(tangent_above, tangent, chord), torch.where(tangent_above, tangent_high, chord_high))


# --------------------------------------------------------------------------- propagation


def margin_coefficients(net: Network, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The head folded into the margins f_y - f_j: weights (M, C, h), biases (M, C)."""
    weight, bias = net.linears[-1]
    return weight[label][:, None, :] - weight[None], bias[label][:, None] - bias[None]


def exclude_own_class(margins: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
    """(M,) the smallest margin over the classes j != label."""
    return margins.scatter(1, label[:, None], math.inf).min(dim=1).values


def interval_margins(net: Network, first: FirstLayer, label: torch.Tensor, region) -> torch.Tensor:
    """(M, C) IBP lower bounds on f_y - f_j over the region."""
    lower, upper = region.interval(first)
    if net.depth == 0:  # no hidden layer: the margins are affine in z, bounded exactly
        weights = first.weight[torch.arange(len(label)), label][:, None] - first.weight
        return region.minimum(weights, first.bias.gather(1, label[:, None]) - first.bias)
    for activation, (weight, bias) in zip(net.activations[:-1], net.linears[1:-1]):
        lower, upper = _interval_linear(weight, bias, *activation_interval(activation, lower, upper))
    return _interval_margins(net, label, *activation_interval(net.activations[-1], lower, upper))


def _interval_linear(weight, bias, lower, upper):
    middle, half = (upper + lower) / 2, (upper - lower) / 2
    center, spread = middle @ weight.T + bias, half @ weight.abs().T
    return center - spread, center + spread


def _interval_margins(net, label, lower, upper):
    weights, biases = margin_coefficients(net, label)
    middle, half = (upper + lower) / 2, (upper - lower) / 2
    return (torch.einsum("pch,ph->pc", weights, middle) + biases
            - torch.einsum("pch,ph->pc", weights.abs(), half))


def crown_margins(net: Network, first: FirstLayer, label: torch.Tensor, region, slopes: bool = False):
    """(M, C) lower bounds on f_y - f_j over the region: CROWN, every intermediate layer by CROWN
    too, each bound intersected with (or, for the margins, the larger of it and) the IBP bound.
    With slopes=True also the CROWN bounds' coefficients in z, (M, C, d): the margin's lower
    bound is the minimum of (coefficients . z + constant) over the region."""
    if net.depth == 0:
        margins = interval_margins(net, first, label, region)
        return (margins, first.weight[torch.arange(len(label)), label][:, None] - first.weight) if slopes else margins
    lower, upper = region.interval(first)  # exact
    relaxations = []
    for activation, (weight, bias) in zip(net.activations[:-1], net.linears[1:-1]):
        relaxations.append(linear_relaxation(activation, lower, upper))
        interval_lower, interval_upper = _interval_linear(weight, bias, *activation_interval(activation, lower, upper))
        bounds = region.minimum(*_backsubstitute(net, relaxations, torch.cat([weight, -weight]),
                                                 torch.cat([bias, -bias]), first))
        lower = torch.maximum(bounds[:, :len(weight)], interval_lower)
        upper = torch.minimum(-bounds[:, len(weight):], interval_upper)
        lower, upper = torch.minimum(lower, upper), torch.maximum(lower, upper)  # round-off on a point interval
    last = net.activations[-1]
    relaxations.append(linear_relaxation(last, lower, upper))
    weights, biases = margin_coefficients(net, label)
    coefficients, constant = _backsubstitute(net, relaxations, weights, biases, first)
    margins = torch.maximum(region.minimum(coefficients, constant),
                            _interval_margins(net, label, *activation_interval(last, lower, upper)))
    return (margins, coefficients) if slopes else margins


def _backsubstitute(net: Network, relaxations: list[LinearRelaxation], coefficients: torch.Tensor,
                    constant: torch.Tensor, first: FirstLayer) -> tuple[torch.Tensor, torch.Tensor]:
    """A linear lower bound, (M, m, d) coefficients . z + (M, m) constant, on coefficients . a +
    constant, where a is the output of activation len(relaxations) - 1 (bounded on its input by
    the last relaxation) at x0 + A z.
    coefficients: (m, h) shared by all queries (an intermediate layer's weights, constant (m,))
    or (M, m, h) (the margins, constant (M, m))."""
    top = len(relaxations) - 1  # the activation whose output the coefficients act on
    if coefficients.dim() == 2:  # shared: one GEMM per side instead of an (M, m, h) tensor
        relaxation = relaxations[top]
        positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
        if top == 0:  # the relaxed activation's input is the first layer: straight to z
            # Each line composed with the first layer, as (M, h, d + 1): slopes, then the constant.
            augmented = torch.cat([first.weight, first.bias[:, :, None]], dim=2)
            lower_line = relaxation.lower_slope[:, :, None] * augmented
            lower_line[:, :, -1] += relaxation.lower_offset
            upper_line = relaxation.upper_slope[:, :, None] * augmented
            upper_line[:, :, -1] += relaxation.upper_offset
            product = _shared_matmul(positive, lower_line) + _shared_matmul(negative, upper_line)
            return product[:, :, :-1], constant + product[:, :, -1]
        constant = constant + relaxation.lower_offset @ positive.T + relaxation.upper_offset @ negative.T
        coefficients = positive * relaxation.lower_slope[:, None, :] + negative * relaxation.upper_slope[:, None, :]
        weight, bias = net.linears[top]
        constant = constant + coefficients @ bias
        coefficients = coefficients @ weight
        top -= 1
    for depth in reversed(range(top + 1)):
        relaxation = relaxations[depth]
        positive, negative = coefficients.clamp(min=0), coefficients.clamp(max=0)
        constant = constant + _batched_dot(positive, relaxation.lower_offset) + _batched_dot(negative, relaxation.upper_offset)
        coefficients = positive * relaxation.lower_slope[:, None, :] + negative * relaxation.upper_slope[:, None, :]
        if depth > 0:
            weight, bias = net.linears[depth]
            constant = constant + coefficients @ bias
            coefficients = coefficients @ weight
    return torch.einsum("pmh,phd->pmd", coefficients, first.weight), constant + _batched_dot(coefficients, first.bias)


def _shared_matmul(matrix: torch.Tensor, batch: torch.Tensor) -> torch.Tensor:
    """(M, m, d) = matrix (m, h) @ batch[p] (h, d) for every p, as one GEMM."""
    count, rows, columns = batch.shape
    product = matrix @ batch.permute(1, 0, 2).reshape(rows, count * columns)
    return product.reshape(len(matrix), count, columns).permute(1, 0, 2)


def _batched_dot(coefficients: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """(M, m): coefficients (M, m, h) . vectors (M, h)."""
    return torch.bmm(coefficients, vectors[:, :, None])[:, :, 0]
