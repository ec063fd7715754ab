"""Video input and output: video files and folders of numbered frames.

Reading: video files with decord (CPU, decoded in batches), or a folder of
numbered images (.png/.jpg/.jpeg/.bmp/.webp, natural sort on the numbers in
the names, hidden files ignored; all frames must share one size). Frames come
back as float32 tensors (T,3,H,W), RGB, in [0,1], with the frame rate; a
folder has no frame rate of its own, so it gets ``folder_fps`` (24 by default).
``iter_video_chunks`` streams a long video in chunks so memory stays bounded.

Writing: H.264 mp4 (libx264, yuv420p, crf 18) with PyAV, into a temporary file
in the same folder that replaces the target only when writing succeeded.
yuv420p needs even sides: a frame with an odd height or width is padded by
repeating its last row / column, so the written video is one pixel larger on
that side.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import torch
from torch import Tensor

from pipeline.io.files import atomic_output
from pipeline.io.images import ImageReadError, load_image_array, to_uint8

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FOLDER_FPS = 24.0
DEFAULT_CRF = 18
_READ_BATCH = 16  # frames decoded per call when reading a whole video


class VideoReadError(ValueError):
    """A path exists but holds no readable frames (not a video, empty, broken)."""


@dataclass(frozen=True)
class VideoInfo:
    """What a video holds, read without decoding all of its frames."""

    num_frames: int
    fps: float
    height: int
    width: int


class _DecordSource:
    """Frames of a video file, decoded by decord on the CPU."""

    def __init__(self, path: Path) -> None:
        try:
            self._reader = decord.VideoReader(str(path), ctx=decord.cpu(0))
            num_frames = len(self._reader)
            # Decoding the first frame tells us the size and rejects files that
            # decord opens without complaint but cannot decode (text files, say).
            first = self._reader[0].asnumpy() if num_frames else None
        except (decord.DECORDError, RuntimeError) as err:
            raise VideoReadError(f"{path} is not a readable video: {_first_line(err)}") from err
        if first is None:
            raise VideoReadError(f"{path} is a video without frames")
        fps = float(self._reader.get_avg_fps())
        if not math.isfinite(fps) or fps <= 0:
            raise VideoReadError(f"{path} has no valid frame rate (decord reports {fps})")
        self.path = path
        self.info = VideoInfo(num_frames, fps, first.shape[0], first.shape[1])

    def read(self, start: int, stop: int) -> Tensor:
        try:
            batch = self._reader.get_batch(list(range(start, stop))).asnumpy()
        except (decord.DECORDError, RuntimeError) as err:
            raise VideoReadError(f"{self.path}: cannot decode frames {start}-{stop - 1}: {_first_line(err)}") from err
        frames = torch.from_numpy(batch).permute(0, 3, 1, 2)
        return frames.to(torch.float32, memory_format=torch.contiguous_format).div_(255.0)


class _FolderSource:
    """Frames stored as numbered image files in one folder."""

    def __init__(self, path: Path, fps: float) -> None:
        self.path = path
        self.files = sorted(
            (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")
             and p.suffix.lower() in IMAGE_EXTENSIONS),
            key=_natural_key,
        )
        if not self.files:
            expected = "/".join(IMAGE_EXTENSIONS)
            raise VideoReadError(f"folder {path} holds no image frames (expected numbered {expected} files)")
        height, width, _ = self._load(self.files[0]).shape
        self.info = VideoInfo(len(self.files), fps, height, width)

    def _load(self, file: Path) -> np.ndarray:
        try:
            return load_image_array(file)
        except ImageReadError as err:
            raise VideoReadError(f"frame {file} cannot be read: {err}") from err

    def read(self, start: int, stop: int) -> Tensor:
        frames = []
        for file in self.files[start:stop]:
            frame = self._load(file)
            if frame.shape[:2] != (self.info.height, self.info.width):
                raise VideoReadError(
                    f"frames in {self.path} differ in size: {self.files[0].name} is "
                    f"{self.info.width}x{self.info.height}, {file.name} is {frame.shape[1]}x{frame.shape[0]}"
                )
            frames.append(frame)
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).contiguous()


def _first_line(err: BaseException) -> str:
    lines = [line for line in str(err).splitlines() if line.strip()]
    return lines[-1] if lines else type(err).__name__


def _natural_key(path: Path) -> tuple[list[int | str], str]:
    """Sort key that orders frame_2 before frame_10."""
    parts = re.split(r"(\d+)", path.name.lower())
    return [int(p) if p.isdigit() else p for p in parts], path.name


def _open(path: PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> _DecordSource | _FolderSource:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.is_dir():
        if not math.isfinite(folder_fps) or folder_fps <= 0:
            raise ValueError(f"folder_fps must be a positive number, got {folder_fps}")
        return _FolderSource(path, float(folder_fps))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoReadError(f"{path} is a single image, not a video; to read numbered frames pass their folder")
    return _DecordSource(path)


def _frames_to_read(info: VideoInfo, max_frames: int | None) -> int:
    if max_frames is None:
        return info.num_frames
    if max_frames <= 0:
        raise ValueError(f"max_frames must be a positive number of frames or None, got {max_frames}")
    return min(info.num_frames, int(max_frames))


def list_videos(folder: PathLike) -> list[Path]:
    """Video files and folders of numbered frames in ``folder``, sorted by name (hidden entries skipped)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"video folder {folder} does not exist")
    found = []
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and entry.suffix.lower() in VIDEO_EXTENSIONS:
            found.append(entry)
        elif entry.is_dir() and any(p.suffix.lower() in IMAGE_EXTENSIONS for p in entry.iterdir()):
            found.append(entry)
    if not found:
        raise ValueError(
            f"no videos in {folder}: expected video files ({', '.join(VIDEO_EXTENSIONS)}) or folders of numbered frames"
        )
    return found


def video_info(path: PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> VideoInfo:
    """Frame count, fps and size of a video file or frame folder; decodes one frame."""
    return _open(path, folder_fps).info


def iter_video_chunks(path: PathLike, chunk_size: int, max_frames: int | None = None) -> Iterator[Tensor]:
    """Yield the frames of a video in order, as float32 chunks (t,3,H,W) in [0,1], t <= chunk_size.

    Only one chunk is decoded at a time, so memory is bounded by ``chunk_size``.
    Bad input raises at the call, before the first chunk is asked for.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive number of frames, got {chunk_size}")
    source = _open(path)
    num_frames = _frames_to_read(source.info, max_frames)
    return (source.read(start, min(num_frames, start + chunk_size)) for start in range(0, num_frames, chunk_size))


def read_video(
    path: PathLike, max_frames: int | None = None, folder_fps: float = DEFAULT_FOLDER_FPS
) -> tuple[Tensor, float]:
    """Read the first ``max_frames`` (all if None) frames of a video file or frame folder.

    A folder of frames gets ``folder_fps``.
    Returns (frames float32 (T,3,H,W) RGB in [0,1], fps). Raises FileNotFoundError
    for a missing path, VideoReadError for something that holds no readable
    frames, ValueError for max_frames <= 0.
    """
    source = _open(path, folder_fps)
    info = source.info
    num_frames = _frames_to_read(info, max_frames)
    frames = torch.empty(num_frames, 3, info.height, info.width)
    for start in range(0, num_frames, _READ_BATCH):
        stop = min(num_frames, start + _READ_BATCH)
        frames[start:stop] = source.read(start, stop)
    return frames, info.fps


def frame_rate(fps: float | Fraction) -> Fraction:
    """The exact rational frame rate to write for ``fps``.

    ``Fraction(fps).limit_denominator(1001)``, except that rates within 0.001
    of an NTSC rate n*1000/1001 (29.97, 23.976, 59.94) become that fraction.
    """
    if isinstance(fps, bool) or not isinstance(fps, numbers.Real) or not math.isfinite(fps) or fps <= 0:
        raise ValueError(f"fps must be a positive number, got {fps!r}")
    exact = fps if isinstance(fps, Fraction) else Fraction(float(fps))
    rate = exact.limit_denominator(1001)
    ntsc = Fraction(round(exact * Fraction(1001, 1000)) * 1000, 1001)
    if rate.denominator != 1 and ntsc > 0 and abs(ntsc - exact) < Fraction(1, 1000):
        return ntsc
    if rate <= 0:
        raise ValueError(f"fps {fps!r} is too small to write (at least 1/1001)")
    return rate


class VideoWriter:
    """Write an H.264 mp4 chunk by chunk; the file appears only when the ``with`` block succeeds.

    >>> with VideoWriter("out.mp4", fps=24) as writer:   # doctest: +SKIP
    ...     for chunk in chunks:                           # each (t,3,H,W) in [0,1]
    ...         writer.write(chunk)

    All chunks must have the size of the first. Values outside [0,1] are
    clipped; NaN/inf raise ValueError. An existing ``path`` raises
    FileExistsError unless ``overwrite``; on any error it is left untouched and
    the temporary file is removed.
    """

    def __init__(self, path: PathLike, fps: float, overwrite: bool = False, crf: int = DEFAULT_CRF) -> None:
        self.path = Path(path)
        self.rate = frame_rate(fps)
        self.crf = crf
        if self.path.is_dir():
            raise IsADirectoryError(f"cannot write a video to {self.path}: it is a folder")
        if self.path.exists() and not overwrite:
            raise FileExistsError(f"{self.path} already exists; pass overwrite=True to replace it")
        self.frames_written = 0
        self._size: tuple[int, int] | None = None
        self._stack: contextlib.ExitStack | None = None
        self._container = None
        self._stream = None

    def __enter__(self) -> VideoWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path, suffix=".mp4"))
            self._container = stack.enter_context(av.open(str(tmp), mode="w", format="mp4"))
            self._stack = stack.pop_all()
        return self

    def write(self, frames: Tensor) -> None:
        """Append frames (t,3,H,W) float in [0,1]."""
        if self._stack is None:
            raise RuntimeError("use VideoWriter in a `with` block before calling write()")
        pixels = to_uint8(frames)
        size = pixels.shape[1:3]
        if self._size is None:
            self._size = size
            self._stream = self._add_stream(size[0] + size[0] % 2, size[1] + size[1] % 2)
        elif size != self._size:
            raise ValueError(f"frame size changed from {self._size} to {size} while writing {self.path}")
        if size[0] % 2 or size[1] % 2:
            pixels = np.pad(pixels, ((0, 0), (0, size[0] % 2), (0, size[1] % 2), (0, 0)), mode="edge")
        for image in pixels:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts = self.frames_written
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def _add_stream(self, height: int, width: int):
        stream = self._container.add_stream("libx264", rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.codec_context.time_base = 1 / self.rate
        stream.options = {"crf": str(self.crf)}
        return stream

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        if exc_type is None:
            try:
                if self.frames_written == 0:
                    raise ValueError(f"no frames were written to {self.path}")
                self._container.mux(self._stream.encode(None))  # flush the encoder
            except BaseException as err:
                if not stack.__exit__(type(err), err, err.__traceback__):
                    raise
                return False
        return stack.__exit__(exc_type, exc, tb)


def write_video(path: PathLike, frames: Tensor, fps: float, overwrite: bool = False, crf: int = DEFAULT_CRF) -> None:
    """Write frames (T,3,H,W) float in [0,1] as an H.264 mp4 at exactly ``fps``, atomically.

    See ``VideoWriter`` for errors, clipping and odd sizes.
    """
    with VideoWriter(path, fps, overwrite=overwrite, crf=crf) as writer:
        for chunk in frames.split(_READ_BATCH) if isinstance(frames, Tensor) else [frames]:
            writer.write(chunk)
