"""The one optimiser factory: every training loop (a scene's MLP, the stacked multi-seed models,
the real-image autoencoder and classifier) builds its optimiser here.

    optimizer = make_optimizer(model.parameters(), "adam", lr=3e-3, weight_decay=0.0)
"""

from __future__ import annotations

from typing import Iterable

import torch

# The names a scene's `train.optimizer` may take (tests check the schema against them).
OPTIMIZERS = ("adam", "sgd")


def make_optimizer(parameters: Iterable[torch.Tensor], name: str, *, lr: float, weight_decay: float,
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """torch.optim.Adam or SGD over `parameters`, with coupled L2 `weight_decay` (as in torch.optim).

    `momentum` is SGD's (Adam has none and ignores it); 0.0 is torch's own default.
    """
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {name!r}")
