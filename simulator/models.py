"""The classifier: a plain MLP whose penultimate features are exposed for stretch measurements."""

from __future__ import annotations

import torch
from torch import nn

from simulator.config.scene import ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


class MLP(nn.Module):
    """x (..., in_dim) -> logits (..., n_classes); `features(x)` gives the last hidden layer."""

    def __init__(self, in_dim: int, hidden: list[int], n_classes: int, activation: str = "relu",
                 bias: bool = True, init_scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for out in hidden:
            layers += [nn.Linear(width, out, bias=bias), ACTIVATIONS[activation]()]
            width = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes, bias=bias)
        if init_scale != 1.0:
            # Scale PyTorch's default (Kaiming-uniform) init: small init ~ "rich"/feature-learning regime.
            with torch.no_grad():
                for parameter in self.parameters():
                    parameter.mul_(init_scale)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def first_layer_split(self) -> tuple[nn.Linear, nn.Module, nn.Module] | None:
        """(first layer z = W1 x + b1, the features as a function of z, the logits as a function
        of z); None without hidden layers. The first layer is linear, so along a line x + t d its
        output is z + t W1 d, and d features / dx = (d features / dz) W1: measurements can work
        in the first hidden width instead of the input dimension n."""
        if not len(self.body):
            return None
        rest = self.body[1:]
        return self.body[0], rest, nn.Sequential(*rest, self.head)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def build_model(spec: ModelSpec, in_dim: int, n_classes: int) -> MLP:
    return MLP(in_dim, list(spec.hidden), n_classes, spec.activation, spec.bias, spec.init_scale)
