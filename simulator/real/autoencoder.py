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

from simulator.config.real import DECODER_JACOBIAN_CHUNK_BYTES
from simulator.errors import TrainingError
from simulator.real.streaming import ImageFiles, as_rows, image_batches, image_chunks, row_statistics
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


class ConvEncoder(nn.Module):
    """x (N, n) -> z (N, k): standardised as `Encoder`, then per entry of `channels` a 3x3 convolution
    with stride 2 (each halves the sides, rounding up) and the activation, then a linear map to k."""

    def __init__(self, image_shape: tuple[int, int, int], channels: list[int], latent_dim: int,
                 activation: str = "gelu", shift: torch.Tensor | None = None, scale: float = 1.0):
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width, (height, breadth) = image_shape[0], conv_sides(image_shape[1:], 0)
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, stride=2, padding=1), ACTIVATIONS[activation]()]
            width = out
        height, breadth = conv_sides(image_shape[1:], len(channels))
        self.net = nn.Sequential(*layers, nn.Flatten(), nn.Linear(width * height * breadth, latent_dim))
        ambient_dim = int(np.prod(image_shape))
        self.register_buffer("shift", torch.zeros(ambient_dim) if shift is None else torch.as_tensor(shift).float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(((x - self.shift) / self.scale).reshape(-1, *self.image_shape))


class ConvDecoder(nn.Module):
    """z (N, k) -> x (N, n): a linear map to the encoder's last feature maps, then per entry of
    `channels` (in reverse) a 4x4 transposed convolution with stride 2 (doubling the sides), the
    last one to the image's channels, cut to the image size; a sigmoid or affine output as `Decoder`."""

    def __init__(self, latent_dim: int, channels: list[int], image_shape: tuple[int, int, int],
                 activation: str = "gelu", output: str = "sigmoid", shift: torch.Tensor | None = None,
                 scale: float = 1.0):
        super().__init__()
        self.image_shape = tuple(image_shape)
        self.start = (channels[-1], *conv_sides(image_shape[1:], len(channels)))
        self.expand = nn.Sequential(nn.Linear(latent_dim, int(np.prod(self.start))), ACTIVATIONS[activation]())
        layers: list[nn.Module] = []
        widths = [*reversed(channels), image_shape[0]]
        for index, (width, out) in enumerate(zip(widths[:-1], widths[1:])):
            layers.append(nn.ConvTranspose2d(width, out, 4, stride=2, padding=1))
            if index < len(channels) - 1:
                layers.append(ACTIVATIONS[activation]())
        self.net = nn.Sequential(*layers)
        self.output = output
        ambient_dim = int(np.prod(image_shape))
        self.register_buffer("shift", torch.zeros(ambient_dim) if shift is None else torch.as_tensor(shift).float())
        self.register_buffer("scale", torch.tensor(float(scale)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        maps = self.net(self.expand(z).reshape(-1, *self.start))
        out = maps[:, :, :self.image_shape[1], :self.image_shape[2]].reshape(len(z), -1)
        return torch.sigmoid(out) if self.output == "sigmoid" else self.shift + self.scale * out


def conv_sides(sides, layers: int) -> tuple[int, int]:
    """Image sides after `layers` stride-2 convolutions (each rounds up)."""
    height, breadth = sides
    for _ in range(layers):
        height, breadth = (height + 1) // 2, (breadth + 1) // 2
    return height, breadth


class Autoencoder(nn.Module):
    """x (N, n) -> D(E(x)); `encode`, `decode`, and `.encoder` / `.decoder` for Jacobians.

    architecture "mlp": fully connected (`hidden` widths, mirrored); "conv": convolutional
    (`channels`, mirrored, on images of `image_shape`)."""

    def __init__(self, ambient_dim: int, latent_dim: int, hidden: list[int] = (256, 128), activation: str = "gelu",
                 output: str = "sigmoid", shift: torch.Tensor | None = None, scale: float = 1.0,
                 architecture: str = "mlp", channels: list[int] = (32, 64), image_shape=None):
        super().__init__()
        self.config = {"ambient_dim": ambient_dim, "latent_dim": latent_dim, "hidden": list(hidden),
                       "activation": activation, "output": output}
        if architecture == "conv":
            if image_shape is None or int(np.prod(image_shape)) != ambient_dim:
                raise ValueError(f"a convolutional autoencoder needs the image shape of its {ambient_dim} inputs")
            self.config.update(architecture="conv", channels=list(channels), image_shape=list(image_shape))
            self.encoder = ConvEncoder(tuple(image_shape), list(channels), latent_dim, activation, shift, scale)
            self.decoder = ConvDecoder(latent_dim, list(channels), tuple(image_shape), activation, output, shift, scale)
        else:
            self.encoder = Encoder(ambient_dim, list(hidden), latent_dim, activation, shift, scale)
            self.decoder = Decoder(latent_dim, list(hidden), ambient_dim, activation, output, shift, scale)

    @classmethod
    def from_config(cls, config: dict) -> Autoencoder:
        """The (untrained) autoencoder a stored `config` describes; load its state dict next."""
        return cls(config["ambient_dim"], config["latent_dim"], config["hidden"], config["activation"],
                   config["output"], architecture=config.get("architecture", "mlp"),
                   channels=config.get("channels", (32, 64)), image_shape=config.get("image_shape"))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder(x)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


def reconstruction_error(model: Autoencoder, x, chunk: int = 4096, workers: int | None = None,
                         centre: torch.Tensor | None = None) -> dict:
    """Mean squared error per coordinate, and the mean of ||x - D(E(x))|| / ||x - mean(x)||.

    x: rows or an image array (computed whole, as always), or lazy `ImageFiles` (streamed in
    chunks, float64 sums; `centre`: their mean when already known, else one more pass)."""
    device = next(model.parameters()).device
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    if not isinstance(x, ImageFiles):
        x = as_rows(x, device)
        with torch.no_grad():
            recon = torch.cat([model(part) for part in x.split(chunk)])
        error = (x - recon).double()
        spread = (x - x.mean(dim=0)).double().norm(dim=1).clamp_min(1e-12)
        return {"mse": float(error.pow(2).mean()), "rmse": float(error.pow(2).mean().sqrt()),
                "mean_relative_error": float((error.norm(dim=1) / spread).mean())}
    mean = (centre if centre is not None else row_statistics(x, device, workers)["mean"]).to(device)
    squared = relative = 0.0
    count = coordinates = 0
    with torch.no_grad():
        for rows in image_chunks(x, chunk, device, workers):
            error = (rows - model(rows)).double()
            spread = (rows - mean).double().norm(dim=1).clamp_min(1e-12)
            squared += float(error.pow(2).sum())
            relative += float((error.norm(dim=1) / spread).sum())
            count, coordinates = count + len(rows), coordinates + rows.numel()
    mse = squared / coordinates
    return {"mse": mse, "rmse": float(np.sqrt(mse)), "mean_relative_error": relative / count}


def train_autoencoder(x_train, latent_dim: int, hidden: list[int] = (256, 128), activation: str = "gelu",
                      steps: int = 3000, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                      seed: int = 0, device: str | torch.device = "cpu", x_test=None, output: str | None = None,
                      architecture: str = "mlp", channels: list[int] = (32, 64), image_shape=None,
                      workers: int | None = None):
    """Train an autoencoder with Adam on x_train: rows (N, n), images (N, C, H, W), or lazy
    `ImageFiles` (read batch by batch, never whole); seeded (same seed, same weights on a CPU,
    whether the images are in memory or streamed from files, up to the float64 sums of the
    streamed standardisation).

    output: "sigmoid" for data in [0, 1] (images; the default when x_train lies in [0, 1]), else
    "affine" (the decoder ends in the data's own units; inputs are centred and scaled by one number,
    which keeps tangent spaces unchanged). architecture "conv" needs image_shape (C, H, W).
    Returns (model in eval mode on `device`, info) with info = {reconstruction {train, test},
    seconds, steps, history}.
    """
    device = torch.device(device)
    if isinstance(x_train, torch.Tensor):
        x_train = x_train.cpu().numpy()
    statistics = row_statistics(x_train, device, workers)
    if output is None:
        output = "sigmoid" if statistics["min"] >= 0 and statistics["max"] <= 1 else "affine"
    shift, scale = statistics["mean"], statistics["rms"] or 1.0
    ambient_dim = int(np.prod(x_train.shape[1:]))  # not np.shape: it would read lazy images
    generator = torch_generator(seed, "autoencoder_batches")
    torch.manual_seed(torch_seed(seed, "autoencoder_init"))
    model = Autoencoder(ambient_dim, latent_dim, hidden, activation, output, shift.cpu(), scale, architecture,
                        channels, image_shape).to(device)
    optimizer = make_optimizer(model.parameters(), "adam", lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, len(x_train))
    history, started = [], time.perf_counter()
    running = torch.zeros((), device=device)  # on the device: one host sync per log interval
    log_every = max(1, steps // 100)
    model.train()
    batches = image_batches(x_train, shuffled_batches(len(x_train), batch_size, generator), steps, device, workers)
    for step, (batch, _) in zip(range(1, steps + 1), batches):
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
    batches.close()  # a lazy set's loader workers, or the in-memory device copy, are let go now
    model.eval()
    info = {"steps": steps, "seconds": time.perf_counter() - started, "history": history, "output": output,
            "reconstruction": {"train": reconstruction_error(model, x_train, workers=workers, centre=shift)}}
    if x_test is not None:
        info["reconstruction"]["test"] = reconstruction_error(model, x_test, workers=workers)
    return model, info


# --------------------------------------------------------------------------- decoder Jacobians


JACOBIAN_COPIES = 4  # the Jacobian, its QR factor, and the transposed-convolution maps in flight


def jacobian_chunk(ambient_dim: int, latent_dim: int, largest: int = 512) -> int:
    """Codes per forward-mode pass so that a chunk stays within DECODER_JACOBIAN_CHUNK_BYTES."""
    return max(1, min(largest, DECODER_JACOBIAN_CHUNK_BYTES // (JACOBIAN_COPIES * 4 * ambient_dim * latent_dim)))


def decoder_jacobians(decoder: nn.Module, z: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """J = dD/dz at each latent code, by batched forward-mode autodiff. (N, k) -> (N, n, k), detached.

    vmap(jacfwd(D)) pushes the k basis tangents of z through the decoder (k JVPs per code, all codes
    of a chunk in one vectorised pass), which costs about k forward passes instead of n backward
    passes. chunk: codes per pass (default: `jacobian_chunk`, a fixed memory budget).
    """

    def decode_one(code: torch.Tensor) -> torch.Tensor:
        return decoder(code.unsqueeze(0))[0]

    z = z.detach()
    if chunk is None:
        with torch.no_grad():
            chunk = jacobian_chunk(decoder(z[:1]).shape[1], z.shape[1])
    with torch.no_grad():  # forward mode needs no tape
        return torch.cat([vmap(jacfwd(decode_one))(part) for part in z.split(chunk)])


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


def decoder_tangent_bases(decoder: nn.Module, z: torch.Tensor, chunk: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Orthonormal tangent bases (N, n, k) of the decoder's image at codes z (N, k), and the singular
    values (N, k) of each Jacobian (descending): the spectrum says how many of the k latent directions
    the decoder really uses (a tiny sigma means that basis column is numerically arbitrary).

    Computed a chunk of codes at a time (`jacobian_chunk`): only the bases and spectra are kept,
    never all the Jacobians with their QR factors at once."""
    z = z.detach()
    if chunk is None:
        with torch.no_grad():
            chunk = jacobian_chunk(decoder(z[:1]).shape[1], z.shape[1])
    bases, spectra = [], []
    for part in z.split(chunk):
        jacobians = decoder_jacobians(decoder, part, chunk)
        spectra.append(torch.linalg.svdvals(jacobians))
        bases.append(orthonormal_bases(jacobians))
        del jacobians
    return torch.cat(bases), torch.cat(spectra)


def spectrum_summary(singular_values: torch.Tensor, rank_rtol: float = 1e-3) -> dict:
    """Summaries of the decoder-Jacobian spectra (N, k): mean spectrum, condition numbers, numerical rank."""
    s = singular_values.double().cpu()
    condition = s[:, 0] / s[:, -1].clamp_min(torch.finfo(torch.float64).tiny)
    rank = (s > rank_rtol * s[:, :1]).sum(dim=1).double()
    return {"mean_singular_values": s.mean(dim=0).tolist(), "median_singular_values": s.median(dim=0).values.tolist(),
            "median_condition_number": float(condition.median()), "max_condition_number": float(condition.max()),
            "rank_rtol": rank_rtol, "mean_numerical_rank": float(rank.mean()),
            "share_full_rank": float((rank == s.shape[1]).double().mean())}
