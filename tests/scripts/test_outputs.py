"""What a user gets from stylize_video.py on real clips: output formats by extension, the audio kept, scene cuts
handled, whole folders, and clear one-line errors that leave nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import av
import numpy as np
import pytest
import torch

from pipeline.evaluation.metrics import load_inputs
from pipeline.io.files import sweep_stale_temporaries, temporary_name
from pipeline.io.images import load_image, resize_to_width
from pipeline.io.video import read_video, video_info, write_video
from pipeline.latents.codecs import load_codec
from pipeline.latents.stylizers import build_stylizer
from pipeline.methods import Components, load_method
from pipeline.scenes import scene_cuts
from scripts import stylize_video

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def paths(data_dir):
    return {"wolf": data_dir / "videos" / "test" / "wolf.mp4", "alley": data_dir / "videos" / "test" / "sintel_alley",
            "starry": data_dir / "styles" / "starry_night.jpg"}


def run(argv, tmp_path):
    return stylize_video.main([*map(str, argv), "--cache-dir", str(tmp_path / "cache")])


def script(argv, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "scripts/stylize_video.py", *map(str, argv), "--no-cache"],
                          capture_output=True, text=True, cwd=REPO, **kwargs)


def clip_with_audio(path: Path, frames: torch.Tensor, fps: int = 10, seconds: float = 3.0) -> Path:
    """An mp4 of ``frames`` with a 440 Hz AAC tone lasting ``seconds`` (longer than the video)."""
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=fps)
        video.width, video.height, video.pix_fmt = frames.shape[-1], frames.shape[-2], "yuv420p"
        audio = container.add_stream("aac", rate=44100)
        audio.layout = "mono"
        for index, image in enumerate((frames.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8)):
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = index
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(int(44100 * seconds)) / 44100)).astype(np.float32)
        for start in range(0, len(tone), 1024):
            samples = av.AudioFrame.from_ndarray(tone[None, start : start + 1024], format="fltp", layout="mono")
            samples.sample_rate, samples.pts = 44100, start
            container.mux(audio.encode(samples))
        container.mux(audio.encode(None))
    return path


def audio_seconds(path: Path) -> float:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        return sum(frame.samples for frame in container.decode(stream)) / stream.codec_context.sample_rate


@pytest.fixture(scope="module")
def wolf_64(paths) -> torch.Tensor:
    return resize_to_width(read_video(paths["wolf"], max_frames=12)[0], 64)


@pytest.mark.parametrize("suffix", [".mp4", ".webm"])
def test_audio_is_kept_and_trimmed_to_the_frames_written(tmp_path, paths, wolf_64, suffix):
    source = clip_with_audio(tmp_path / "talk.mp4", wolf_64)
    out = tmp_path / f"out{suffix}"
    summary = run(["--video", source, "--style", paths["starry"], "--out", out, "--max-frames", "6"], tmp_path)
    assert summary["audio"] and video_info(out).num_frames == 6
    assert audio_seconds(source) > 2.9
    assert abs(audio_seconds(out) - 0.6) < 0.1  # 6 frames at 10 fps


def test_formats_follow_the_extension(tmp_path, paths, wolf_64):
    source = tmp_path / "wolf.mp4"
    write_video(source, wolf_64[:3], 10)
    for out, container in [("a.webm", "matroska,webm"), ("a.gif", "gif"), ("a.mp4", "mov,mp4")]:
        run(["--video", source, "--style", paths["starry"], "--out", tmp_path / out], tmp_path)
        with av.open(str(tmp_path / out)) as opened:
            assert opened.format.name.startswith(container)
        assert video_info(tmp_path / out).num_frames == 3
    summary = run(["--video", source, "--style", paths["starry"], "--out", f"{tmp_path / 'frames'}/"], tmp_path)
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == ["frame_00000.png", "frame_00001.png",
                                                                        "frame_00002.png"]
    assert not summary["audio"]
    for bad in ("a.avi", "noext"):
        result = script(["--video", source, "--style", paths["starry"], "--out", tmp_path / bad])
        assert result.returncode == 2 and "unsupported output" in result.stderr and "Traceback" not in result.stderr
        assert not (tmp_path / bad).exists()


@pytest.mark.parametrize("side", [16, 24, 48])
def test_tiny_videos_are_read(tmp_path, paths, wolf_64, side):
    source = tmp_path / f"tiny{side}.mp4"
    write_video(source, resize_to_width(wolf_64[:4], side), 10)
    frames, fps = read_video(source)
    assert frames.shape == (4, 3, side, side) and fps == 10
    out = tmp_path / "out.mp4"
    run(["--video", source, "--style", paths["starry"], "--out", out], tmp_path)
    assert video_info(out).num_frames == 4


def test_odd_sizes_round_trip_through_evaluate(tmp_path, paths):
    content = tmp_path / "content.webm"  # VP9 keeps odd sides
    write_video(content, torch.rand(2, 3, 239, 321), 10)
    assert (video_info(content).width, video_info(content).height) == (321, 239)
    summary = run(["--video", content, "--style", paths["starry"], "--out", tmp_path / "o.mp4"], tmp_path)
    assert summary["output_size"] == (240, 322) and video_info(tmp_path / "o.mp4").width == 322  # mp4's even sides
    original, stylized, notes = load_inputs(content, tmp_path / "o.mp4")
    assert stylized.shape == original.shape and notes["cropped"]["from"] == [240, 322]
    with pytest.raises(ValueError, match="resize"):
        load_inputs(content, torch.rand(2, 3, 236, 321))


def test_unwritable_folder_and_folder_target_fail_before_any_work(tmp_path, paths):
    locked = Path("/sys") if os.geteuid() == 0 else tmp_path / "locked"  # root writes anywhere but sysfs
    if locked != Path("/sys"):
        locked.mkdir(mode=0o500)
    result = script(["--video", paths["wolf"], "--style", paths["starry"], "--out", locked / "o.mp4"])
    assert result.returncode == 2 and f"cannot write to folder {locked}" in result.stderr
    assert "Traceback" not in result.stderr and "stylizing" not in result.stderr  # refused before reading frames
    (tmp_path / "taken").mkdir()
    result = script(["--video", paths["wolf"], "--style", paths["starry"], "--out", tmp_path / "taken", "--overwrite"])
    assert result.returncode == 2 and "Traceback" not in result.stderr


def interrupt_mid_run(argv: list, signum: int) -> tuple[int, str]:
    """Start stylize_video.py, send ``signum`` once it reports progress, return (status, stderr)."""
    process = subprocess.Popen([sys.executable, "scripts/stylize_video.py", *map(str, argv), "--no-cache"], cwd=REPO,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    seen, deadline = b"", time.monotonic() + 120
    while b"frame/s" not in seen and time.monotonic() < deadline and process.poll() is None:
        seen += os.read(process.stderr.fileno(), 256)  # tqdm's first rate report: frames are being stylized
    process.send_signal(signum)
    rest = process.stderr.read()
    process.wait(timeout=120)
    return process.returncode, (seen + rest).decode(errors="replace")


def test_sigterm_leaves_nothing_and_stale_temporaries_are_swept(tmp_path, paths):
    out = tmp_path / "long.mp4"
    status, stderr = interrupt_mid_run(["--video", paths["wolf"], "--style", paths["starry"], "--out", out,
                                        "--size", "256", "--chunk-size", "2"], signal.SIGTERM)
    assert status == 130, stderr
    assert "Traceback" not in stderr and "interrupted (SIGTERM)" in stderr
    assert list(tmp_path.iterdir()) == []
    # a writer killed with SIGKILL leaves its temporary; the next write of the same output sweeps it
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = temporary_name(out, ".mp4").with_name(f".long.mp4.{dead.pid}-abcdef.tmp.mp4")
    stale.write_bytes(b"half")
    live = temporary_name(out, ".mp4")  # this process's: not stale
    live.write_bytes(b"busy")
    assert sweep_stale_temporaries(out) == [stale] and live.exists()
    live.unlink()


def test_scene_cut_restarts_the_temporal_state(tmp_path, paths):
    wolf = resize_to_width(read_video(paths["wolf"], max_frames=6)[0], 64)
    alley = resize_to_width(read_video(paths["alley"], max_frames=6)[0], 64, multiple=1)
    alley = torch.nn.functional.interpolate(alley, size=wolf.shape[-2:], mode="bilinear", antialias=True)
    joined = torch.cat([wolf, alley])
    assert scene_cuts(joined) == [6] and scene_cuts(wolf) == [] and scene_cuts(alley) == []
    stylizer = build_stylizer("latent-wct", codec=load_codec("taef2"))
    components = Components(stylizer, None, torch.device("cpu"))
    style = load_image(paths["starry"])
    blend = load_method("flow-blend", components, "0.9").video(style)(joined)
    baseline = load_method("baseline", components).video(style)(joined)
    assert blend.cuts == [6]
    assert torch.equal(blend.result[6], baseline.result[6])  # nothing carried over the cut
    assert not torch.allclose(blend.result[7], baseline.result[7], atol=1e-3)  # the blend acts within a scene
    write_video(tmp_path / "joined.mp4", joined, 10)
    summary = run(["--video", tmp_path / "joined.mp4", "--style", paths["starry"], "--out", tmp_path / "o.mp4",
                   "--method", "flow-blend", "--source", "0.9", "--chunk-size", "4"], tmp_path)
    assert summary["scene_cuts"] == [6]


def test_a_folder_of_videos_is_stylized_and_resumed(tmp_path, paths, wolf_64):
    videos = tmp_path / "videos"
    videos.mkdir()
    write_video(videos / "a.mp4", wolf_64[:2], 10)
    write_video(videos / "b.mp4", wolf_64[2:5], 10)
    (videos / "broken.mp4").write_text("not a video")
    out = tmp_path / "out"
    first = run(["--video", videos, "--style", paths["starry"], "--out", f"{out}/"], tmp_path)
    assert (first["done"], first["skipped"], first["failed"]) == (2, 0, 1)
    assert video_info(out / "b.mp4").num_frames == 3 and not (out / "broken.mp4").exists()
    again = run(["--video", videos, "--style", paths["starry"], "--out", f"{out}/"], tmp_path)
    assert (again["done"], again["skipped"], again["failed"]) == (0, 2, 1)
    with pytest.raises(ValueError, match="ending with /"):
        run(["--video", videos, "--style", paths["starry"], "--out", tmp_path / "one.mp4"], tmp_path)


def test_degenerate_style_image_warns(tmp_path, paths):
    from PIL import Image

    Image.new("RGB", (1, 1), (200, 30, 30)).save(tmp_path / "dot.png")
    result = script(["--video", paths["wolf"], "--style", tmp_path / "dot.png", "--out", tmp_path / "o.mp4",
                     "--size", "64", "--max-frames", "2"])
    assert result.returncode == 0 and "warning:" in result.stderr and "1x1 px" in result.stderr


def test_sigint_prints_one_line(tmp_path, paths):
    status, stderr = interrupt_mid_run(["--video", paths["wolf"], "--style", paths["starry"], "--out",
                                        tmp_path / "o.mp4", "--size", "256", "--chunk-size", "2"], signal.SIGINT)
    assert status == 130 and "Traceback" not in stderr and "interrupted" in stderr
    assert list(tmp_path.iterdir()) == []
