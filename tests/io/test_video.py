"""Reading and writing videos and frame folders, on the real clips in ../shared/data/videos."""

from __future__ import annotations

import shutil
from fractions import Fraction

import pytest
import torch
from PIL import Image

from pipeline.io.images import load_image, resize_to_width, save_image
from pipeline.io.video import (
    VideoInfo,
    VideoReadError,
    VideoWriter,
    frame_rate,
    iter_video_chunks,
    read_video,
    video_info,
    write_video,
)


@pytest.fixture(scope="module")
def wolf(data_dir):
    """All frames of test/wolf.mp4 and its fps."""
    return read_video(data_dir / "videos" / "test" / "wolf.mp4")


@pytest.fixture(scope="module")
def alley(data_dir):
    """The 10 PNG frames of test/sintel_alley (512x218) and the folder fps."""
    return read_video(data_dir / "videos" / "test" / "sintel_alley")


@pytest.fixture(scope="module")
def small_frames(alley):
    """Four alley frames at 128x56: cheap to encode."""
    return resize_to_width(alley[0][:4], 128)


def test_read_video_file(wolf, data_dir):
    frames, fps = wolf
    assert frames.shape == (40, 3, 512, 512) and frames.dtype == torch.float32
    assert fps == 20.0
    assert 0.0 <= frames.min() and frames.max() <= 1.0 and frames[0].std() > 0.05
    assert (frames[-1] - frames[0]).abs().mean() > 0.01  # the wolf turns its head
    assert video_info(data_dir / "videos" / "test" / "wolf.mp4") == VideoInfo(40, 20.0, 512, 512)


def test_max_frames_reads_the_first_frames(wolf, alley, data_dir):
    frames, fps = read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=5)
    assert fps == 20.0 and torch.equal(frames, wolf[0][:5])
    frames, _ = read_video(data_dir / "videos" / "test" / "sintel_alley", max_frames=100)
    assert torch.equal(frames, alley[0])
    with pytest.raises(ValueError, match="max_frames"):
        read_video(data_dir / "videos" / "test" / "wolf.mp4", max_frames=0)


def test_read_frame_folder(alley, data_dir):
    frames, fps = alley
    folder = data_dir / "videos" / "test" / "sintel_alley"
    assert frames.shape == (10, 3, 218, 512) and fps == 24.0
    assert torch.equal(frames[0], load_image(folder / "frame_0016.png")[0])
    assert torch.equal(frames[-1], load_image(folder / "frame_0025.png")[0])
    assert read_video(folder, max_frames=1, folder_fps=12.5)[1] == 12.5
    assert video_info(folder) == VideoInfo(10, 24.0, 218, 512)


def test_frame_folder_natural_order_and_formats(small_frames, tmp_path):
    # names whose plain string order would be 1, 10, 2; mixed extensions; a hidden file ignored
    for number, frame, ext in zip((1, 2, 10), small_frames, (".png", ".bmp", ".png")):
        save_image(tmp_path / f"f_{number}{ext}", frame)
    (tmp_path / "notes.txt").write_text("ignored")
    save_image(tmp_path / ".f_0.png", small_frames[3])
    frames, _ = read_video(tmp_path)
    assert frames.shape == (3, 3, 56, 128)
    assert torch.allclose(frames, small_frames[:3], atol=0.5 / 255)


def test_frame_folder_with_mixed_sizes_is_rejected(small_frames, tmp_path):
    save_image(tmp_path / "frame_1.png", small_frames[0])
    save_image(tmp_path / "frame_2.png", small_frames[1, :, :40, :60])
    with pytest.raises(VideoReadError, match=r"differ in size.*frame_2\.png is 60x40"):
        read_video(tmp_path)


def test_grayscale_frames_become_rgb(small_frames, tmp_path):
    save_image(tmp_path / "frame_1.png", small_frames[0])
    Image.open(tmp_path / "frame_1.png").convert("L").save(tmp_path / "frame_2.png")
    frames, _ = read_video(tmp_path)
    assert frames.shape == (2, 3, 56, 128)
    assert torch.equal(frames[1, 0], frames[1, 2])


def test_write_read_round_trip(alley, tmp_path):
    frames, fps = alley
    path = tmp_path / "alley.mp4"
    write_video(path, frames, fps)
    back, back_fps = read_video(path)
    assert back.shape == frames.shape and back_fps == fps
    assert (back - frames).abs().mean() < 0.015
    assert list(tmp_path.iterdir()) == [path]


def test_ntsc_frame_rate_is_kept(data_dir, tmp_path):
    frames, fps = read_video(data_dir / "videos" / "train" / "dog.mp4", max_frames=3)
    assert frame_rate(fps) == Fraction(30000, 1001) == frame_rate(29.97)
    write_video(tmp_path / "dog.mp4", resize_to_width(frames, 128), fps)
    assert video_info(tmp_path / "dog.mp4") == VideoInfo(3, fps, 72, 128)
    assert frame_rate(24) == 24 and frame_rate(12.5) == Fraction(25, 2)
    for bad in (0, -24, float("nan"), 1e-5, "24"):
        with pytest.raises(ValueError, match="fps"):
            frame_rate(bad)


def test_odd_size_is_padded_by_repeating_the_edge(small_frames, tmp_path):
    odd = small_frames[:, :, :55, :127]
    write_video(tmp_path / "odd.mp4", odd, 24)
    back, _ = read_video(tmp_path / "odd.mp4")
    assert back.shape == (4, 3, 56, 128)
    assert (back[..., :55, :127] - odd).abs().mean() < 0.03
    assert (back[..., 55, :127] - odd[..., 54, :]).abs().mean() < 0.03
    assert (back[..., :55, 127] - odd[..., :, 126]).abs().mean() < 0.03


def test_writer_streams_chunks(small_frames, tmp_path):
    path = tmp_path / "chunks.mp4"
    with VideoWriter(path, fps=10) as writer:
        for chunk in small_frames.split(3):
            writer.write(chunk)
    assert writer.frames_written == 4
    assert video_info(path) == VideoInfo(4, 10.0, 56, 128)


def test_error_mid_write_leaves_nothing_and_keeps_existing_file(small_frames, tmp_path):
    path = tmp_path / "out.mp4"
    with pytest.raises(RuntimeError, match="interrupted"), VideoWriter(path, fps=24) as writer:
        writer.write(small_frames[:2])
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []

    write_video(path, small_frames[:2], 24)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="NaN"):
        write_video(path, torch.cat([small_frames, torch.full_like(small_frames, float("nan"))]), 24, overwrite=True)
    with pytest.raises(ValueError, match="frame size changed"), VideoWriter(path, 24, overwrite=True) as writer:
        writer.write(small_frames[:1])
        writer.write(small_frames[1:2, :, :40, :40])
    assert path.read_bytes() == before
    assert list(tmp_path.iterdir()) == [path]


def test_existing_file_needs_overwrite(small_frames, tmp_path):
    path = tmp_path / "out.mp4"
    write_video(path, small_frames[:1], 24)
    with pytest.raises(FileExistsError, match=r"out\.mp4.*--overwrite"):
        write_video(path, small_frames, 24)
    write_video(path, small_frames, 24, overwrite=True)
    assert video_info(path).num_frames == 4


@pytest.mark.parametrize(
    "frames",
    [
        torch.rand(2, 56, 128, 3),  # channels last
        torch.rand(3, 56, 128),  # one frame without the time axis
        torch.full((2, 3, 56, 128), float("nan")),
        torch.zeros(0, 3, 56, 128),
    ],
    ids=["channels_last", "no_time_axis", "nan", "no_frames"],
)
@pytest.mark.fast
def test_bad_frames_are_refused(frames, tmp_path):
    with pytest.raises(ValueError, match=r"\(N,3,H,W\)|NaN|no frames"):
        write_video(tmp_path / "bad.mp4", frames, 24)
    assert list(tmp_path.iterdir()) == []


def _bad_inputs(data_dir, tmp_path):
    (tmp_path / "notes.txt").write_text("this is not a video\n" * 10)
    shutil.copy(data_dir / "photos" / "rocket.jpg", tmp_path / "rocket.jpg")
    shutil.copy(data_dir / "photos" / "rocket.jpg", tmp_path / "rocket.mp4")
    (tmp_path / "empty").mkdir()
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "a.txt").write_text("a")
    (tmp_path / "fake_frames").mkdir()
    (tmp_path / "fake_frames" / "frame_1.png").write_text("not a png")
    return {
        "missing.mp4": FileNotFoundError,
        "notes.txt": VideoReadError,
        "rocket.jpg": VideoReadError,
        "rocket.mp4": VideoReadError,
        "empty": VideoReadError,
        "texts": VideoReadError,
        "fake_frames": VideoReadError,
    }


def test_bad_inputs_raise_documented_errors(data_dir, tmp_path):
    for name, error in _bad_inputs(data_dir, tmp_path).items():
        for reader in (read_video, video_info, lambda p: iter_video_chunks(p, 4)):
            with pytest.raises(error, match=name):
                reader(tmp_path / name)
    assert issubclass(VideoReadError, ValueError)


def test_chunks_concatenate_to_the_full_read(alley, wolf, data_dir):
    chunks = list(iter_video_chunks(data_dir / "videos" / "test" / "sintel_alley", chunk_size=4))
    assert [len(c) for c in chunks] == [4, 4, 2]
    assert torch.equal(torch.cat(chunks), alley[0])
    chunks = list(iter_video_chunks(data_dir / "videos" / "test" / "wolf.mp4", chunk_size=3, max_frames=7))
    assert [len(c) for c in chunks] == [3, 3, 1]
    assert torch.equal(torch.cat(chunks), wolf[0][:7])
    with pytest.raises(ValueError, match="chunk_size"):
        iter_video_chunks(data_dir / "videos" / "test" / "wolf.mp4", chunk_size=0)
