"""How far to trust the autoencoder method: run it where the true manifold is known.

On a synthetic scene the exact tangent basis U of every point is known. Train the same
autoencoder as on real images on the scene's training points, take the decoder-Jacobian
tangent bases at the test points, and compare:

- the principal angles between the estimated and the exact tangent spaces (degrees; 0 = the same
  space, 90 = a direction of one is perpendicular to the other);
- the tangent fraction tau of the classifier's margin gradient with either basis;
- the on/off-manifold attack distances d_on, d_off and MS with either basis (same classifier,
  same points, same attack settings), and their relative change.

    result = calibrate_autoencoder("scenes/sheet_two_class.yaml", n_points=100)
    result["angles_deg"]["median_largest"], result["attacks"]["relative_change"]["on"]
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from simulator.attacks.subspaces import MANIFOLD_MODES, SPECIFICITY_MODES
from simulator.config.loading import load_scene
from simulator.config.real import AutoencoderSpec
from simulator.config.resolve import resolve_attack_settings
from simulator.config.scene import Scene
from simulator.data import make_dataset
from simulator.geometry.scale import data_radius
from simulator.real.autoencoder import (
    decoder_tangent_bases,
    spectrum_summary,
    train_autoencoder,
)
from simulator.runs.loading import load_run
from simulator.stages.attack import attack_arrays
from simulator.stages.measure import tangent_and_stretch
from simulator.training.loop import train

CALIBRATION_MODES = ["free", *SPECIFICITY_MODES]


def principal_angles(estimated: torch.Tensor, exact: torch.Tensor) -> torch.Tensor:
    """Principal angles in degrees (N, min(k1, k2)), ascending, between span(estimated[i]) and
    span(exact[i]) for orthonormal bases (N, n, k1), (N, n, k2).

    As scipy.linalg.subspace_angles: cosines from the singular values of A^T B, sines from those of
    the smaller basis' residual off the larger span; arcsin for the small angles (accurate to ~1e-5
    deg even with float32 bases, where arccos near 1 loses half the digits), arccos for the rest.
    """
    a, b = estimated.double(), exact.double()
    if a.shape[-1] > b.shape[-1]:
        a, b = b, a
    cosines = torch.linalg.svdvals(a.transpose(1, 2) @ b).clamp(0, 1)  # descending
    residual = a - b @ (b.transpose(1, 2) @ a)
    sines = torch.linalg.svdvals(residual).clamp(0, 1).flip(-1)  # ascending, matches the cosines
    angles = torch.where(cosines**2 < 0.5, torch.arccos(cosines), torch.arcsin(sines))
    return torch.rad2deg(angles)


def _median_distance(report: dict, mode: str):
    return report["modes"][mode]["median_distance_counting_failures"]


def _relative_change(new, old):
    return None if new is None or old is None or old == 0 else new / old - 1


def calibrate_autoencoder(scene: Scene | str | Path, autoencoder: AutoencoderSpec | None = None,
                          n_points: int = 100, model: torch.nn.Module | None = None, attack_spec=None,
                          device: str | torch.device = "cpu", attacks: bool = True) -> dict:
    """Compare the autoencoder's tangent spaces with the exact ones on a synthetic scene.

    scene: a Scene, a scene YAML path, or a run directory (then its data and final model are used).
    autoencoder: the AE settings (default: `AutoencoderSpec()` with latent_dim = the scene's k).
    model: the classifier to attack; default the run's final model, else the scene's MLP trained
    with `simulator.training.loop.train` (its full training budget). attack_spec: an `AttackSpec`
    (default the scene's measure.attacks; DeepFool check off). attacks=False skips the attacks.
    Returns a JSON-ready dict.
    """
    started = time.perf_counter()
    run = None
    if isinstance(scene, (str, Path)):
        if Path(scene).is_dir():
            run = load_run(scene)
            scene = run.scene
        else:
            scene = load_scene(scene)
    manifold = scene.manifold.build()
    data = run.data if run is not None else make_dataset(scene, manifold)
    k, n = manifold.dim, manifold.ambient_dim
    spec = autoencoder or AutoencoderSpec(latent_dim=k)
    n_points = min(n_points, len(data.x_test))

    ae, ae_info = train_autoencoder(data.x_train, spec.latent_dim, spec.hidden, spec.activation, spec.steps,
                                    spec.batch_size, spec.lr, spec.weight_decay, scene.seed, device,
                                    x_test=data.x_test, output="affine")
    x = torch.as_tensor(data.x_test[:n_points], dtype=torch.float32, device=device)
    # Dense: the principal angles compare two explicit bases (n_points x n x k floats each).
    exact = torch.as_tensor(manifold.tangent_basis(data.u_test[:n_points]), dtype=torch.float32, device=device)
    with torch.no_grad():
        codes = ae.encode(x)
    estimated, singular_values = decoder_tangent_bases(ae.decoder, codes)
    angles = principal_angles(estimated, exact).cpu().numpy()  # (N, min(k_est, k))
    largest = angles[:, -1]
    result = {
        "scene": scene.name, "k": k, "n": n, "latent_dim": spec.latent_dim, "n_points": n_points,
        "autoencoder": {**spec.model_dump(), "seconds": ae_info["seconds"],
                        "reconstruction": ae_info["reconstruction"]},
        "jacobian": spectrum_summary(singular_values),
        "angles_deg": {
            "median_largest": float(np.median(largest)), "max_largest": float(largest.max()),
            "mean_all": float(angles.mean()), "quantiles_largest": {
                q: float(np.quantile(largest, float(q))) for q in ("0.1", "0.5", "0.9")},
        },
    }
    if model is None:
        if run is not None:
            model = run.final_model()
        else:
            model = train(scene, data, progress=False).model
    model = model.to(device).eval()
    tangent_exact, _ = tangent_and_stretch(model, x, exact)
    tangent_estimated, _ = tangent_and_stretch(model, x, estimated)
    result["tangent"] = {"exact": tangent_exact["tangent"], "estimated": tangent_estimated["tangent"]}
    if attacks:
        attack_spec = (attack_spec or scene.measure.attacks).model_copy(
            update={"modes": CALIBRATION_MODES, "check_with_deepfool": False})
        clean = manifold.immersion(data.u_train)
        settings = resolve_attack_settings(attack_spec, scene.seed, n_points, data_radius(clean))
        reports = {}
        for name, bases in (("exact", exact), ("estimated", estimated)):
            reports[name] = attack_arrays(model, x, bases, settings, scene.seed, device)
            reports[name].pop("free_delta", None)  # not stored by calibrations
            reports[name].pop("lower_bounds")
        per_point = {mode: reports["estimated"]["distances"][mode] / reports["exact"]["distances"][mode]
                     for mode in MANIFOLD_MODES}
        result["attacks"] = {
            "settings": settings.as_record(),
            **{name: {"median_distance": {mode: _median_distance(report, mode) for mode in CALIBRATION_MODES},
                      "manifold_specificity": report.get("manifold_specificity"),
                      "manifold_specificity_interval": report.get("manifold_specificity_interval")}
               for name, report in reports.items()},
            "relative_change": {mode: _relative_change(_median_distance(reports["estimated"], mode),
                                                       _median_distance(reports["exact"], mode))
                                for mode in MANIFOLD_MODES},
            "median_per_point_ratio": {mode: (float(np.nanmedian(r)) if np.isfinite(r).any() else None)
                                       for mode, r in per_point.items()},
        }
    result["seconds"] = time.perf_counter() - started
    return result
