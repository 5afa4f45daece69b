"""The one optimiser factory: every training loop (a scene's MLP, the stacked multi-seed models,
the real-image autoencoder and classifier) builds its optimiser here, and a scene's MLP takes
its steps through `optimizer_step`, which also serves optimisers that need a closure (L-BFGS).

    optimizer = make_optimizer(model.parameters(), "adam", lr=3e-3, weight_decay=0.0)
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from simulator.config.scene import LBFGS_HISTORY, LBFGS_ITERATIONS

# The names a scene's `train.optimizer` may take (tests check the schema against them).
OPTIMIZERS = ("adam", "sgd", "lbfgs")
FIRST_ORDER = ("adam", "sgd")


def make_optimizer(parameters: Iterable[torch.Tensor], name: str, *, lr: float, weight_decay: float,
                   momentum: float = 0.0) -> torch.optim.Optimizer:
    """torch.optim.Adam, SGD or LBFGS over `parameters`.

    Adam and SGD apply coupled L2 `weight_decay` themselves (as in torch.optim); torch's LBFGS has
    no weight decay, so `optimizer_step` adds the same penalty to its loss. `momentum` is SGD's
    (the others ignore it); 0.0 is torch's own default. An L-BFGS step runs up to LBFGS_ITERATIONS
    quasi-Newton iterations with strong-Wolfe line searches.
    """
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=momentum, weight_decay=weight_decay)
    if name == "lbfgs":
        return torch.optim.LBFGS(parameters, lr=lr, max_iter=LBFGS_ITERATIONS, history_size=LBFGS_HISTORY,
                                 line_search_fn="strong_wolfe")
    raise ValueError(f"optimizer: must be one of {OPTIMIZERS}, got {name!r}")


def optimizer_step(optimizer: torch.optim.Optimizer, batch_loss: Callable[[], tuple[torch.Tensor, torch.Tensor]],
                   weight_decay: float) -> tuple[torch.Tensor, torch.Tensor]:
    """One update of `optimizer` on the loss `batch_loss()` -> (loss, logits); returns the (loss,
    logits) at the weights before the update.

    L-BFGS evaluates the loss several times along its line search (on the same batch), and is
    restarted from the gradient after a step that did not move; its loss gets the penalty weight_decay / 2 * |theta|^2, whose gradient weight_decay * theta is the
    coupled weight decay Adam and SGD add to their gradients.
    """
    if not isinstance(optimizer, torch.optim.LBFGS):
        loss, logits = batch_loss()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach(), logits.detach()
    parameters = [p for group in optimizer.param_groups for p in group["params"]]
    first: list[tuple[torch.Tensor, torch.Tensor]] = []

    def closure() -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        loss, logits = batch_loss()
        if not first:
            first.append((loss.detach(), logits.detach()))
        if weight_decay:
            loss = loss + 0.5 * weight_decay * sum(p.pow(2).sum() for p in parameters)
        loss.backward()
        return loss

    before = torch.cat([p.detach().flatten() for p in parameters])
    optimizer.step(closure)
    if torch.equal(before, torch.cat([p.detach().flatten() for p in parameters])):
        # Nothing moved: either torch's LBFGS found the loss converged (largest gradient entry
        # below its tolerance_grad, 1e-7; full-batch runs get there in a few steps and stay), or
        # the line search found no decrease along the quasi-Newton direction (on a ReLU network in
        # float32 this can happen well before convergence), after which torch's LBFGS would search
        # the same direction at every later step. Restart from the gradient, dropping the
        # curvature pairs (the usual remedy for a failed line search; a no-op once converged).
        optimizer.state.clear()
    return first[0]
