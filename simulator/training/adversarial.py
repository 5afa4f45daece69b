"""Adversarial training (`train.adversarial` in a scene): Madry et al., arXiv 1706.06083.

Each training batch has a share `fraction` of its points replaced by their worst case within an
L2 ball of radius epsilon, found by `BoundedProjectedPGD` against the model being trained,
confined to the free space, the tangent space (on-manifold adversarial training, Stutz et al.
2019) or the normal space. The two explanations predict different outcomes that a run
measures: the dimpled-manifold paper says it only deepens the dimples (the boundary stays
along the manifold, further from the points); the stretchy-features view says it removes the
non-robust feature (the gradient turns towards the robust one).
"""

from __future__ import annotations

import math

import torch

from simulator.attacks.bounded_pgd import BoundedProjectedPGD, bounded_budget
from simulator.attacks.operators import Subspace
from simulator.config.scene import Scene
from simulator.data import Dataset
from simulator.geometry.scale import data_radius


def resolved_adversarial_settings(scene: Scene, data: Dataset) -> dict:
    """`train.adversarial` with its data-dependent defaults filled in (input units)."""
    spec = scene.train.adversarial
    radius = data_radius(scene.manifold.build().immersion(data.u_train))
    budget = bounded_budget(spec.epsilon, spec.steps, spec.step_size, radius)
    return {"mode": spec.mode, **budget, "fraction": spec.fraction}


class AdversarialBatches:
    """Replaces the first `fraction` of each (already shuffled) batch by adversarial examples."""

    def __init__(self, settings: dict, tangent_train: Subspace | None):
        self.settings = settings
        self.tangent_train = tangent_train  # the training points' tangent spaces; needed for on/off

    def __call__(self, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        count = math.ceil(self.settings["fraction"] * len(x))
        attack = BoundedProjectedPGD(model, self.settings["epsilon"], self.settings["steps"],
                                     self.settings["step_size"], mode=self.settings["mode"])
        bases = None if self.settings["mode"] == "free" else self.tangent_train.select(index[:count])
        delta = attack(x[:count], label=y[:count], tangent_bases=bases)
        return torch.cat([x[:count] + delta, x[count:]])
