"""Classifiers for the real-image experiment, trained on the same images as the autoencoder.

Every model maps flattened images (N, n) to logits (N, C) and exposes `features(x)` (the last
hidden layer), like the synthetic scenes' MLP, so the attacks, tangent fractions and stretch
spectra run on them unchanged.

    model, info = train_classifier(x_train, y_train, image_shape=(1, 28, 28), architecture="cnn")
"""

from __future__ import annotations

import time

import numpy as np
import torch
from torch import nn

from simulator.errors import TrainingError
from simulator.models import ACTIVATIONS, MLP
from simulator.real.streaming import ImageFiles, image_batches, image_chunks
from simulator.seeding import torch_generator, torch_seed
from simulator.training.loop import shuffled_batches
from simulator.training.optimizers import make_optimizer


class SmallCNN(nn.Module):
    """Flattened image -> conv(3x3)+act+maxpool(2) per entry of `channels` -> dense layers -> logits."""

    def __init__(self, image_shape: tuple[int, int, int], n_classes: int, channels: list[int] = (16, 32),
                 hidden: list[int] = (128,), activation: str = "relu"):
        super().__init__()
        self.image_shape = tuple(image_shape)
        layers: list[nn.Module] = []
        width, (height, breadth) = image_shape[0], image_shape[1:]
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), ACTIVATIONS[activation](), nn.MaxPool2d(2)]
            width, height, breadth = out, height // 2, breadth // 2
        if height < 1 or breadth < 1:
            raise ValueError(f"classifier.channels: {len(channels)} pooling layers shrink a {image_shape[1:]} image to "
                             f"nothing; use fewer")
        self.conv = nn.Sequential(*layers, nn.Flatten())
        dense: list[nn.Module] = []
        width = width * height * breadth
        for out in hidden:
            dense += [nn.Linear(width, out), ACTIVATIONS[activation]()]
            width = out
        self.dense = nn.Sequential(*dense)
        self.head = nn.Linear(width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.dense(self.conv(x.reshape(-1, *self.image_shape)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def build_classifier(architecture: str, image_shape: tuple[int, int, int], n_classes: int,
                     hidden: list[int] = (256, 256), channels: list[int] = (16, 32),
                     activation: str = "relu") -> nn.Module:
    """'mlp': the simulator's MLP on flattened pixels; 'cnn': `SmallCNN`."""
    if architecture == "mlp":
        return MLP(int(np.prod(image_shape)), list(hidden), n_classes, activation)
    if architecture == "cnn":
        return SmallCNN(image_shape, n_classes, list(channels), list(hidden), activation)
    raise ValueError(f"classifier.architecture: {architecture!r} is not known; choose mlp or cnn")


def accuracy(model: nn.Module, x, y, chunk: int = 4096, workers: int | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) in evaluation batches; x: rows or an image array (all logits
    at once, as always), or lazy `ImageFiles` (streamed: per-chunk sums, never every logit);
    y: labels (tensor or array)."""
    device = next(model.parameters()).device
    if isinstance(x, torch.Tensor):
        x = x.cpu().numpy()
    y = torch.as_tensor(np.asarray(y.cpu() if isinstance(y, torch.Tensor) else y), dtype=torch.long, device=device)
    with torch.no_grad():
        if not isinstance(x, ImageFiles):
            logits = torch.cat([model(part) for part in image_chunks(x, chunk, device, workers)])
            return (nn.functional.cross_entropy(logits, y).item(), (logits.argmax(1) == y).float().mean().item())
        loss = correct = 0.0
        start = 0
        for rows in image_chunks(x, chunk, device, workers):
            logits, labels = model(rows), y[start:start + len(rows)]
            loss += float(nn.functional.cross_entropy(logits, labels, reduction="sum"))
            correct += float((logits.argmax(1) == labels).sum())
            start += len(rows)
    return loss / max(start, 1), correct / max(start, 1)


def train_classifier(x_train, y_train, image_shape: tuple[int, int, int], architecture: str = "mlp",
                     hidden: list[int] = (256, 256), channels: list[int] = (16, 32), activation: str = "relu",
                     steps: int = 2000, batch_size: int = 128, lr: float = 1e-3, weight_decay: float = 0.0,
                     seed: int = 0, device: str | torch.device = "cpu", x_test=None, y_test=None,
                     n_classes: int | None = None, workers: int | None = None):
    """Train with Adam and cross-entropy on images x_train (rows (N, n), an array, or lazy
    `ImageFiles` read batch by batch: the same batches, the same weights); seeded.

    Returns (model in eval mode on `device`, info {train_accuracy, test_accuracy, loss, seconds, steps, history}).
    """
    device = torch.device(device)
    if isinstance(x_train, torch.Tensor):
        x_train = x_train.cpu().numpy()
    y_train = torch.as_tensor(np.asarray(y_train), dtype=torch.long, device=device)
    n_classes = n_classes or int(y_train.max()) + 1
    torch.manual_seed(torch_seed(seed, "classifier_init"))
    model = build_classifier(architecture, image_shape, n_classes, hidden, channels, activation).to(device)
    generator = torch_generator(seed, "classifier_batches")
    optimizer = make_optimizer(model.parameters(), "adam", lr=lr, weight_decay=weight_decay)
    batch_size = min(batch_size, len(x_train))
    # Running sums stay on the device and reach the host once per log interval (a GPU keeps going).
    history, started = [], time.perf_counter()
    running_loss = torch.zeros((), device=device)
    running_correct = torch.zeros((), device=device)
    log_every = max(1, steps // 100)
    model.train()
    batches = image_batches(x_train, shuffled_batches(len(x_train), batch_size, generator), steps, device, workers)
    for step, (rows, index) in zip(range(1, steps + 1), batches):
        labels = y_train[index.to(device)]
        logits = model(rows)
        loss = nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running_loss += loss.detach()
        running_correct += (logits.argmax(1) == labels).float().mean().detach()
        if step % log_every == 0 or step == steps:
            count = log_every if step % log_every == 0 else step % log_every
            mean_loss = running_loss.item() / count
            if not np.isfinite(mean_loss):
                raise TrainingError(f"Classifier training diverged at step {step}; lower classifier.lr (now {lr:g}).")
            history.append({"step": step, "loss": mean_loss, "accuracy": running_correct.item() / count})
            running_loss.zero_()
            running_correct.zero_()
    batches.close()  # a lazy set's loader workers, or the in-memory device copy, are let go now
    model.eval()
    loss, train_accuracy = accuracy(model, x_train, y_train, workers=workers)
    info = {"steps": steps, "seconds": time.perf_counter() - started, "loss": loss, "train_accuracy": train_accuracy,
            "test_accuracy": None, "history": history, "architecture": architecture}
    if x_test is not None:
        info["test_accuracy"] = accuracy(model, x_test, y_test, workers=workers)[1]
    return model, info
