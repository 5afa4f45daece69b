"""Label rules: how points on the manifold get their class, from their chart coordinates.

Each rule draws chart points with `sample(n_samples, rng) -> (u, y)` and, where the class is a
function of position, labels any chart point with `label_of(u)` (for ground-truth maps).
Rules that define the data distribution themselves (blobs) sample around their centres; all
others sample the manifold uniformly by volume (`Manifold.sample_chart`).

`LABEL_RULES` maps a scene's `labels.rule` to its class; a new rule is a `LabelRule` subclass
with a `rule` name, a spec class in `config/scene.py` with the same tag, and an entry here.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np

from simulator.config.scene import ClustersLabels, HalfSpaceLabels, LabelSpec
from simulator.errors import SceneError
from simulator.manifolds.base import Manifold


class LabelRule(ABC):
    """Base: sample the manifold uniformly and label each point with `label_of`.

    `rng` is for rules that draw something when built (random blob centres and classes).
    """

    rule: str = ""  # the scene file's `labels.rule`
    has_label_map = True  # False where the class is not a function of position

    def __init__(self, spec: LabelSpec, manifold: Manifold, rng: np.random.Generator):
        self.spec = spec
        self.manifold = manifold
        self.n_classes = spec.n_classes
        self.low = np.asarray(manifold.chart_low, dtype=float)
        self.width = np.asarray(manifold.chart_high, dtype=float) - self.low

    def sample(self, n_samples: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Chart points (n_samples, k) and integer labels (n_samples,)."""
        u = self.manifold.sample_chart(n_samples, rng)
        return u, self.label_of(u)

    @abstractmethod
    def label_of(self, u: np.ndarray) -> np.ndarray:
        """Class of each chart point u (..., k) -> (...,)."""

    def fix_for_missing_class(self, label: int) -> str:
        """How to change the scene when class `label` got (almost) no training points: the fix
        part of the error `simulator.data.make_dataset` raises. Rules whose settings can leave a
        class out say which setting; this default covers chance (few points)."""
        return "raise data.n_train so that every class gets points"

    def input_offset(self, u: np.ndarray, y: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
        """A class-dependent displacement (N, n) of the input points off the manifold, or None.
        Only rules whose classes differ off the manifold (off-manifold fur) have one."""
        return None

    def feature_directions(self, u: np.ndarray) -> dict[str, np.ndarray]:
        """Unit input-space directions (N, n) of the features that carry the class, by name,
        for rules built from named features (empty otherwise). Attacks report how much of each
        adversarial perturbation goes along each of them."""
        return {}

    def _cell(self, u: np.ndarray, cells: int) -> np.ndarray:
        """Index of the cell of u along each axis when the box is cut into `cells` slabs."""
        position = (np.asarray(u) - self.low) / self.width
        return np.clip(np.floor(position * cells), 0, cells - 1).astype(int)


class Clusters(LabelRule):
    """Gaussian blobs in chart coordinates, one class per blob."""

    rule = "clusters"

    def __init__(self, spec: ClustersLabels, manifold: Manifold, rng: np.random.Generator):
        super().__init__(spec, manifold, rng)
        k = manifold.dim
        if spec.layout == "grid":
            per_axis = round(spec.n_clusters ** (1.0 / k))
            index = np.stack(np.meshgrid(*[np.arange(per_axis)] * k, indexing="ij"), -1).reshape(-1, k)
            self.centers = self.low + (index + 0.5) / per_axis * self.width
            # Checkerboard over the grid: neighbouring blobs always belong to different classes.
            alternating = index.sum(axis=1) % spec.n_classes
        else:
            self.centers = self.low + rng.random((spec.n_clusters, k)) * self.width
            alternating = np.arange(spec.n_clusters) % spec.n_classes
        if spec.assignment == "alternating":
            self.center_labels = alternating
        else:
            self.center_labels = rng.integers(0, spec.n_classes, spec.n_clusters)
        self.std = spec.spread * self.width

    def sample(self, n_samples, rng):
        which = rng.integers(0, len(self.centers), n_samples)
        u = self.centers[which] + rng.standard_normal((n_samples, self.manifold.dim)) * self.std
        u = self._into_box(u, which, rng)
        return u, self.center_labels[which]

    def _into_box(self, u, which, rng):
        periodic = np.asarray(self.manifold.periodic, dtype=bool)
        u[:, periodic] = self.low[periodic] + np.mod(u[:, periodic] - self.low[periodic], self.width[periodic])
        # Redraw the (few) samples that left a non-periodic box, so blobs stay Gaussian inside it.
        for _ in range(1000):
            outside = np.any(((u < self.low) | (u > self.low + self.width)) & ~periodic, axis=1)
            if not outside.any():
                return u
            fresh = self.centers[which[outside]] + rng.standard_normal((outside.sum(), u.shape[1])) * self.std
            fresh[:, periodic] = u[outside][:, periodic]
            u[outside] = fresh
        return np.clip(u, self.low, self.low + self.width)

    def fix_for_missing_class(self, label):
        present = sorted({int(c) for c in self.center_labels})
        if label in present:  # a blob has the class: it drew too few of the points
            return f"raise data.n_train (the points are shared among {len(self.centers)} blobs)"
        if self.spec.assignment == "random":
            return (f"no blob has class {label} (labels.assignment: random gave the {len(self.centers)} blobs the "
                    f"classes {present}); use assignment: alternating, more labels.n_clusters, or another seed")
        return (f"no blob has class {label} (the {len(self.centers)} blobs alternate through classes {present} "
                f"only); lower labels.n_classes to {len(present)} or raise labels.n_clusters")

    def label_of(self, u):
        """Class of the nearest blob centre."""
        u = np.asarray(u)
        distance = np.linalg.norm((u[..., None, :] - self.centers) / self.width, axis=-1)
        return self.center_labels[np.argmin(distance, axis=-1)]


class HalfSpace(LabelRule):
    rule = "half_space"

    def __init__(self, spec: HalfSpaceLabels, manifold: Manifold, rng: np.random.Generator):
        super().__init__(spec, manifold, rng)
        direction = np.zeros(manifold.dim) if spec.direction is None else np.asarray(spec.direction, float)
        if spec.direction is None:
            direction[0] = 1.0
        norm = np.linalg.norm(direction)
        if norm == 0:
            raise SceneError("labels.direction: must not be the zero vector; give the normal of the split")
        self.direction = direction / norm
        self.center = self.low + self.width / 2

    def label_of(self, u):
        return ((np.asarray(u) - self.center) @ self.direction > self.spec.offset).astype(int)

    def fix_for_missing_class(self, label):
        # The chart box reaches this far from its centre along the direction.
        reach = float(np.abs(self.direction) @ (self.width / 2))
        if abs(self.spec.offset) < reach:
            return super().fix_for_missing_class(label)
        return (f"labels.offset {self.spec.offset:g} puts the splitting hyperplane outside the chart box, which "
                f"reaches only {reach:.3g} from its centre along labels.direction; use an offset between "
                f"{-reach:.3g} and {reach:.3g} (0 splits the box in half)")


class Stripes(LabelRule):
    rule = "stripes"

    def label_of(self, u):
        stripe = self._cell(u, self.spec.n_stripes)[..., self.spec.axis]
        return stripe % self.n_classes

    def fix_for_missing_class(self, label):
        if label < self.spec.n_stripes:
            return super().fix_for_missing_class(label)
        return (f"labels.n_stripes {self.spec.n_stripes} gives only {self.spec.n_stripes} classes; raise it to "
                f"at least labels.n_classes ({self.n_classes}) or lower labels.n_classes")


class Checkerboard(LabelRule):
    """Classes alternate over a checkerboard of the chart box. With `sampling: grid` the first
    points drawn are the cell centres (Melamed et al.'s 5 x 5 chessboard of training points)."""

    rule = "checkerboard"

    def sample(self, n_samples, rng):
        if self.spec.sampling != "grid":
            return super().sample(n_samples, rng)
        grid = self.cell_centres()[:n_samples]
        # The rest are uniform by volume, as without the grid (the test points of a grid scene).
        rest = self.manifold.sample_chart(n_samples - len(grid), rng)
        u = np.concatenate([grid, rest])
        return u, self.label_of(u)

    def cell_centres(self) -> np.ndarray:
        """The centre of every cell of the chart box, (cells_per_axis**k, k), first axis slowest."""
        cells, k = self.spec.cells_per_axis, self.manifold.dim
        index = np.stack(np.meshgrid(*[np.arange(cells)] * k, indexing="ij"), -1).reshape(-1, k)
        return self.low + (index + 0.5) / cells * self.width

    def label_of(self, u):
        n_axes = self.spec.n_axes or self.manifold.dim
        cells = self._cell(u, self.spec.cells_per_axis)[..., :n_axes]
        return cells.sum(axis=-1) % self.n_classes

    def fix_for_missing_class(self, label):
        n_axes = self.spec.n_axes or self.manifold.dim
        reachable = n_axes * (self.spec.cells_per_axis - 1) + 1  # cell-index sums 0 .. n_axes * (cells - 1)
        if label < reachable:
            return super().fix_for_missing_class(label)
        return (f"labels.cells_per_axis {self.spec.cells_per_axis} over {n_axes} axes gives only {reachable} "
                f"classes; raise it or lower labels.n_classes to {reachable}")


class RandomPerPoint(LabelRule):
    """Independent random classes: there is nothing to generalise, only to memorise."""

    rule = "random"
    has_label_map = False

    def sample(self, n_samples, rng):
        u = self.manifold.sample_chart(n_samples, rng)
        return u, rng.integers(0, self.n_classes, n_samples)

    def label_of(self, u):
        raise ValueError("random labels are drawn per point; there is no label map to evaluate")


class ShapeAndFur(LabelRule):
    """A large "shape" feature and a tiny "fur" feature that both predict the class
    (see `simulator.config.scene.ShapeAndFurLabels`).

    Sampling: the class y is a fair coin; the chart point is uniform by volume, then its side of
    the box along the shape axis is set to agree with y with probability shape_reliability, and
    its fur sign s (+1 for class 1) with probability fur_reliability. On-manifold fur puts the
    point at chart coordinate centre + s * fur_size on the fur axis; off-manifold fur is
    `input_offset`, s * fur_size times the unit normal.
    """

    rule = "shape_and_fur"
    has_label_map = False  # the fur sign is not a function of the chart point for fur off

    def sample(self, n_samples, rng):
        spec = self.spec
        u = self.manifold.sample_chart(n_samples, rng)
        y = rng.integers(0, 2, n_samples)
        centre = self.low + self.width / 2
        axis = spec.shape_axis
        shape_sign = self._agreeing_sign(y, spec.shape_reliability, rng)
        u[:, axis] = centre[axis] + shape_sign * np.abs(u[:, axis] - centre[axis])
        if spec.fur_location == "on":
            fur_sign = self._agreeing_sign(y, spec.fur_reliability, rng)
            u[:, spec.fur_axis] = centre[spec.fur_axis] + fur_sign * spec.fur_size
        return u, y

    def input_offset(self, u, y, rng):
        if self.spec.fur_location == "on":
            return None
        fur_sign = self._agreeing_sign(y, self.spec.fur_reliability, rng)
        return fur_sign[:, None] * self.spec.fur_size * self.manifold.unit_normal(u)

    @staticmethod
    def _agreeing_sign(y, reliability, rng):
        """+1 for class 1, -1 for class 0, flipped with probability 1 - reliability."""
        sign = 2 * np.asarray(y) - 1
        return np.where(rng.random(len(sign)) < reliability, sign, -sign)

    def label_of(self, u):
        # The shape side, the only feature a chart point determines; the class itself is not a
        # function of position (has_label_map is False).
        centre = (self.low + self.width / 2)[self.spec.shape_axis]
        return (np.asarray(u)[..., self.spec.shape_axis] > centre).astype(int)

    def feature_directions(self, u):
        spec = self.spec
        jacobian = self.manifold.jacobian(u)  # (N, n, k): columns are the chart directions
        shape = jacobian[..., spec.shape_axis]
        if spec.fur_location == "on":
            fur = jacobian[..., spec.fur_axis]
        else:
            fur = self.manifold.unit_normal(u)
        return {"shape": _unit(shape), "fur": _unit(fur)}


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.linalg.norm(vectors, axis=-1, keepdims=True)


class ByComponent(LabelRule):
    rule = "component"

    def label_of(self, u):
        return np.asarray(self.manifold.component(u), dtype=int)


# Rule name (the scene file's `labels.rule`, a tag of `config.scene.LabelSpec`) -> class.
LABEL_RULES: dict[str, type[LabelRule]] = {
    cls.rule: cls for cls in (Clusters, HalfSpace, Stripes, Checkerboard, RandomPerPoint, ByComponent, ShapeAndFur)
}


def make_label_rule(spec: LabelSpec, manifold: Manifold, rng: np.random.Generator) -> LabelRule:
    """The rule for `spec`; `rng` places random blob centres and classes."""
    return LABEL_RULES[spec.rule](spec, manifold, rng)
