"""Decoder Jacobians J = dD/dz (n x k per image): batched forward mode against per-pixel backward passes.

The tangent space of the paper's autoencoder manifold at an image is the column space of J. Public
reproductions build J one output pixel at a time (one reverse-mode pass per pixel, n = 784 passes
for Fashion-MNIST; `torch.autograd.functional.jacobian` does the same, per image). Ours pushes the
k latent basis directions through the decoder in forward mode for all images at once
(`torch.func.vmap(torch.func.jacfwd(decoder))`), about k forward passes.

Methods timed on the same decoder and latent codes (the Fashion-MNIST autoencoder of
`simulator.real`, MLP 784-256-128-k mirrored, GELU, sigmoid output, briefly trained on the Debian
package's images when present; timing and agreement do not depend on how well it is trained):

    forward      decoder_jacobians: vmap(jacfwd), the whole batch at once            (ours)
    per-pixel    decoder_jacobians_backward: n backward passes, each batched over the images
    per-image    torch.autograd.functional.jacobian per image (n backward passes per image)
    vmap-jacrev  vmap(jacrev): batched reverse mode (n vector-Jacobian products, vectorised)

    python benchmarks/jacobian_speed.py [--latent 10 20 40] [--batch 64] [--repeats 3] [--per-image 8]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch
from torch.func import jacrev, vmap

from simulator.real.autoencoder import decoder_jacobians, decoder_jacobians_backward, train_autoencoder


def timed(function, repeats: int):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def images(count: int) -> np.ndarray:
    try:
        from simulator.real.datasets import load_fashion_mnist

        return load_fashion_mnist().subset(count, 1, np.random.default_rng(0)).flat("train")
    except Exception as error:  # noqa: BLE001 - the benchmark still times a random-image decoder
        print(f"(Fashion-MNIST not available: {error}; using random images)")
        return np.random.default_rng(0).random((count, 784), dtype=np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latent", type=int, nargs="+", default=[10, 20, 40], help="bottleneck sizes k")
    parser.add_argument("--batch", type=int, default=64, help="images per batch")
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats (median reported)")
    parser.add_argument("--per-image", type=int, default=8, help="images timed with the per-image method")
    parser.add_argument("--train-steps", type=int, default=300, help="autoencoder steps before timing")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    x = images(4000)
    rows = []
    for k in args.latent:
        model, _ = train_autoencoder(x, k, hidden=[256, 128], steps=args.train_steps, seed=0)
        decoder = model.decoder
        with torch.no_grad():
            z = model.encode(torch.as_tensor(x[:args.batch]))
        decoder_jacobians(decoder, z[:2])  # warm-up (first forward-mode call builds decompositions)
        t_forward, j_forward = timed(lambda: decoder_jacobians(decoder, z), args.repeats)
        t_pixel, j_pixel = timed(lambda: decoder_jacobians_backward(decoder, z), args.repeats)

        def one(code):
            return decoder(code.unsqueeze(0))[0]

        few = z[:args.per_image]
        t_image, j_image = timed(lambda: torch.stack([torch.autograd.functional.jacobian(one, c) for c in few]),
                                 args.repeats)
        t_image *= args.batch / len(few)  # extrapolated to the whole batch
        t_jacrev, j_jacrev = timed(lambda: vmap(jacrev(one))(z), args.repeats)
        scale = j_pixel.abs().max().item()
        rows.append({
            "k": k, "forward": t_forward, "per-pixel": t_pixel, "per-image": t_image, "vmap-jacrev": t_jacrev,
            "max|diff| per-pixel": (j_forward - j_pixel).abs().max().item() / scale,
            "max|diff| per-image": (j_forward[:len(few)] - j_image).abs().max().item() / scale,
            "max|diff| jacrev": (j_forward - j_jacrev).abs().max().item() / scale,
        })
        print(f"k={k}: done", flush=True)

    print(f"\nn = 784, batch of {args.batch} images; seconds per batch (median of {args.repeats}); "
          f"per-image extrapolated from {args.per_image} images")
    print("| k | forward (ours) | per-pixel backward | speed-up | per-image autograd.functional.jacobian | speed-up "
          "| vmap(jacrev) | speed-up | max rel. diff vs per-pixel / per-image / jacrev |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['k']} | {r['forward']:.4f} | {r['per-pixel']:.3f} | {r['per-pixel'] / r['forward']:.0f}x | "
              f"{r['per-image']:.2f} | {r['per-image'] / r['forward']:.0f}x | {r['vmap-jacrev']:.4f} | "
              f"{r['vmap-jacrev'] / r['forward']:.1f}x | {r['max|diff| per-pixel']:.1e} / "
              f"{r['max|diff| per-image']:.1e} / {r['max|diff| jacrev']:.1e} |")


if __name__ == "__main__":
    main()
