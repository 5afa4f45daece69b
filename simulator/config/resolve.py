"""The resolve step: a scene's settings with every data-dependent default filled in.

The schema (config/scene.py, config/real.py) is the only home of fixed defaults. Lengths that
default to a share of the data's scale (step sizes, t_max, tolerances, robust radii) are
resolved here, once per stage run, into frozen settings objects. A stage receives its settings
object whole; the object is recorded in metrics.json (`as_record()`) beside the results, so a
reader sees exactly what was used.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from simulator.attacks.minimal_search import SearchBudget
from simulator.geometry.height import nearest_distances
from simulator.geometry.scale import data_radius
from simulator.seeding import torch_seed

# Default robust-accuracy radii, as shares of the data radius: from a tenth of a typical
# adversarial distance to beyond it.
ROBUST_EPSILON_SHARES = (0.025, 0.05, 0.1, 0.2)


@dataclass(frozen=True)
class MeasureSettings:
    """Resolved `measure.*` settings of a synthetic run (all lengths in input units)."""

    n_points: int
    data_radius: float
    t_max: float
    tolerance: float
    bracket_steps: int
    clinging_epsilon: float
    near_data_radius: float
    height_resolution: int
    final_height_resolution: int
    height_max_points: int
    height_every: int
    stretch_every: int
    thresholds: dict

    def as_record(self) -> dict:
        return asdict(self)


# What runs from before the search were measured with (see `AttackSettings.from_record`).
GREEDY_ONLY = SearchBudget(starts=0, walk_rounds=0, certify=False)


@dataclass(frozen=True)
class AttackSettings:
    """Resolved `measure.attacks.*` settings, for any kind of run."""

    n_points: int
    step_size: float
    seed: int  # torch seed of the random and coordinate subspaces, derived from the scene seed
    max_steps: int
    refine_steps: int
    normal_rounds: int
    loss: str
    modes: tuple
    bootstrap: int
    confidence: float
    robust_epsilons: tuple
    check_with_deepfool: bool
    every_snapshot: bool
    search: SearchBudget

    @classmethod
    def from_record(cls, record: dict) -> "AttackSettings":
        """Settings as `as_record` stored them in metrics.json (runs written before the DeepFool
        and every-snapshot switches were recorded ran with their defaults: on and off; runs
        written before the search and the brackets had the greedy walk alone: no random starts,
        no boundary walk, no certified bounds)."""
        record = {"check_with_deepfool": True, "every_snapshot": False, **record}
        search = SearchBudget(**record["search"]) if "search" in record else GREEDY_ONLY
        return cls(**{**record, "modes": tuple(record["modes"]), "robust_epsilons": tuple(record["robust_epsilons"]),
                      "search": search})

    @property
    def reach(self) -> float:
        """The longest path the greedy walk takes before it reports "not found"."""
        return self.max_steps * self.step_size

    def as_record(self) -> dict:
        return asdict(self)


# Training points whose nearest-neighbour distances set the default near-data radius.
SPACING_QUERIES = 2048


def resolve_measure_settings(spec, x_train_clean: np.ndarray) -> MeasureSettings:
    """`spec` a scene's `measure` section; `x_train_clean` the training points' exact manifold
    positions (N, n), or their host coordinates (N, h), which have the same radius and spacing;
    these set the default lengths."""
    radius = data_radius(x_train_clean)
    # SPACING_QUERIES training points drawn at random (seeded), each against all of them: the exact
    # median over every point took 7 s for Gilmer's 20000 points in 500-D, more than training. A
    # random draw, not the first points: a grid-sampled training set lists its grid first.
    references = x_train_clean
    if len(references) > SPACING_QUERIES:
        references = references[np.random.default_rng(0).permutation(len(references))]
    queries = references[:SPACING_QUERIES]  # a prefix of the references, as exclude_self requires
    spacing = float(np.median(nearest_distances(queries, references, exclude_self=True)))
    t_max = spec.t_max or 0.5 * radius
    return MeasureSettings(
        n_points=spec.n_points,
        data_radius=radius,
        t_max=t_max,
        tolerance=spec.tolerance or t_max / 1000,
        bracket_steps=spec.bracket_steps,
        clinging_epsilon=spec.clinging_epsilon or 0.05 * radius,
        near_data_radius=spec.near_data_radius or 2 * spacing,
        height_resolution=spec.height_resolution,
        final_height_resolution=spec.final_height_resolution,
        height_max_points=spec.height_max_points,
        height_every=spec.height_every,
        stretch_every=spec.stretch_every,
        thresholds=spec.thresholds.model_dump(),
    )


def resolve_attack_settings(spec, seed: int, n_points: int, radius: float,
                            trained_epsilons: tuple = ()) -> AttackSettings:
    """`spec` a `measure.attacks` section, `seed` the scene's seed, `radius` the data radius.

    `trained_epsilons`: radii the model was (or its twin would be) adversarially trained for;
    they join the default robust-accuracy radii so a plain baseline is measured at the same
    radius as its adversarially trained twin.
    """
    # An empty list, like none, asks for the default radii; only "none" adds the trained ones.
    epsilons = spec.robust_epsilons or [share * radius for share in ROBUST_EPSILON_SHARES]
    if spec.robust_epsilons is None:
        epsilons = set(epsilons) | {epsilon for epsilon in trained_epsilons if epsilon is not None}
    return AttackSettings(
        n_points=n_points,
        step_size=spec.step_size or 0.01 * radius,
        seed=torch_seed(seed, "attacks") % 2**31,
        max_steps=spec.max_steps,
        refine_steps=spec.refine_steps,
        normal_rounds=spec.normal_rounds,
        loss=spec.loss,
        modes=tuple(spec.modes),
        bootstrap=spec.bootstrap,
        confidence=spec.confidence,
        robust_epsilons=tuple(sorted(epsilons)),
        check_with_deepfool=spec.check_with_deepfool,
        every_snapshot=spec.every_snapshot,
        search=spec.search.budget(),
    )
