"""The paper's estimate of the data manifold: an autoencoder and its decoder's tangent spaces.

Shamir et al. train an autoencoder with a k-dim bottleneck; at a test image x they take
z = E(x) and use the column space of the decoder Jacobian J = dD/dz (n x k) as the tangent
space of the image manifold at x. Here J is computed by *batched forward-mode* autodiff
(`torch.func.vmap(torch.func.jacfwd(decoder))`): k Jacobian-vector products per image, all images
at once, instead of one backward pass per output pixel (n = 784 of them for Fashion-MNIST).

    model, info = train_autoencoder(x_train, latent_dim=10, x_test=x_test)
    bases, singular_values = decoder_tangent_bases(model.decoder, model.encode(x))   # (N, n, k), (N, k)
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn
from torch.func import jacfwd, vmap

from simulator.errors import TrainingError
from simulator.seeding import torch_generator, torch_seed
from simulator.training.loop import shuffled_batches
from simulator.training.optimizers import make_optimizer

ACTIVATIONS = {"elu": nn.ELU, "gelu": nn.GELU, "tanh": nn.Tanh, "softplus": nn.Softplus, "relu": nn.ReLU}


class Decoder(nn.Module):
    """z (N, k) -> x (N, n): an MLP, then a sigmoid (images in [0, 1]) or an affine map back to the
    data's own units (`shift + scale * output`, for points that are not images)."""

    def __init__(self, latent_dim: int, hidden: list[int], ambient_dim: int, activation: str = "gelu",
                 output: str = "sigmoid", shift: torch.Tensor | None = None, scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = latent_dim
        for out in reversed(hidden):
            layers += [nn.Linear(width, out), ACTIVATIONS[activation]()]
            width = out
        layers.append(nn.Linear(width, ambient_dim))
        self.net = nn.Sequential(*layers)
        self.output = output
        self.register_buffer("shift", torch.zeros(ambient_dim) if shift is None else torch.as_tensor(shift).float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        out = self.net(z)
        return torch.sigmoid(out) if self.output == "sigmoid" else self.shift + self.scale * out


class Encoder(nn.Module):
    """x (N, n) -> z (N, k); standardises with the same (shift, scale) as the decoder."""

    def __init__(self, ambient_dim: int, hidden: list[int], latent_dim: int, activation: str = "gelu",
                 shift: torch.Tensor | None = None, scale: float = 1.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = ambient_dim
        for out in hidden:
            layers += [nn.Linear(width, out), ACTIVATIONS[activation]()]
            width = out
        layers.append(nn.Linear(width, latent_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("shift", torch.zeros(ambient_dim) if shift is None else torch.as_tensor(shift).float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.shift) / self.scale)


class Autoencoder(nn.Module):
    """x (N, n) -> D(E(x)); `encode`, `decode`, and `.encoder` / `.decoder` for Jacobians."""

    def __init__(self, ambient_dim: int, latent_dim: int, hidden: list[int] = (256, 128), activation: str = "gelu",
                 output: str = "sigmoid", shift: torch.Tensor | None = None, scale: float = 1.0):
        super().__init__()
        self.config = {"ambient_dim": ambient_dim, "latent_dim": latent_dim, "hidden": list(hidden),
                       "activation": activation, "output": output}
        self.encoder = Encoder(ambient_dim, list(hidden), latent_dim, activation, shift, scale)
        self.decoder = Decoder(latent_dim, list(hidden), ambient_dim, activation, output, shift, scale)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reconstruction_error(model: Autoencoder, x: torch.Tensor, chunk: int = 4096) -> dict:
    """Mean squared error per coordinate, and the mean of ||x - D(E(x))|| / ||x - mean(x)||."""
    with torch.no_grad():
        recon = torch.cat([model(part) for part in x.split(chunk)])
    error = (x - recon).double()
    spread = (x - x.mean(dim=0)).double().norm(dim=1).clamp_min(1e-12)
    return {"mse": float(error.pow(2).mean()), "rmse": float(error.pow(2).mean().sqrt()),
            "mean_relative_error": float((error.norm(dim=1) / spread).mean())}


def train_autoencoder(x_train, latent_dim: int, hidden: list[int] = (256, 128), activation: str = "gelu",
                      steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                      seed: int = 0, device: str | torch.device = "cpu", x_test=None, output: str | None = None):
    """Train an autoencoder with Adam on rows x_train (N, n); seeded (same seed, same weights on a CPU).

    output: "sigmoid" for data in [0, 1] (images; the default when x_train lies in [0, 1]), else
    "affine" (the decoder ends in the data's own units; inputs are centred and scaled by one number,
    which keeps tangent spaces unchanged). Returns (model in eval mode on `device`, info) with
    info = {reconstruction {train, test}, seconds, steps, history}.
    """
    x_train = torch.as_tensor(np.asarray(x_train), dtype=torch.float32, device=device)
    if output is None:
        output = "sigmoid" if float(x_train.min()) >= 0 and float(x_train.max()) <= 1 else "affine"
    shift = x_train.mean(dim=0)
    scale = float((x_train - shift).pow(2).sum(dim=1).mean().sqrt() / np.sqrt(x_train.shape[1])) or 1.0
    generator = torch_generator(seed, "autoencoder_batches")
    torch.manual_seed(torch_seed(seed, "autoencoder_init"))
    model = Autoencoder(x_train.shape[1], latent_dim, hidden, activation, output, shift.cpu(), scale).to(device)
    optimizer = make_optimizer(model.parameters(), "adam", lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, len(x_train))
    history, started = [], time.perf_counter()
    running = torch.zeros((), device=device)  # on the device: one host sync per log interval
    log_every = max(1, steps // 100)
    model.train()
    for step, index in zip(range(1, steps + 1), shuffled_batches(len(x_train), batch_size, generator)):
        batch = x_train[index.to(device)]
        loss = (model(batch) - batch).pow(2).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.detach()
        if step % log_every == 0 or step == steps:
            mean = running.item() / (log_every if step % log_every == 0 else step % log_every)
            if not np.isfinite(mean):
                raise TrainingError(f"Autoencoder training diverged at step {step} (loss {mean}); lower autoencoder.lr "
                                    f"(now {lr:g}).")
            history.append({"step": step, "loss": mean})
            running.zero_()
    model.eval()
    info = {"steps": steps, "seconds": time.perf_counter() - started, "history": history, "output": output,
            "reconstruction": {"train": reconstruction_error(model, x_train)}}
    if x_test is not None:
        x_test = torch.as_tensor(np.asarray(x_test), dtype=torch.float32, device=device)
        info["reconstruction"]["test"] = reconstruction_error(model, x_test)
    return model, info


# --------------------------------------------------------------------------- decoder Jacobians


def decoder_jacobians(decoder: nn.Module, z: torch.Tensor, chunk: int = 512) -> torch.Tensor:
    """J = dD/dz at each latent code, by batched forward-mode autodiff. (N, k) -> (N, n, k), detached.

    vmap(jacfwd(D)) pushes the k basis tangents of z through the decoder (k JVPs per code, all codes
    in one vectorised pass), which costs about k forward passes instead of n backward passes.
    """

    def decode_one(code: torch.Tensor) -> torch.Tensor:
        return decoder(code.unsqueeze(0))[0]

    with torch.no_grad():  # forward mode needs no tape
        return torch.cat([vmap(jacfwd(decode_one))(part) for part in z.detach().split(chunk)])


def decoder_jacobians_backward(decoder: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """Reference: one reverse-mode pass per output coordinate (what public reproductions do).

    Slow by design (n backward passes, batched over the codes); kept for tests and the benchmark.
    """
    z = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = decoder(z)
        columns = [torch.autograd.grad(out[:, i].sum(), z, retain_graph=i < out.shape[1] - 1)[0]
                   for i in range(out.shape[1])]
    return torch.stack(columns, dim=1).detach()  # (N, n, k)


def orthonormal_bases(jacobians: torch.Tensor) -> torch.Tensor:
    """Q of the reduced QR of each J (N, n, k), signs fixed so diag(R) >= 0: the same basis whatever
    LAPACK's sign convention. Column j spans the first j columns of J."""
    q, r = torch.linalg.qr(jacobians)
    signs = torch.where(torch.diagonal(r, dim1=-2, dim2=-1) < 0, -1.0, 1.0).to(q.dtype)
    return q * signs[:, None, :]


def decoder_tangent_bases(decoder: nn.Module, z: torch.Tensor, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal tangent bases (N, n, k) of the decoder's image at codes z (N, k), and the singular
    values (N, k) of each Jacobian (descending): the spectrum says how many of the k latent directions
    the decoder really uses (a tiny sigma means that basis column is numerically arbitrary)."""
    jacobians = decoder_jacobians(decoder, z, chunk)
    return orthonormal_bases(jacobians), torch.linalg.svdvals(jacobians)


def spectrum_summary(singular_values: torch.Tensor, rank_rtol: float = 1e-3) -> dict:
    """Summaries of the decoder-Jacobian spectra (N, k): mean spectrum, condition numbers, numerical rank."""
    s = singular_values.double().cpu()
    condition = s[:, 0] / s[:, -1].clamp_min(torch.finfo(torch.float64).tiny)
    rank = (s > rank_rtol * s[:, :1]).sum(dim=1).double()
    return {"mean_singular_values": s.mean(dim=0).tolist(), "median_singular_values": s.median(dim=0).values.tolist(),
            "median_condition_number": float(condition.median()), "max_condition_number": float(condition.max()),
            "rank_rtol": rank_rtol, "mean_numerical_rank": float(rank.mean()),
            "share_full_rank": float((rank == s.shape[1]).double().mean())}
