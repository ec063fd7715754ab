"""``scripts/app.py`` in a real headless Chromium: upload a real clip and a style, start, get a playable video
with the right frame count and its scores; a bad upload shows its message; the work folder is removed on exit.

Needs the Debian packages ``chromium`` and ``chromium-driver`` (``.ci/run`` installs them) and selenium (the
``test`` extra); fails with that reason where they are missing. Writes a screenshot of the finished page to
the test's folder, and to ``docs/app.png`` (the README's) when ``VSTYLE_UPDATE_SCREENSHOT=1``.
"""

from __future__ import annotations

import functools
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from pipeline.io.video import video_info
from pipeline.methods import load_method
from scripts._app_jobs import (
    FLOW_BLEND_LABEL,
    JobCancelled,
    JobRequest,
    SessionJobs,
    Studio,
    UploadError,
    check_style,
    check_video,
    method_choices,
)

REPO = Path(__file__).resolve().parents[2]
CHROMEDRIVER = shutil.which("chromedriver")
FRAMES = 4
TIMEOUT_S = 150

from selenium import webdriver  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402


def needs_browser(test):
    """Fail (not skip) where the browser is missing: the page is a feature and CI installs it."""

    def check(*args, **kwargs):
        if CHROMEDRIVER is None or shutil.which("chromium") is None:
            pytest.fail("chromium / chromedriver are not installed (apt-get install -y chromium chromium-driver)")
        return test(*args, **kwargs)

    return functools.wraps(test)(check)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AppProcess:
    """``scripts/app.py`` in a subprocess; ``url`` and ``work`` come from the line it prints once serving."""

    def __init__(self, args: list[str], log: Path) -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        self.log = log
        self.process = subprocess.Popen([sys.executable, str(REPO / "scripts" / "app.py"), *args], cwd=REPO, env=env,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines: list[str] = []
        self.ready = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        with self.log.open("w") as log:
            for line in self.process.stdout:
                self.lines.append(line)
                log.write(line)
                log.flush()
                if line.startswith("vstyle app running at"):
                    self.ready.set()

    def wait_ready(self, timeout: float) -> tuple[str, Path]:
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.5):
            assert self.process.poll() is None and time.monotonic() < deadline, \
                "the app did not start:\n" + "".join(self.lines[-40:])
        line = next(line for line in self.lines if line.startswith("vstyle app running at"))
        url = line.split()[4]
        work = Path(line.split("(work folder ")[1].split(")")[0])
        return url, work

    def stop(self) -> int:
        self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture
def app(tmp_path: Path) -> Iterator[tuple[str, Path, AppProcess]]:
    runs = tmp_path / "runs"
    runs.mkdir()
    process = AppProcess(["--port", str(free_port()), "--size", "64", "--max-frames", str(FRAMES),
                          "--max-seconds", "10", "--chunk-size", "2", "--runs", str(runs),
                          "--cache-dir", str(tmp_path / "cache")], tmp_path / "app.log")
    try:
        url, work = process.wait_ready(90)
        yield url, work, process
    finally:
        if process.process.poll() is None:
            process.stop()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[webdriver.Chrome]:
    options = webdriver.ChromeOptions()
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--window-size=1400,1400",
                 "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={tmp_path / 'profile'}"):
        options.add_argument(flag)
    options.binary_location = shutil.which("chromium")
    driver = webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def text_of(driver: webdriver.Chrome, element_id: str) -> str:
    return driver.find_element(By.ID, element_id).text


def upload(driver: webdriver.Chrome, element_id: str, path: Path) -> None:
    driver.find_element(By.CSS_SELECTOR, f"#{element_id} input[type=file]").send_keys(str(path))


@needs_browser
def test_upload_stylize_watch_download(app, browser, data_dir: Path, tmp_path: Path) -> None:
    url, work, process = app
    wait = WebDriverWait(browser, TIMEOUT_S)
    browser.get(url)
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-upload input[type=file]"))

    upload(browser, "video-upload", data_dir / "videos" / "test" / "wolf.mp4")
    wait.until(lambda d: "wolf.mp4: 40 frames" in text_of(d, "video-status"))
    upload(browser, "style-upload", data_dir / "styles" / "starry_night.jpg")
    wait.until(lambda d: "starry_night.jpg" in text_of(d, "style-status"))
    browser.find_element(By.ID, "start").click()

    wait.until(lambda d: "Done" in text_of(d, "scores"))
    assert "warping error" in text_of(browser, "scores") and "LPIPS" in text_of(browser, "scores")
    result = wait.until(lambda d: d.find_element(By.CSS_SELECTOR, "#result-video video"))
    wait.until(lambda d: d.execute_script(
        "const v = arguments[0]; return v.readyState >= 2 && v.videoWidth > 0 && v.duration > 0;", result))
    assert browser.execute_script("return arguments[0].videoWidth;", result) == 64
    wait.until(lambda d: d.execute_script(  # the input plays beside it
        "const v = document.querySelector('#input-video video'); return v !== null && v.readyState >= 2;"))
    time.sleep(1)  # let both videos show a frame before the screenshot
    shots = [tmp_path / "app.png"] + ([REPO / "docs" / "app.png"] if os.environ.get("VSTYLE_UPDATE_SCREENSHOT") else [])
    for path in shots:
        assert browser.save_screenshot(str(path))

    link = browser.find_element(By.CSS_SELECTOR, "#download a").get_attribute("href")
    downloaded = tmp_path / "result.mp4"
    urllib.request.urlretrieve(link, downloaded)
    info = video_info(downloaded)
    assert (info.num_frames, info.width, info.height) == (FRAMES, 64, 64)

    not_a_video = tmp_path / "holiday.mp4"
    not_a_video.write_text("this is a text file, not a video\n")
    browser.get(url)  # a fresh page, whose upload box is empty
    wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#video-upload input[type=file]"))
    upload(browser, "video-upload", not_a_video)
    wait.until(lambda d: "Video refused" in text_of(d, "video-status"))
    message = text_of(browser, "video-status")
    assert "holiday.mp4 is not a video this app can read" in message
    assert "Traceback" not in browser.page_source

    assert work.is_dir()
    assert process.stop() == 0
    assert not work.exists(), "the work folder was not removed on exit"


def test_upload_checks_give_one_line_messages(data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UploadError, match=r"wolf.mp4 runs 2.0 s; this app takes videos of at most 1 s"):
        check_video(data_dir / "videos" / "test" / "wolf.mp4", max_seconds=1)
    not_an_image = tmp_path / "style.jpg"
    not_an_image.write_bytes(b"\x00\x01 not an image")
    with pytest.raises(UploadError, match=r"style.jpg is not an image this app can read"):
        check_style(not_an_image)
    assert check_video(data_dir / "videos" / "test" / "sintel_alley", max_seconds=10).num_frames == 10


def test_cancel_stops_the_job_and_keeps_no_output(data_dir: Path, tmp_path: Path) -> None:
    jobs = SessionJobs()
    assert jobs.begin("tab") and not jobs.begin("tab"), "a second job of one session must be refused"
    assert jobs.cancel("tab") and not jobs.cancel("other tab")
    done: list[int] = []

    def on_progress(frames: int, total: int) -> None:
        done.append(frames)
        jobs.checkpoint("tab")

    choice = next(c for c in method_choices(tmp_path / "no-runs") if c.label == FLOW_BLEND_LABEL)
    request = JobRequest(data_dir / "videos" / "test" / "wolf.mp4", data_dir / "styles" / "udnie.jpg", choice,
                         alpha=1.0, temporal=0.5, width=64)
    studio = Studio(torch.device("cpu"), max_frames=4, chunk_size=2)
    with pytest.raises(JobCancelled):
        studio.run(request, tmp_path / "job", on_progress, on_wait=lambda: None)
    assert done == [2], "the job goes on after the cancel"
    assert not list((tmp_path / "job").iterdir()), "a cancelled job left files behind"
    jobs.end("tab")
    assert jobs.begin("tab")


def test_keyframes_control_reaches_the_pipeline(data_dir: Path, tmp_path: Path) -> None:
    """The page's keyframe spacing goes through the same Components as stylize_video.py --keyframes."""
    choice = next(c for c in method_choices(tmp_path / "no-runs") if c.label == FLOW_BLEND_LABEL)
    request = JobRequest(data_dir / "videos" / "test" / "wolf.mp4", data_dir / "styles" / "udnie.jpg", choice,
                         alpha=1.0, temporal=0.5, width=64, keyframes=4)
    result = Studio(torch.device("cpu"), max_frames=6, chunk_size=8).run(request, tmp_path / "job", lambda *_: None,
                                                                        on_wait=lambda: None)
    assert result.summary["frames"] == 6 and video_info(result.output).num_frames == 6
    components = Studio(torch.device("cpu"), max_frames=6).components(1.0, keyframes=4)
    assert load_method(choice.name, components, "0.5").pipeline.keyframes == 4
