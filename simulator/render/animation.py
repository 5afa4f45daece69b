"""The training animation: one frame per snapshot, the decision boundary morphing.

    from simulator.render.animation import animate_run
    gif, mp4 = animate_run(load_run("renders/sheet_two_class"))    # animation.gif, animation.mp4

Every frame is the 3-D scene of `simulator.render.scene3d` at one snapshot, with the step and
the test accuracy in the corner. One plotter draws all frames (only the boundary mesh and the
texts change); the camera is fixed at render.camera, or turns once around the frame's vertical
axis over the animation when render.orbit is set. Frames play at render.fps.

GIF: Pillow, one palette shared by all frames (taken from the first and last frames, so the
colours do not flicker between frames), no dithering. MP4: H.264 (yuv420p, +faststart, plays
in browsers) through imageio-ffmpeg's bundled ffmpeg. Both are written atomically. Pillow
merges a frame identical to the one before it into a longer frame; the corner text changes at
every snapshot, so a GIF written here always has one frame per snapshot.
"""

from __future__ import annotations

import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from simulator.boundary.frame import render_frame
from simulator.progress import counting_bar
from simulator.render.scene3d import BoundaryScene, boundary_for, run_device
from simulator.runs.io import atomic_path

GIF_NAME = "animation.gif"
MP4_NAME = "animation.mp4"


def render_frames(run, progress: bool = True, device=None, on_frame=None) -> list[np.ndarray]:
    """One image (height, width, 3) uint8 per snapshot, in snapshot order.

    The boundary of the next snapshot is computed in a worker thread while the current one is
    drawn (torch, numpy and VTK release the GIL while they compute; the grid uses one thread,
    the renderer the rest), so the two costs overlap instead of adding up; the first boundary
    is computed while the scene is built. on_frame(image) is called with each image as soon
    as it is drawn (animate_run streams them to ffmpeg).
    """
    spec = run.scene.render
    frame = render_frame(run)
    device = device or run_device(run)
    count = len(run.snapshots)
    images = []
    with ThreadPoolExecutor(max_workers=1) as worker:
        pending = worker.submit(boundary_for, run, 0, frame, device)
        with BoundaryScene(run, frame) as scene, \
                counting_bar(progress, count, f"animate {run.scene.name}") as advance:
            for index in range(count):
                mesh = pending.result()
                if index + 1 < count:
                    pending = worker.submit(boundary_for, run, index + 1, frame, device)
                scene.show_snapshot(index, mesh)
                if spec.orbit:
                    scene.set_camera(spec.camera.azimuth + 360.0 * index / count, spec.camera.elevation,
                                     spec.camera.zoom)
                images.append(scene.screenshot())
                if on_frame is not None:
                    on_frame(images[-1])
                advance()
    return images


def animate_run(run, progress: bool = True, gif_path: str | Path | None = None,
                mp4_path: str | Path | None = None) -> tuple[Path, Path]:
    """Render every snapshot and write the GIF and the MP4; returns (gif_path, mp4_path).

    Default paths: `<run>/animation.gif` and `<run>/animation.mp4`.
    """
    folder = Path(run.path)
    gif_path = Path(gif_path) if gif_path is not None else folder / GIF_NAME
    mp4_path = Path(mp4_path) if mp4_path is not None else folder / MP4_NAME
    fps = run.scene.render.fps
    width, height = run.scene.render.window_size
    # ffmpeg starts at once and encodes in its own process while the frames are drawn (a thread
    # feeds it); the GIF needs all frames and is written while ffmpeg finishes.
    with atomic_path(mp4_path) as temporary, Mp4Writer(temporary, fps, size=(height, width)) as video:
        images = render_frames(run, progress, on_frame=video.send)
        gif_path = write_gif(images, gif_path, fps)
    return gif_path, mp4_path


def write_gif(images: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """Looping GIF of (h, w, 3) uint8 frames with one shared palette, atomically."""
    from PIL import Image  # deferred: only animations need Pillow

    path = Path(path)
    if not images:
        raise ValueError("write_gif: no frames")
    sample = Image.fromarray(np.concatenate([images[0], images[-1]], axis=0))
    palette = sample.quantize(colors=255, method=Image.Quantize.FASTOCTREE)
    frames = [Image.fromarray(image).quantize(palette=palette, dither=Image.Dither.NONE) for image in images]
    with atomic_path(path) as temporary:
        frames[0].save(temporary, format="GIF", save_all=True, append_images=frames[1:],
                       duration=round(1000 / fps), loop=0)
    return path


def write_mp4(images: list[np.ndarray], path: str | Path, fps: float) -> Path:
    """H.264 MP4 of (h, w, 3) uint8 frames, atomically (odd sizes are padded by one pixel)."""
    path = Path(path)
    if not images:
        raise ValueError("write_mp4: no frames")
    with atomic_path(path) as temporary, Mp4Writer(temporary, fps) as video:
        for image in images:
            video.send(image)
    return path


class Mp4Writer:
    """Stream (h, w, 3) uint8 frames to an H.264 MP4 through imageio-ffmpeg's ffmpeg.

    yuv420p (what browsers play) needs even sides: odd ones are padded by one edge pixel.
    The container format is given explicitly, so the file name may end in anything (.tmp).
    size (height, width): start ffmpeg now rather than at the first frame. Frames are handed to
    ffmpeg by a thread, so `send` returns without waiting for ffmpeg to read them.
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int] | None = None):
        self.path, self.fps = Path(path), fps
        self.writer, self.size, self.count = None, None, 0
        self._queue, self._feeder, self._error = None, None, None
        if size is not None:
            self._start((size[0] + size[0] % 2, size[1] + size[1] % 2))

    def _start(self, even: tuple[int, int]) -> None:
        import imageio_ffmpeg  # deferred: only videos need ffmpeg

        self.size = even
        self.writer = imageio_ffmpeg.write_frames(
            str(self.path), (even[1], even[0]), fps=self.fps, codec="libx264", macro_block_size=1,
            quality=7, output_params=["-f", "mp4", "-preset", "veryfast", "-movflags", "+faststart"],
            ffmpeg_log_level="error")
        self.writer.send(None)  # start ffmpeg
        self._queue = queue.Queue()
        self._feeder = threading.Thread(target=self._feed, name="mp4-feeder", daemon=True)
        self._feeder.start()

    def _feed(self) -> None:
        while True:
            image = self._queue.get()
            if image is None:
                return
            if self._error is None:
                try:
                    self.writer.send(image)
                except BaseException as error:  # reported by the next send or by close
                    self._error = error

    def send(self, image: np.ndarray) -> None:
        height, width = image.shape[:2]
        even = (height + height % 2, width + width % 2)
        if self.writer is None:
            self._start(even)
        if self._error is not None:
            raise self._error
        if even != self.size:
            raise ValueError(f"frame size {image.shape[:2]} differs from the first frame's {self.size}")
        if image.shape[:2] != even:
            image = np.pad(image, ((0, even[0] - height), (0, even[1] - width), (0, 0)), mode="edge")
        self._queue.put(np.ascontiguousarray(image, dtype=np.uint8))
        self.count += 1

    def __enter__(self):
        return self

    def __exit__(self, kind, *exc):
        if self._feeder is not None:
            self._queue.put(None)
            self._feeder.join()
        if self.writer is not None:
            self.writer.close()  # waits for ffmpeg to finish the file
        if kind is None:
            if self._error is not None:
                raise self._error
            if self.count == 0:
                raise ValueError("no frames were written to the MP4")
        return False
