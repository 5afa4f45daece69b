"""The classifier: a plain MLP whose penultimate features are exposed for stretch measurements.

With `model.batch_norm` the trained network has a BatchNorm1d after every hidden Linear layer
(Linear -> BatchNorm -> activation, as in Ioffe & Szegedy 2015). Every measurement reads the
network as it classifies after training, in evaluation mode, where batch norm is a fixed
per-unit affine map; `evaluation_network` folds that map into the Linear layer before it, so
snapshots, measurements, certified brackets and renders all see a plain MLP.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Iterator

import torch
from torch import nn

from simulator.config.scene import ModelSpec

ACTIVATIONS = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU, "softplus": nn.Softplus}


class MLP(nn.Module):
    """x (..., in_dim) -> logits (..., n_classes); `features(x)` gives the last hidden layer."""

    def __init__(self, in_dim: int, hidden: list[int], n_classes: int, activation: str = "relu",
                 bias: bool = True, init_scale: float = 1.0, batch_norm: bool = False,
                 head_bias: bool | None = None):
        super().__init__()
        self.in_dim, self.hidden, self.n_classes = in_dim, list(hidden), n_classes
        self.activation, self.batch_norm = activation, batch_norm
        layers: list[nn.Module] = []
        width = in_dim
        for out in hidden:
            layers.append(nn.Linear(width, out, bias=bias))
            if batch_norm:
                layers.append(nn.BatchNorm1d(out))
            layers.append(ACTIVATIONS[activation]())
            width = out
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, n_classes, bias=bias if head_bias is None else head_bias)
        if init_scale != 1.0:
            # Scale PyTorch's default (Kaiming-uniform) init: small init ~ "rich"/feature-learning regime.
            # Batch norm's own scale and shift (1 and 0) are not initial weights of the map and stay.
            with torch.no_grad():
                for module in self.modules():
                    if isinstance(module, nn.Linear):
                        for parameter in module.parameters():
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
    """The network training updates (with batch norm layers when `spec.batch_norm`)."""
    return MLP(in_dim, list(spec.hidden), n_classes, spec.activation, spec.bias, spec.init_scale, spec.batch_norm)


def build_evaluation_model(spec: ModelSpec, in_dim: int, n_classes: int) -> MLP:
    """The plain MLP that snapshots store and measurements read (see `evaluation_network`): with
    batch norm its hidden layers have biases (the folded shifts) whatever `spec.bias` says."""
    return MLP(in_dim, list(spec.hidden), n_classes, spec.activation, spec.bias or spec.batch_norm, spec.init_scale,
               batch_norm=False, head_bias=spec.bias)


@torch.no_grad()
def evaluation_network(model: MLP) -> MLP:
    """`model` in evaluation mode as a plain MLP: each BatchNorm1d, which in evaluation mode maps
    z to gamma (z - running_mean) / sqrt(running_var + eps) + beta, is folded into the Linear layer
    before it (W' = s W, b' = s (b - mean) + beta with s = gamma / sqrt(var + eps), in float64, then
    rounded to the model's dtype). A model without batch norm is returned as an evaluation-mode copy.
    The same function up to float rounding (tests compare the logits)."""
    if not model.batch_norm:
        return copy.deepcopy(model).eval()
    parameter = next(model.parameters())
    with torch.device("meta"):  # shapes only: no draw from torch's global random state
        folded = MLP(model.in_dim, model.hidden, model.n_classes, model.activation, bias=True, batch_norm=False,
                     head_bias=model.head.bias is not None)
    folded = folded.to_empty(device=parameter.device).to(dtype=parameter.dtype)
    linears = [module for module in model.body if isinstance(module, nn.Linear)]
    norms = [module for module in model.body if isinstance(module, nn.BatchNorm1d)]
    targets = [module for module in folded.body if isinstance(module, nn.Linear)]
    for linear, norm, target in zip(linears, norms, targets, strict=True):
        scale = norm.weight.double() / torch.sqrt(norm.running_var.double() + norm.eps)
        bias = linear.bias.double() if linear.bias is not None else torch.zeros_like(scale)
        target.weight.copy_(scale[:, None] * linear.weight.double())
        target.bias.copy_(scale * (bias - norm.running_mean.double()) + norm.bias.double())
    folded.head.load_state_dict(model.head.state_dict())
    return folded.eval()


@contextlib.contextmanager
def evaluation_mode(model: nn.Module) -> Iterator[nn.Module]:
    """`model` in evaluation mode inside the block (batch norm reads its running statistics and
    does not update them), then back in the mode it was in."""
    was_training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(was_training)
