"""Image folders read batch by batch: an image set that never sits in memory whole.

An ImageNet training set is 1.28 million photos; at 224 x 224 as float32 that is 770 GB. The
real-image experiment therefore treats a folder's images as a lazy array, `ImageFiles`: it
knows its files, labels and the shape every image is brought to, and reads images only when
asked, through a torch `DataLoader` (worker processes decode the next batches while the
model works on this one).

    images = ImageFiles(files, image_size=(224, 224), resize="center_crop", crop_fraction=0.875)
    for batch in image_batches(images, index_batches, device):  # training: the batches a sampler asks for
        ...
    for rows in image_chunks(images, 256, device):               # evaluation: every image, in order
        ...
    x = gather_rows(images, [3, 17])                             # a few images as an (m, n) array

Every helper also accepts an in-memory (N, C, H, W) numpy array, and then does exactly what
the in-memory code always did (index a device tensor), so small data sets keep their numbers.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from simulator.config.real import stream_chunk  # the byte budget of a sequential pass
from simulator.errors import SimulatorError



class ImageReadError(SimulatorError):
    """An image file cannot be read."""


def read_image(file: str | Path, size: tuple[int, int], grayscale: bool = False, resize: str = "stretch",
               crop_fraction: float = 1.0) -> np.ndarray:
    """One image file as (C, H, W) float32 in [0, 1], H x W = `size`.

    resize "stretch": resized to `size` (the aspect ratio is not kept). "center_crop": the largest
    centred box of the target's aspect ratio, shrunk to `crop_fraction` of each side, resized to
    `size` (crop_fraction 0.875 at 224 is ImageNet's "resize to 256, crop the centre 224")."""
    from PIL import Image, UnidentifiedImageError  # deferred: Pillow loads only when image files are read

    height, width = size
    try:
        with Image.open(file) as image:
            image = image.convert("L" if grayscale else "RGB")
            box = None
            if resize == "center_crop":
                scale = min(image.width / width, image.height / height) * crop_fraction
                crop_w, crop_h = width * scale, height * scale
                left, top = (image.width - crop_w) / 2, (image.height - crop_h) / 2
                box = (left, top, left + crop_w, top + crop_h)
            array = np.asarray(image.resize((width, height), Image.BILINEAR, box=box), dtype=np.float32) / 255.0
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise ImageReadError(f"{file}: not a readable image ({type(error).__name__}: {error}); remove it or "
                             f"convert it.") from None
    return array[None] if grayscale else array.transpose(2, 0, 1)


class ImageFiles:
    """A lazy (N, C, H, W) float32 image array backed by files (read with `read_image`).

    Behaves like the arrays it stands for where the experiment needs it: `len`, `.shape`, integer
    indexing (one image, read now) and index-array indexing (a lazy subset, nothing read).
    `np.asarray(images)` reads them all: only for small sets (tests)."""

    def __init__(self, files: Iterable[str | Path] | np.ndarray, image_size: tuple[int, int], grayscale: bool = False,
                 resize: str = "stretch", crop_fraction: float = 1.0):
        # One fixed-width bytes array, not a list of Python strings: loader processes share it as
        # it is, whereas touching 1.28 million string objects would copy their pages into each.
        self.files = files if isinstance(files, np.ndarray) and files.dtype.kind == "S" else \
            np.asarray([os.fsencode(file) for file in files], dtype=bytes)
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.grayscale, self.resize, self.crop_fraction = grayscale, resize, float(crop_fraction)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        return (len(self.files), 1 if self.grayscale else 3, *self.image_size)

    dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return len(self.files)

    def file(self, index: int) -> str:
        """The path of image `index`."""
        return os.fsdecode(self.files[index])

    def _like(self, files) -> ImageFiles:
        return ImageFiles(files, self.image_size, self.grayscale, self.resize, self.crop_fraction)

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)):
            return read_image(self.file(index), self.image_size, self.grayscale, self.resize, self.crop_fraction)
        return self._like(self.files[np.asarray(index)])

    def __array__(self, dtype=None, copy=None):
        stacked = np.stack([self[i] for i in range(len(self))]) if len(self) else np.zeros(self.shape, np.float32)
        return stacked if dtype is None else stacked.astype(dtype)


class _FlatRows(Dataset):
    """ImageFiles as a torch Dataset of flattened rows (what the MLPs and attacks take)."""

    def __init__(self, images: ImageFiles):
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return torch.from_numpy(self.images[index].reshape(-1)), index


def default_workers() -> int:
    """Loader processes: one core left for the main process, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))


def _loaded(images: ImageFiles, batches: Iterable, device: torch.device,
            workers: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The batches a DataLoader reads, on `device`, with their indices (CPU). A worker's unreadable file comes back as the
    ImageReadError it raised (the loader wraps it in a worker traceback, which a user should not see)."""
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_FlatRows(images), batch_sampler=batches, num_workers=workers,
                        pin_memory=torch.device(device).type == "cuda")
    try:
        for batch, index in loader:
            yield batch.to(device, non_blocking=True), index
    except ImageReadError as error:
        message = str(error).strip().splitlines()[-1]
        raise ImageReadError(message.split("ImageReadError: ", 1)[-1]) from None


class _IndexBatches:
    """A batch sampler from an iterable of index tensors (the training loops' seeded batches)."""

    def __init__(self, batches: Iterable[torch.Tensor], count: int):
        self.batches, self.count = batches, count

    def __iter__(self):
        for _, index in zip(range(self.count), self.batches):
            yield index.tolist()

    def __len__(self) -> int:
        return self.count


def image_batches(images, batches: Iterable[torch.Tensor], count: int, device: torch.device,
                  workers: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(rows (B, n) on `device`, their indices on the CPU) for the first `count` index batches. An
    in-memory array is put on the device once and indexed (as the training loops always did); a
    lazy one is read by a loader whose workers decode the next batches meanwhile."""
    if not isinstance(images, ImageFiles):
        rows = as_rows(images, device)
        for _, index in zip(range(count), batches):
            yield rows[index.to(device)], index
        return
    yield from _loaded(images, _IndexBatches(batches, count), device, workers)


def image_chunks(images, chunk: int, device: torch.device, workers: int | None = None) -> Iterator[torch.Tensor]:
    """Every image's row, in order, `chunk` rows at a time (lazy images: at most `stream_chunk`
    rows, a fixed number of bytes), on `device`."""
    if not isinstance(images, ImageFiles):
        yield from as_rows(images, device).split(chunk)
        return
    chunk = min(chunk, stream_chunk(_pixels(images)))
    starts = range(0, len(images), chunk)
    order = _IndexBatches((torch.arange(s, min(s + chunk, len(images))) for s in starts), len(starts))
    for rows, _ in _loaded(images, order, device, workers):
        yield rows


def as_rows(images, device: torch.device | str = "cpu") -> torch.Tensor:
    """An in-memory image array (N, ...) as float32 rows (N, n) on `device`."""
    array = np.asarray(images, dtype=np.float32)
    return torch.as_tensor(array.reshape(len(array), -1), device=device)


def gather_rows(images, index) -> np.ndarray:
    """Rows (m, n) float32 of the images at `index` (read from files when lazy)."""
    index = np.asarray(index, dtype=np.int64)
    if isinstance(images, ImageFiles):
        rows = [images[int(i)].reshape(-1) for i in index]
        return np.stack(rows) if rows else np.zeros((0, int(np.prod(images.shape[1:]))), np.float32)
    array = np.asarray(images, dtype=np.float32)
    return array.reshape(len(array), -1)[index]


def row_statistics(images, device: torch.device, workers: int | None = None) -> dict:
    """One streamed pass over a lazy set: the mean row, the RMS distance to it per coordinate
    (sqrt(mean ||x - mean||^2 / n), from float64 sums), min and max. In-memory arrays are computed
    as the in-memory code always did (float32, one reduction)."""
    if not isinstance(images, ImageFiles):
        rows = as_rows(images, device)
        mean = rows.mean(dim=0)
        rms = float((rows - mean).pow(2).sum(dim=1).mean().sqrt() / np.sqrt(rows.shape[1]))
        return {"mean": mean, "rms": rms, "min": float(rows.min()), "max": float(rows.max())}
    total = squares = None
    low, high, count = np.inf, -np.inf, 0
    for rows in image_chunks(images, 256, device, workers):
        rows = rows.double()
        total = rows.sum(dim=0) if total is None else total + rows.sum(dim=0)
        squares = rows.pow(2).sum() if squares is None else squares + rows.pow(2).sum()
        low, high, count = min(low, float(rows.min())), max(high, float(rows.max())), count + len(rows)
    mean = total / count
    # mean ||x - m||^2 = mean ||x||^2 - ||m||^2 (float64 keeps the cancellation harmless for images)
    spread = max(float(squares / count - mean.pow(2).sum()), 0.0)
    return {"mean": mean.float(), "rms": float(np.sqrt(spread / mean.numel())), "min": low, "max": high}


def max_distance_from(images, centre: torch.Tensor, device: torch.device, workers: int | None = None) -> float:
    """Largest ||x - centre|| over the images (streamed for a lazy set)."""
    centre = centre.to(device=device, dtype=torch.float32)
    chunks = image_chunks(images, 256, device, workers)
    return max((float((rows - centre).norm(dim=1).max()) for rows in chunks if len(rows)), default=0.0)


def _pixels(images) -> int:
    return int(np.prod(images.shape[1:]))
