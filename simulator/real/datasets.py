"""Real image data sets, read offline with numpy and Pillow (never torchvision, never a download).

    load_dataset("digits")                          scikit-learn's 8x8 digits (ships with scikit-learn)
    load_dataset("fashion_mnist")                   Debian's dataset-fashion-mnist package, or path=
    load_dataset("mnist", path="~/data/mnist")      the four idx files (.gz or raw)
    load_dataset("cifar10", path=".../cifar-10-batches-py")
    load_dataset("folder", path="photos/")          one subfolder of images per class
    load_dataset("photos", photos=["china", "flower"])   photos shipped with scikit-learn / scikit-image

Every loader returns an `ImageDataset`: float32 images (N, C, H, W) in [0, 1] and int64
labels; `.flat("train")` gives (N, n) rows for the MLPs and attacks. An image folder is not
read up front: its images are `ImageFiles` (`streaming.py`), read batch by batch by a torch
DataLoader when training and measuring, so a folder of any size fits in memory. A missing path
or a file in the wrong format raises `DatasetError` saying what was expected and where to get
it (an unreadable image in a folder: `ImageReadError`, when it is read).
"""

from __future__ import annotations

import gzip
import pickle
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import get_args

import numpy as np

from simulator.config.real import (
    SKIMAGE_PHOTO_NAMES,
    SKLEARN_PHOTO_FILES,
    DatasetSource,
)
from simulator.errors import SimulatorError
from simulator.real.streaming import ImageFiles
from simulator.seeding import numpy_rng

FASHION_MNIST_SYSTEM_PATH = Path("/usr/share/datasets/fashion-mnist")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}
IDX_FILES = {  # split -> (images stem, labels stem)
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
WHERE_TO_GET = {
    "fashion_mnist": "install Debian's package (`apt-get install dataset-fashion-mnist`, files under "
                     f"{FASHION_MNIST_SYSTEM_PATH}) or download the four .gz files from "
                     "github.com/zalandoresearch/fashion-mnist (data/fashion) into a folder and pass it as "
                     "dataset.path",
    "mnist": "download train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz and "
             "t10k-labels-idx1-ubyte.gz (yann.lecun.com/exdb/mnist or a mirror) into one folder and pass it as "
             "dataset.path",
    "cifar10": "download and unpack 'CIFAR-10 python version' (cifar-10-python.tar.gz from "
               "www.cs.toronto.edu/~kriz/cifar.html) and pass the cifar-10-batches-py folder as dataset.path",
    "folder": "make a folder with one subfolder per class holding that class's images (optionally inside "
              "train/ and test/ (or val/) subfolders, as torchvision's ImageFolder expects)",
}
_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
               0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}


class DatasetError(SimulatorError):
    """A data set is missing or not in the expected format."""


@dataclass
class ImageDataset:
    """Images (N, C, H, W) float32 in [0, 1] with int64 labels, split into train and test. The
    images are numpy arrays, or for image folders lazy `ImageFiles` read batch by batch."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str = ""
    class_names: list[str] = field(default_factory=list)
    image_names: list[str] = field(default_factory=list)  # photos: one name per test image

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def ambient_dim(self) -> int:
        return int(np.prod(self.image_shape))

    @property
    def n_classes(self) -> int:
        return int(max((int(y.max()) for y in (self.y_train, self.y_test) if len(y)), default=-1)) + 1

    def flat(self, split: str) -> np.ndarray:
        """(N, n) float32 rows of the 'train' or 'test' images (lazy `ImageFiles` stay lazy: the
        streaming helpers read them as rows)."""
        images = self.x_train if split == "train" else self.x_test
        if isinstance(images, ImageFiles):
            return images
        return images.reshape(len(images), int(np.prod(images.shape[1:])))  # also for an empty split

    def describe(self) -> dict:
        return {"name": self.name, "source": self.source, "n_train": len(self.x_train), "n_test": len(self.x_test),
                "image_shape": list(self.image_shape), "ambient_dim": self.ambient_dim, "n_classes": self.n_classes,
                "class_names": self.class_names, **({"image_names": self.image_names} if self.image_names else {})}

    def subset(self, n_train: int | None, n_test: int | None, rng: np.random.Generator) -> "ImageDataset":
        """A seeded random subset (sizes capped at what exists; None keeps a split whole)."""
        def pick(x, y, count):
            if count is None or count >= len(x):
                return x, y
            index = np.sort(rng.choice(len(x), count, replace=False))
            return x[index], y[index]

        x_train, y_train = pick(self.x_train, self.y_train, n_train)
        x_test, y_test = pick(self.x_test, self.y_test, n_test)
        return ImageDataset(self.name, x_train, y_train, x_test, y_test, self.source, self.class_names)


# --------------------------------------------------------------------------- idx (MNIST family)


def _open_maybe_gzip(path: Path) -> bytes:
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":  # gzip magic, whatever the file is called
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError) as error:
            raise DatasetError(f"{path}: a damaged gzip file ({error}); download it again.") from None
    return raw


def read_idx(path: str | Path) -> np.ndarray:
    """Read one idx file (MNIST's format: magic 0x0000TTDD, big-endian sizes, then the array)."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: no such idx file.")
    raw = _open_maybe_gzip(path)
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        magic = raw[:4].hex() if len(raw) >= 4 else "too short"
        raise DatasetError(
            f"{path}: not an idx file (magic number {magic}; an idx file starts with 00 00, a type byte "
            f"08/09/0b/0c/0d/0e and the number of dimensions, e.g. 00000803 for MNIST images and 00000801 "
            f"for labels).")
    dtype, ndim = np.dtype(_IDX_DTYPES[raw[2]]), raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DatasetError(f"{path}: idx header truncated (expected {ndim} dimension sizes).")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DatasetError(f"{path}: idx header says shape {shape} ({expected} bytes of data) but the file holds "
                           f"{len(raw) - header}; the file is truncated or not an idx file.")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape).astype(dtype.newbyteorder("="))


def _find_idx(folder: Path, stem: str) -> Path | None:
    """The idx file `stem` (also `stem.gz`, or with '.' instead of the last '-') under folder."""
    variants = {stem, stem[::-1].replace("-", ".", 1)[::-1]}  # t10k-images.idx3-ubyte (some mirrors)
    for base in (folder, folder / "raw", folder / "MNIST" / "raw", folder / "FashionMNIST" / "raw"):
        for name in variants:
            for candidate in (base / name, base / f"{name}.gz"):
                if candidate.is_file():
                    return candidate
    return None


def load_idx_dataset(folder: str | Path, name: str = "mnist") -> ImageDataset:
    """MNIST-style data: the four idx files in `folder` (or torchvision's <folder>/MNIST/raw)."""
    folder = Path(folder).expanduser()
    where = WHERE_TO_GET.get(name, WHERE_TO_GET["mnist"])
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder for the {name} data set. Expected a folder with the idx files "
                           f"{', '.join(s for pair in IDX_FILES.values() for s in pair)} (.gz or raw); {where}.")
    arrays = {}
    for split, stems in IDX_FILES.items():
        for stem, kind in zip(stems, ("images", "labels")):
            found = _find_idx(folder, stem)
            if found is None:
                raise DatasetError(f"{folder}: no {stem} (or {stem}.gz) here, which the {name} data set needs "
                                   f"(all four: {', '.join(s for pair in IDX_FILES.values() for s in pair)}); {where}.")
            arrays[split, kind] = (found, read_idx(found))
    splits = {}
    for split in IDX_FILES:
        (image_path, images), (label_path, labels) = arrays[split, "images"], arrays[split, "labels"]
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise DatasetError(f"{image_path}, {label_path}: expected images (N, H, W) and labels (N,), got "
                               f"{images.shape} and {labels.shape}.")
        scale = 255.0 if images.dtype == np.uint8 else 1.0
        splits[split] = ((images.astype(np.float32) / scale)[:, None], labels.astype(np.int64))
    return ImageDataset(name, *splits["train"], *splits["test"], source=str(folder))


def load_fashion_mnist(path: str | Path | None = None) -> ImageDataset:
    """Fashion-MNIST from `path`, else from Debian's dataset-fashion-mnist package."""
    folder = Path(path) if path else FASHION_MNIST_SYSTEM_PATH
    data = load_idx_dataset(folder, "fashion_mnist")
    data.class_names = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker",
                        "Bag", "Ankle boot"]
    return data


# --------------------------------------------------------------------------- CIFAR-10


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only: a data file must not run code."""

    _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy", "ndarray"), ("numpy", "dtype"), ("numpy.core.multiarray", "scalar"),
                ("numpy._core.multiarray", "scalar"), ("_codecs", "encode")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only arrays and plain containers)")


def _read_cifar_batch(path: Path) -> dict:
    try:
        with open(path, "rb") as handle:
            batch = _ArrayUnpickler(handle, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as error:
        raise DatasetError(f"{path}: not a CIFAR-10 python batch ({error}); {WHERE_TO_GET['cifar10']}.") from None
    if not isinstance(batch, dict):
        raise DatasetError(f"{path}: not a CIFAR-10 python batch (a {type(batch).__name__}, expected a dict with "
                           f"'data' and 'labels'); {WHERE_TO_GET['cifar10']}.")
    return {(key.decode() if isinstance(key, bytes) else key): value for key, value in batch.items()}


def load_cifar10(path: str | Path) -> ImageDataset:
    """CIFAR-10's python batches: data_batch_1..5 and test_batch, each {data: (N, 3072) uint8, labels}."""
    folder = Path(path).expanduser()
    if (folder / "cifar-10-batches-py").is_dir():
        folder = folder / "cifar-10-batches-py"
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such folder for CIFAR-10; {WHERE_TO_GET['cifar10']}.")
    train_files = sorted(folder.glob("data_batch_*"))
    if not train_files or not (folder / "test_batch").is_file():
        raise DatasetError(f"{folder}: expected CIFAR-10 python batches data_batch_1..data_batch_5 and test_batch "
                           f"here; {WHERE_TO_GET['cifar10']}.")

    def read(files):
        images, labels = [], []
        for file in files:
            batch = _read_cifar_batch(file)
            data = np.asarray(batch.get("data"))
            label = batch.get("labels", batch.get("fine_labels"))
            if data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or label is None or len(label) != len(data):
                raise DatasetError(f"{file}: expected 'data' (N, 3072) uint8 rows (3 x 32 x 32, channel-major) and "
                                   f"N 'labels', got data {data.shape}; {WHERE_TO_GET['cifar10']}.")
            images.append(data.reshape(-1, 3, 32, 32).astype(np.float32) / 255.0)
            labels.append(np.asarray(label, dtype=np.int64))
        return np.concatenate(images), np.concatenate(labels)

    names = []
    if (folder / "batches.meta").is_file():
        meta = _read_cifar_batch(folder / "batches.meta")
        names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get("label_names", [])]
    return ImageDataset("cifar10", *read(train_files), *read([folder / "test_batch"]), source=str(folder),
                        class_names=names)


# --------------------------------------------------------------------------- image folders


def _list_class_folders(root: Path, class_names: list[str] | None = None) -> tuple[list[str], np.ndarray, list[str]]:
    """(image files, labels, class names) of a folder with one subfolder per class. Only file names
    are read here: the images themselves are read when used (`ImageFiles`)."""
    classes = class_names or sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DatasetError(f"{root}: no class subfolders; {WHERE_TO_GET['folder']}.")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = sorted(str(p) for p in (root / name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
            if (root / name).is_dir() else []
        files += found
        labels += [label] * len(found)
    if not files:
        raise DatasetError(f"{root}: the class subfolders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))}); "
                           f"{WHERE_TO_GET['folder']}.")
    return files, np.asarray(labels, dtype=np.int64), classes


def load_image_folder(path: str | Path, image_size: tuple[int, int] | None = None, grayscale: bool = False,
                      test_fraction: float = 0.25, seed: int = 0, resize: str = "stretch",
                      crop_fraction: float = 1.0) -> ImageDataset:
    """Class subfolders of images, as lazy `ImageFiles` (read batch by batch when used, never all
    at once; resized with Pillow: stretched to image_size, or with resize "center_crop" scaled and
    centre-cropped to it). Classes are numbered in sorted folder-name order (ImageNet's class
    indices, when the folders are its wnids n01440764, ...). With train/ and test/ (or val/)
    subfolders those are the splits; otherwise a seeded `test_fraction` of the images is held out."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: no such image folder; {WHERE_TO_GET['folder']}.")
    size = tuple(image_size or (32, 32))

    def lazy(files):
        return ImageFiles(files, size, grayscale, resize, crop_fraction)

    test_root = next((root / name for name in ("test", "val") if (root / name).is_dir()), None)
    if (root / "train").is_dir() and test_root is not None:
        train_files, y_train, classes = _list_class_folders(root / "train")
        test_files, y_test, _ = _list_class_folders(test_root, classes)
        x_train, x_test = lazy(train_files), lazy(test_files)
    else:
        files, labels, classes = _list_class_folders(root)
        x_train, y_train, x_test, y_test = _split(lazy(files), labels, test_fraction, np.random.default_rng(seed))
    return ImageDataset("folder", x_train, y_train, x_test, y_test, source=str(root), class_names=classes)


# --------------------------------------------------------------------------- shipped photos


def square_photo(image: np.ndarray, size: int) -> np.ndarray:
    """An (H, W, 3+) uint8 photo, centre-cropped to a square and resized: (3, size, size) float32 in [0, 1]."""
    from PIL import Image  # deferred: Pillow loads only when photos are resized

    height, width = image.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    crop = Image.fromarray(np.ascontiguousarray(image[top:top + side, left:left + side, :3]))
    return np.asarray(crop.resize((size, size), Image.BILINEAR), dtype=np.float32).transpose(2, 0, 1) / 255


def read_shipped_photo(name: str) -> np.ndarray:
    """One photo that ships with scikit-learn (china, flower) or scikit-image (astronaut, chelsea,
    coffee, rocket) as an (H, W, 3) uint8 array."""
    if name in SKLEARN_PHOTO_FILES:
        from sklearn.datasets import (
            load_sample_image,  # deferred: scikit-learn is slow to import
        )

        return load_sample_image(SKLEARN_PHOTO_FILES[name])
    if name in SKIMAGE_PHOTO_NAMES:
        try:
            from skimage import (
                data as skimage_data,  # optional: scikit-image may be absent
            )
        except ImportError:
            raise DatasetError(f"dataset.photos: {name!r} ships with scikit-image, which is not installed; "
                               f"`pip install -e '.[photos]'` (or `pip install scikit-image`), or use china and flower "
                               f"(scikit-learn's).") from None
        return np.asarray(getattr(skimage_data, name)())
    raise DatasetError(f"dataset.photos: {name!r} is not a shipped photo; choose from "
                       f"{', '.join([*SKLEARN_PHOTO_FILES, *SKIMAGE_PHOTO_NAMES])}.")


def load_photos(names: list[str] | tuple[str, ...] = ("china", "flower"), size: int = 224) -> ImageDataset:
    """Shipped photos as the *test* split of an ImageDataset (no training images; labels -1 until a
    pretrained classifier names them), square, `size` x `size`, RGB in [0, 1]."""
    x = np.stack([square_photo(read_shipped_photo(name), size) for name in names])
    empty = np.zeros((0, *x.shape[1:]), dtype=np.float32)
    return ImageDataset("photos", empty, np.zeros(0, dtype=np.int64), x, np.full(len(x), -1, dtype=np.int64),
                        source="sklearn.datasets.load_sample_image / skimage.data", image_names=list(names))


# --------------------------------------------------------------------------- digits and dispatch


def _split(x, y, test_fraction, rng):
    order = rng.permutation(len(x))
    n_test = max(1, int(round(test_fraction * len(x))))
    test, train = order[:n_test], order[n_test:]
    return x[train], y[train], x[test], y[test]


def load_digits_dataset(test_fraction: float = 0.25, seed: int = 0) -> ImageDataset:
    """scikit-learn's 8x8 handwritten digits (1797 images, values 0..16 scaled to [0, 1])."""
    from sklearn.datasets import load_digits  # deferred: scikit-learn is slow to import

    digits = load_digits()
    x = (digits.images.astype(np.float32) / 16.0)[:, None]
    x_train, y_train, x_test, y_test = _split(x, digits.target.astype(np.int64), test_fraction,
                                              np.random.default_rng(seed))
    return ImageDataset("digits", x_train, y_train, x_test, y_test, source="sklearn.datasets.load_digits",
                        class_names=[str(i) for i in range(10)])


def load_dataset(source: str = "digits", path: str | Path | None = None, n_train: int | None = None,
                 n_test: int | None = None, seed: int = 0, test_fraction: float = 0.25,
                 image_size: tuple[int, int] | None = None, grayscale: bool = False,
                 photos: list[str] | None = None, resize: str = "stretch", crop_fraction: float = 1.0) -> ImageDataset:
    """Load a data set by name (see the module docstring), optionally a seeded random subset."""
    rng = numpy_rng(seed, "real_split")
    if source == "photos":
        return load_photos(photos or list(SKLEARN_PHOTO_FILES), (image_size or (224, 224))[0])
    if source == "digits":
        data = load_digits_dataset(test_fraction, int(rng.integers(2**31)))
    elif source == "fashion_mnist":
        data = load_fashion_mnist(path)
    elif source in ("mnist", "idx", "cifar10", "folder"):
        if not path:
            raise DatasetError(f"dataset.source {source!r} reads local files: set dataset.path; "
                               f"{WHERE_TO_GET['mnist' if source == 'idx' else source]}.")
        if source in ("mnist", "idx"):
            data = load_idx_dataset(path, source)
        elif source == "cifar10":
            data = load_cifar10(path)
        else:
            data = load_image_folder(path, image_size, grayscale, test_fraction, int(rng.integers(2**31)), resize,
                                     crop_fraction)
    else:
        raise DatasetError(f"dataset.source: {source!r} is not known; choose one of "
                           f"{', '.join(get_args(DatasetSource))}.")
    return data.subset(n_train, n_test, rng)
