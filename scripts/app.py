r"""A local web page to stylize a video: upload (or pick) a video and a style image, choose the method and its
strengths, start, watch the progress, compare the result with the input side by side, download it.

The page runs the same code as ``stylize_video.py`` (``pipeline.methods``), through ``scripts/_app_jobs.py``.
Uploads and results live in a temporary folder removed when the app exits.

Example:
    python scripts/app.py            # then open the address it prints (http://127.0.0.1:7860)
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import gradio as gr
import torch

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.io.video import VideoInfo  # noqa: E402
from pipeline.latents.cache import LatentCache  # noqa: E402
from scripts._app_jobs import (  # noqa: E402
    JobCancelled,
    JobRequest,
    JobResult,
    SessionJobs,
    Studio,
    UploadError,
    bundled_clips,
    bundled_styles,
    check_style,
    check_video,
    method_choices,
)
from scripts._cli import run_cli  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
NOTES = ("The default method refines the latents with the policy that ships with the project (trained for any "
         "style); the temporal-strength slider sets the flow-blend reference's factor. Trained runs (policies, "
         "RL-NST, RLMiniStyler) appear in the menu when their folders are under `runs/`. The download keeps the "
         "input's audio where it has one.")
LOG = logging.getLogger("vstyle.app")
MIN_WIDTH, MAX_WIDTH = 64, 512  # the output width slider's range
MAX_KEYFRAMES = 8  # the keyframe spacing slider's largest value
BUSY = "A job is already running in this browser session: wait for it to finish or cancel it."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=int, default=7860, help="port (default 7860)")
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="folder with the bundled videos/test clips and styles (default ../shared/data)")
    parser.add_argument("--runs", type=Path, default=REPO / "runs",
                        help="folder searched for trained runs (default runs/)")
    parser.add_argument("--size", type=int, default=256,
                        help=f"output width preset on the page, {MIN_WIDTH}-{MAX_WIDTH} px (default 256)")
    parser.add_argument("--max-frames", type=int, default=None, help="stylize at most the first N frames of a video")
    parser.add_argument("--max-seconds", type=float, default=60.0, help="longest video accepted, seconds (default 60)")
    parser.add_argument("--max-upload-mb", type=int, default=200, help="largest upload accepted, MB (default 200)")
    parser.add_argument("--chunk-size", type=int, default=8, help="frames per chunk and progress step (default 8)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="latent cache folder (default $VSTYLE_CACHE or ~/.cache/vstyle/latents)")
    parser.add_argument("--no-cache", action="store_true", help="do not read or write the latent cache")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="torch device")
    args = parser.parse_args(argv)
    if not MIN_WIDTH <= args.size <= MAX_WIDTH:
        parser.error(f"--size must be in [{MIN_WIDTH}, {MAX_WIDTH}], got {args.size}")
    if args.max_frames is not None and args.max_frames < 1:
        parser.error(f"--max-frames must be >= 1, got {args.max_frames}")
    return args


def video_label(info: VideoInfo, name: str) -> str:
    """One line on what a video holds."""
    seconds = info.num_frames / info.fps
    return f"{name}: {info.num_frames} frames, {info.width}x{info.height}, {info.fps:g} fps ({seconds:.1f} s)"


def metrics_table(result: JobResult) -> str:
    """Markdown of the scores of a finished job (lower is better for all three)."""
    summary = result.summary
    lines = [f"**Done:** stylized in {result.seconds:.1f} s, {summary['frames']} frames, "
             f"{summary['output_size'][1]}x{summary['output_size'][0]} px, {summary['fps']:g} fps, "
             + ("audio kept." if summary.get("audio") else "no audio (the input has none).")]
    if result.metrics is None:
        return "\n\n".join([*lines, result.metrics_note])
    metrics, reference = result.metrics["metrics"], result.metrics["reference"]
    lines += ["", "| score (lower is better) | result | input's own |", "|---|---|---|",
              (f"| warping error (RAFT flow) | {metrics['warping_error_raft']['mean']:.4f} | "
               f"{reference['content_warping_error_raft']['mean']:.4f} |"),
              f"| Gram style loss | {metrics['style_gram']['mean']:.4g} | |",
              f"| LPIPS to content | {metrics['lpips_content']['mean']:.4f} | |"]
    return "\n".join(lines)


def build_app(args: argparse.Namespace, work: Path) -> gr.Blocks:
    """The page: inputs and settings, Start/Cancel with progress, input | result, scores, download."""
    studio = Studio(torch.device(args.device), args.max_frames, args.chunk_size,
                    None if args.no_cache else LatentCache(args.cache_dir))
    jobs = SessionJobs()
    choices = {c.label: c for c in method_choices(args.runs)}
    clips = {p.name: p for p in bundled_clips(args.data)}
    styles = {p.stem: p for p in bundled_styles(args.data)}

    def use_video(path: str | None) -> tuple[Any, Any, str]:
        """(chosen video, its preview, message) of an upload or a bundled clip."""
        if not path:
            return None, None, ""
        try:
            info = check_video(path, args.max_seconds)
        except UploadError as error:
            return None, None, f"**Video refused:** {error}"
        preview = path if Path(path).is_file() else None
        trimmed = args.max_frames is not None and info.num_frames > args.max_frames
        limit = f"; the first {args.max_frames} are stylized" if trimmed else ""
        return path, preview, video_label(info, Path(path).name) + limit

    def use_style(path: str | None) -> tuple[Any, Any, str]:
        """(chosen style, its preview, message) of an upload or a bundled painting."""
        if not path:
            return None, None, ""
        try:
            image = check_style(path)
        except UploadError as error:
            return None, None, f"**Style refused:** {error}"
        return path, path, f"{Path(path).name}: {image.shape[-1]}x{image.shape[-2]} px"

    def start(video: str | None, style: str | None, method: str, alpha: float, temporal: float, width: float,
              keyframes: float, request: gr.Request, progress: gr.Progress = gr.Progress()) -> tuple[Any, ...]:
        """Run one job of this browser session: (status, input | result videos, scores, download)."""
        session = request.session_hash or "local"
        if not jobs.begin(session):
            gr.Warning(BUSY)
            return (BUSY, gr.skip(), gr.skip(), gr.skip(), gr.skip())
        try:
            if not video or not style:
                raise UploadError("choose a video and a style image first")
            began = time.perf_counter()

            def on_progress(done: int, total: int) -> None:
                jobs.checkpoint(session)
                left = (time.perf_counter() - began) / done * (total - done)
                progress((done, total), desc=f"stylizing, about {left:.0f} s left", unit="frames")

            progress(0, desc="loading the method")
            job = JobRequest(Path(video), Path(style), choices[method], alpha, temporal, int(width), int(keyframes))
            result = studio.run(job, Path(tempfile.mkdtemp(dir=work / "jobs")), on_progress,
                                lambda: progress(0, desc="waiting for another session's job to finish"))
            progress(1.0, desc="scoring the result")
            return ("", str(result.input_preview), str(result.output), metrics_table(result), str(result.output))
        except JobCancelled:
            return ("**Cancelled.** No output was kept.", gr.skip(), None, "", None)
        except (UploadError, FileNotFoundError, ValueError) as error:
            return (f"**Error:** {error}", gr.skip(), None, "", None)
        except Exception as error:  # the page gets one line; the console keeps the traceback
            LOG.exception("job failed")
            return (f"**Failed:** {type(error).__name__}: {error}", gr.skip(), None, "", None)
        finally:
            jobs.end(session)

    def cancel(request: gr.Request) -> str:
        """Ask this session's job to stop after its current chunk."""
        if jobs.cancel(request.session_hash or "local"):
            return "Cancelling after the current chunk..."
        return "No job is running."

    with gr.Blocks(title="vstyle: video style transfer", analytics_enabled=False) as app:
        gr.Markdown("# Video style transfer\nUpload a video and a style image, choose the method, press Start.\n\n"
                    + NOTES)
        video_path, style_path = gr.State(None), gr.State(None)
        with gr.Row():
            with gr.Column():
                video_upload = gr.File(label="Upload a video", file_types=["video"], height=90, elem_id="video-upload")
                clip_menu = gr.Dropdown(list(clips), value=None, label="...or a bundled test clip", elem_id="clip-menu")
                video_status = gr.Markdown(elem_id="video-status")
                style_upload = gr.File(label="Upload a style image", file_types=["image"], height=90,
                                       elem_id="style-upload")
                style_menu = gr.Dropdown(list(styles), value=None, label="...or a bundled painting",
                                         elem_id="style-menu")
                style_status = gr.Markdown(elem_id="style-status")
            with gr.Column():
                method = gr.Dropdown(list(choices), value=next(iter(choices)), label="Method", elem_id="method")
                alpha = gr.Slider(0, 1, value=1.0, step=0.05, label="Style strength (latent stylizer)")
                temporal = gr.Slider(0, 1, value=0.5, step=0.05, label="Temporal strength (flow-blend factor)")
                width = gr.Slider(MIN_WIDTH, MAX_WIDTH, value=args.size, step=8, label="Output width (px)")
                keyframes = gr.Slider(1, MAX_KEYFRAMES, value=1, step=1, elem_id="keyframes",
                                      label="Keyframes: stylize every K-th frame, carry it along the motion between "
                                            "(1 = every frame; larger = faster)")
                with gr.Row():
                    start_button = gr.Button("Start", variant="primary", elem_id="start")
                    cancel_button = gr.Button("Cancel", variant="stop", elem_id="cancel")
                status = gr.Markdown(elem_id="status")
            style_preview = gr.Image(label="Style", interactive=False, height=260, elem_id="style-preview")
        with gr.Row():
            input_video = gr.Video(label="Input", interactive=False, autoplay=True, loop=True, height=320,
                                   elem_id="input-video")
            result_video = gr.Video(label="Result", interactive=False, autoplay=True, loop=True, height=320,
                                    elem_id="result-video")
        with gr.Row():
            scores = gr.Markdown(elem_id="scores")
            download = gr.File(label="Download the result", interactive=False, elem_id="download")

        video_upload.upload(use_video, video_upload, [video_path, input_video, video_status])
        video_upload.clear(lambda: use_video(None), None, [video_path, input_video, video_status])
        clip_menu.input(lambda name: use_video(str(clips[name]) if name else None), clip_menu,
                        [video_path, input_video, video_status])
        style_upload.upload(use_style, style_upload, [style_path, style_preview, style_status])
        style_upload.clear(lambda: use_style(None), None, [style_path, style_preview, style_status])
        style_menu.input(lambda name: use_style(str(styles[name]) if name else None), style_menu,
                         [style_path, style_preview, style_status])
        start_button.click(start, [video_path, style_path, method, alpha, temporal, width, keyframes],
                           [status, input_video, result_video, scores, download], trigger_mode="multiple",
                           concurrency_limit=None, show_progress_on=result_video)
        cancel_button.click(cancel, None, status, concurrency_limit=None, show_progress="hidden")
    return app


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="vstyle-app-"))
    atexit.register(shutil.rmtree, work, ignore_errors=True)
    (work / "jobs").mkdir()
    os.environ["GRADIO_TEMP_DIR"] = str(work / "gradio")  # Gradio's copies of uploads and results, removed with it
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # atexit runs on a plain kill too
    app = build_app(args, work)
    _, url, _ = app.launch(server_name=args.host, server_port=args.port, prevent_thread_lock=True, quiet=True,
                           show_error=False, max_file_size=f"{args.max_upload_mb}mb", allowed_paths=[str(work)],
                           footer_links=[])
    print(f"vstyle app running at {url} (work folder {work}); Ctrl+C stops it", flush=True)
    try:
        app.block_thread()
    finally:
        app.close()


if __name__ == "__main__":
    run_cli(main)
