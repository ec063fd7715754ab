"""Video input and output: video files and folders of numbered frames.

Reading: video files with decord (CPU, decoded in batches), or a folder of
numbered images (.png/.jpg/.jpeg/.bmp/.webp, natural sort on the numbers in
the names, hidden files ignored; all frames must share one size). Frames come
back as float32 tensors (T,3,H,W), RGB, in [0,1], with the frame rate; a
folder has no frame rate of its own, so it gets ``folder_fps`` (24 by default).
``iter_video_chunks`` streams a long video in chunks so memory stays bounded.

Reading falls back to PyAV for files decord cannot decode (very small frames).

Writing (PyAV), format by extension: H.264 mp4 (libx264, yuv420p, crf 18), VP9
webm, gif, or numbered PNG frames for a path ending with ``/``; the input's
audio can be copied in. Everything is written into a temporary file or folder
beside the target that replaces it only when writing succeeded. mp4's yuv420p
needs even sides: a frame with an odd height or width is padded by repeating
its last row / column, so the written video is one pixel larger on that side.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import torch
from PIL import Image
from torch import Tensor

from pipeline.io.files import atomic_output, sweep_stale_temporaries, temporary_name
from pipeline.io.images import ImageReadError, load_image_array, to_uint8

PathLike = str | os.PathLike

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
DEFAULT_FOLDER_FPS = 24.0
DEFAULT_CRF = 18
VP9_CRF_OFFSET = 13  # VP9's crf scale (0-63) sits higher than x264's (0-51) for similar quality: 18 -> 31
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


class _PyAVSource:
    """Frames of a video file decoded by PyAV (FFmpeg): the fallback for files decord cannot decode, such
    as very small frames. Frames are decoded in order; reading backwards restarts the decoder."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            with av.open(str(path)) as container:
                if container.format.name.endswith("_pipe") or container.format.name == "image2":
                    raise VideoReadError(f"{path} is a single image ({container.format.name}), not a video")
                if not container.streams.video:
                    raise VideoReadError(f"{path} holds no video stream")
                stream = container.streams.video[0]
                rate = stream.average_rate or stream.guessed_rate
                num_frames = stream.frames or sum(1 for _ in container.decode(stream))
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{path} is not a readable video: {_first_line(err)}") from err
        if not num_frames:
            raise VideoReadError(f"{path} is a video without frames")
        if rate is None or float(rate) <= 0:
            raise VideoReadError(f"{path} has no valid frame rate")
        first = next(self._decode(0))
        self.info = VideoInfo(num_frames, float(rate), first.shape[0], first.shape[1])
        self._frames: Iterator[np.ndarray] | None = None
        self._position = 0

    def _decode(self, start: int) -> Iterator[np.ndarray]:
        with av.open(str(self.path)) as container:
            for index, frame in enumerate(container.decode(video=0)):
                if index >= start:
                    yield frame.to_ndarray(format="rgb24")

    def read(self, start: int, stop: int) -> Tensor:
        if self._frames is None or start != self._position:  # streaming reads continue where the last ended
            self._frames = self._decode(start)
        try:
            frames = [frame for _, frame in zip(range(stop - start), self._frames)]
            self._position = start + len(frames)
        except av.error.FFmpegError as err:
            raise VideoReadError(f"{self.path}: cannot decode frames {start}-{stop - 1}: {_first_line(err)}") from err
        if len(frames) < stop - start:
            raise VideoReadError(f"{self.path}: frames {start + len(frames)}-{stop - 1} cannot be decoded")
        return torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2).to(torch.float32).div_(255.0)


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


def _open(path: PathLike, folder_fps: float = DEFAULT_FOLDER_FPS) -> _DecordSource | _PyAVSource | _FolderSource:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"video not found: {path}")
    if path.is_dir():
        if not math.isfinite(folder_fps) or folder_fps <= 0:
            raise ValueError(f"folder_fps must be a positive number, got {folder_fps}")
        return _FolderSource(path, float(folder_fps))
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        raise VideoReadError(f"{path} is a single image, not a video; to read numbered frames pass their folder")
    try:
        source = _DecordSource(path)
        source.read(0, min(2, source.info.num_frames))  # decord opens some files it cannot decode in batches
        return source
    except VideoReadError as decord_error:
        try:
            return _PyAVSource(path)
        except VideoReadError:
            raise decord_error from None


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


@dataclass(frozen=True)
class OutputFormat:
    """How a video of one file extension is written: container, video codec and pixel format, the audio
    codecs that are copied as they are and the encoder that re-encodes any other (None: no audio)."""

    container: str
    codec: str
    pix_fmt: str
    even_sides: bool
    audio_copy: tuple[str, ...] = ()
    audio_encoder: str | None = None
    audio_rate: int | None = None


OUTPUT_FORMATS = {
    ".mp4": OutputFormat("mp4", "libx264", "yuv420p", True, ("aac", "mp3", "alac"), "aac"),
    ".webm": OutputFormat("webm", "libvpx-vp9", "yuv420p", False, ("opus", "vorbis"), "libopus", 48000),
    ".gif": OutputFormat("gif", "gif", "rgb8", False),
}
FRAMES_OUTPUT = "frames"  # an output path ending with "/": a folder of numbered PNG frames


def output_kind(path: PathLike) -> str:
    """The output kind of ``path`` from its spelling: an ``OUTPUT_FORMATS`` extension, or ``FRAMES_OUTPUT`` for a
    path ending with ``/``; any other is a ValueError naming the supported ones."""
    text = os.fspath(path)
    if text.endswith(("/", os.sep)):
        return FRAMES_OUTPUT
    suffix = Path(text).suffix.lower()
    if suffix not in OUTPUT_FORMATS:
        supported = ", ".join(OUTPUT_FORMATS)
        raise ValueError(f"cannot write {text}: unsupported output {suffix or '(no extension)'}; use {supported}, "
                         "or end the path with / for a folder of PNG frames")
    return suffix


def check_output(path: PathLike, overwrite: bool = False) -> str:
    """Refuse an output that cannot be written, before any work: returns its ``output_kind``.

    Unsupported extension (ValueError), missing or unwritable folder (FileNotFoundError / PermissionError, found
    by creating a probe file, which also catches read-only file systems), an existing output without
    ``overwrite`` (FileExistsError), a folder where a file is asked for or a file where a folder is (ValueError).
    """
    kind = output_kind(path)
    target = Path(path)
    if kind == FRAMES_OUTPUT and target.is_file():
        raise ValueError(f"cannot write frames to {path}: it is a file")
    if kind != FRAMES_OUTPUT and target.is_dir():
        raise ValueError(f"cannot write a video to {path}: it is a folder (end the path with / to write PNG frames)")
    if target.exists() and not overwrite:
        raise FileExistsError(f"{path} already exists; pass --overwrite to replace it")
    folder = target.parent
    if not folder.is_dir():
        raise FileNotFoundError(f"cannot write {path}: folder {folder} does not exist")
    probe = folder / f".{target.name}.{os.getpid()}-probe.tmp"
    try:
        probe.touch()
        probe.unlink()
    except OSError as err:
        raise PermissionError(f"cannot write to folder {folder}: {err.strerror or err}") from None
    return kind


def has_audio(path: PathLike) -> bool:
    """Whether ``path`` is a media file with an audio stream (False for folders and unreadable files)."""
    if not Path(path).is_file():
        return False
    try:
        with av.open(str(path)) as container:
            return bool(container.streams.audio)
    except av.error.FFmpegError:
        return False


class VideoWriter:
    """Write a video chunk by chunk; the file appears only when the ``with`` block succeeds.

    >>> with VideoWriter("out.mp4", fps=24) as writer:   # doctest: +SKIP
    ...     for chunk in chunks:                           # each (t,3,H,W) in [0,1]
    ...         writer.write(chunk)

    The format follows the extension (``OUTPUT_FORMATS``: H.264 mp4, VP9 webm, gif). ``audio_from``: a media
    file whose audio stream is copied in (re-encoded where the container needs another codec), trimmed to the
    frames written. All chunks must have the size of the first. Values outside [0,1] are clipped; NaN/inf
    raise ValueError. An existing ``path`` raises FileExistsError unless ``overwrite``; on any error it is left
    untouched and the temporary file is removed. mp4 needs even sides: an odd height or width is padded by
    repeating the last row / column (``size`` is the written size).
    """

    def __init__(self, path: PathLike, fps: float, overwrite: bool = False, crf: int = DEFAULT_CRF,
                 audio_from: PathLike | None = None) -> None:
        kind = check_output(path, overwrite)
        if kind == FRAMES_OUTPUT:
            raise ValueError(f"{path} names a folder of frames; use FrameFolderWriter (or open_writer)")
        self.path = Path(path)
        self.format = OUTPUT_FORMATS[kind]
        self.rate = frame_rate(fps)
        self.crf = crf
        self.audio_from = Path(audio_from) if audio_from is not None and self.format.audio_encoder else None
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self._input_size: tuple[int, int] | None = None
        self._stack: contextlib.ExitStack | None = None
        self._container = None
        self._stream = None
        self._audio = None  # (input container, input stream, output stream, copied as is)

    def __enter__(self) -> VideoWriter:
        with contextlib.ExitStack() as stack:
            tmp = stack.enter_context(atomic_output(self.path, suffix=self.path.suffix.lower()))
            self._container = stack.enter_context(av.open(str(tmp), mode="w", format=self.format.container))
            if self.audio_from is not None and has_audio(self.audio_from):
                source = stack.enter_context(av.open(str(self.audio_from)))
                self._audio = self._add_audio_stream(source)
            self._stack = stack.pop_all()
        return self

    @property
    def audio(self) -> bool:
        """Whether the file gets an audio stream (from ``audio_from``)."""
        return self._audio is not None

    def _add_audio_stream(self, source) -> tuple:
        stream = source.streams.audio[0]
        if stream.codec_context.name in self.format.audio_copy:
            return source, stream, self._container.add_stream_from_template(stream), True
        rate = self.format.audio_rate or stream.codec_context.sample_rate
        out = self._container.add_stream(self.format.audio_encoder, rate=rate)
        out.layout = "stereo" if stream.codec_context.layout.nb_channels >= 2 else "mono"
        return source, stream, out, False

    def write(self, frames: Tensor) -> None:
        """Append frames (t,3,H,W) float in [0,1]."""
        if self._stack is None:
            raise RuntimeError("use VideoWriter in a `with` block before calling write()")
        pixels = to_uint8(frames)
        size = pixels.shape[1:3]
        if self._input_size is None:
            self._input_size = size
            pad = (size[0] % 2, size[1] % 2) if self.format.even_sides else (0, 0)
            self.size = (size[0] + pad[0], size[1] + pad[1])
            self._stream = self._add_stream(*self.size)
        elif size != self._input_size:
            raise ValueError(f"frame size changed from {self._input_size} to {size} while writing {self.path}")
        if self.size != size:
            pixels = np.pad(pixels, ((0, 0), (0, self.size[0] - size[0]), (0, self.size[1] - size[1]), (0, 0)), mode="edge")
        for image in pixels:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            if self.format.pix_fmt == "rgb8":
                frame = frame.reformat(format="rgb8")
            frame.pts = self.frames_written
            self._container.mux(self._stream.encode(frame))
            self.frames_written += 1

    def _add_stream(self, height: int, width: int):
        stream = self._container.add_stream(self.format.codec, rate=self.rate)
        stream.width, stream.height, stream.pix_fmt = width, height, self.format.pix_fmt
        stream.codec_context.time_base = 1 / self.rate
        if self.format.codec == "libx264":
            stream.options = {"crf": str(self.crf)}
        elif self.format.codec == "libvpx-vp9":
            stream.options = {"crf": str(self.crf + VP9_CRF_OFFSET), "b": "0", "row-mt": "1", "deadline": "realtime",
                              "cpu-used": "8"}
        return stream

    def _mux_audio(self) -> None:
        """Copy (or re-encode) the source's audio up to the end of the frames written."""
        source, stream, out, copy = self._audio
        end = self.frames_written / self.rate  # seconds of video written
        if copy:
            for packet in source.demux(stream):
                if packet.dts is None:
                    continue
                if packet.pts is not None and packet.pts * packet.time_base >= end:
                    break
                packet.stream = out
                self._container.mux(packet)
            return
        resampler = av.AudioResampler(format=out.codec_context.format, layout=out.layout, rate=out.codec_context.sample_rate)
        for frame in source.decode(stream):
            if frame.time is not None and frame.time >= end:
                break
            for resampled in resampler.resample(frame):
                resampled.pts = None
                self._container.mux(out.encode(resampled))
        self._container.mux(out.encode(None))

    def __exit__(self, exc_type, exc, tb) -> bool:
        stack, self._stack = self._stack, None
        if exc_type is None:
            try:
                if self.frames_written == 0:
                    raise ValueError(f"no frames were written to {self.path}")
                self._container.mux(self._stream.encode(None))  # flush the encoder
                if self._audio is not None:
                    self._mux_audio()
            except BaseException as err:
                if not stack.__exit__(type(err), err, err.__traceback__):
                    raise
                return False
        return stack.__exit__(exc_type, exc, tb)


class FrameFolderWriter:
    """Write frames as numbered PNGs (``frame_00000.png``, ...) into a folder that appears only when the ``with``
    block succeeds (written into a hidden temporary folder beside it, then renamed). An existing folder is
    replaced only with ``overwrite``. Same ``write`` and ``frames_written``/``size`` as ``VideoWriter``."""

    def __init__(self, path: PathLike, overwrite: bool = False) -> None:
        check_output(os.path.join(os.fspath(path), ""), overwrite)
        self.path = Path(path)
        self.frames_written = 0
        self.size: tuple[int, int] | None = None
        self.audio = False  # frames have no sound
        self._tmp: Path | None = None

    def __enter__(self) -> FrameFolderWriter:
        sweep_stale_temporaries(self.path)
        self._tmp = temporary_name(self.path)
        self._tmp.mkdir()
        return self

    def write(self, frames: Tensor) -> None:
        """Append frames (t,3,H,W) float in [0,1] as PNG files."""
        if self._tmp is None:
            raise RuntimeError("use FrameFolderWriter in a `with` block before calling write()")
        pixels = to_uint8(frames)
        if self.size is not None and pixels.shape[1:3] != self.size:
            raise ValueError(f"frame size changed from {self.size} to {pixels.shape[1:3]} while writing {self.path}")
        self.size = pixels.shape[1:3]
        for image in pixels:
            Image.fromarray(image).save(self._tmp / f"frame_{self.frames_written:05d}.png")
            self.frames_written += 1

    def __exit__(self, exc_type, exc, tb) -> bool:
        tmp, self._tmp = self._tmp, None
        if exc_type is None and self.frames_written == 0:
            shutil.rmtree(tmp)
            raise ValueError(f"no frames were written to {self.path}")
        if exc_type is not None:
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        if self.path.exists():
            old = temporary_name(self.path, ".old")
            os.replace(self.path, old)
            os.replace(tmp, self.path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, self.path)
        return False


def open_writer(path: PathLike, fps: float, overwrite: bool = False,
                audio_from: PathLike | None = None) -> VideoWriter | FrameFolderWriter:
    """The writer for ``path``'s ``output_kind``: a ``FrameFolderWriter`` for a path ending with ``/``, else a
    ``VideoWriter`` (``audio_from``: copy that file's audio, where the format holds audio)."""
    if output_kind(path) == FRAMES_OUTPUT:
        return FrameFolderWriter(path, overwrite=overwrite)
    return VideoWriter(path, fps, overwrite=overwrite, audio_from=audio_from)


def write_video(path: PathLike, frames: Tensor, fps: float, overwrite: bool = False, crf: int = DEFAULT_CRF) -> None:
    """Write frames (T,3,H,W) float in [0,1] as a video at exactly ``fps`` (format by extension), atomically.

    See ``VideoWriter`` for errors, clipping and odd sizes.
    """
    with VideoWriter(path, fps, overwrite=overwrite, crf=crf) as writer:
        for chunk in frames.split(_READ_BATCH) if isinstance(frames, Tensor) else [frames]:
            writer.write(chunk)
