"""Real browser: upload a TorchScript whose conversion never returns; /_stcore/health keeps answering and
the page ends with a message once the job's wall-time limit stops it."""

from __future__ import annotations

import io
import os
import re
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from test_browser import CHROME_ARGS, CHROMIUM, IN_CI, start_server, stop_server

pytestmark = [pytest.mark.browser, pytest.mark.slow]
TIME_SCALE = 0.25  # load / conversion limits of 60 s become 15 s for this server


class _Forever(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        while bool(x.sum() > -1.0):
            x = x + 1.0
        return x


@pytest.fixture(scope="module")
def hostile_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if not CHROMIUM.exists() and not IN_CI:
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium); CI always runs this test")
    saved = {k: os.environ.get(k) for k in ("OPTIM_JOB_TIME_SCALE", "OPTIM_ALLOW_UNSANDBOXED_TORCH")}
    # the endless loop must really run (in the sandbox where there is one, else in the limited worker)
    os.environ.update(OPTIM_JOB_TIME_SCALE=str(TIME_SCALE), OPTIM_ALLOW_UNSANDBOXED_TORCH="1")
    try:
        proc, url = start_server(tmp_path_factory.mktemp("hostile_store"))
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    yield url
    stop_server(proc)


def _poll_health(url: str, stop: threading.Event, seen: list[tuple[float, int, float]]) -> None:
    while not stop.is_set():
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=5) as r:
                status = r.status
        except OSError:
            status = 0
        seen.append((t0, status, time.monotonic() - t0))
        stop.wait(0.5)


def test_health_answers_throughout_a_never_returning_upload(hostile_server: str, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(_Forever()), buf)
    upload = tmp_path / "forever.pt"
    upload.write_bytes(buf.getvalue())
    seen: list[tuple[float, int, float]] = []
    stop = threading.Event()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROME_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1200})
        page.goto(hostile_server, wait_until="domcontentloaded")
        page.get_by_text("or upload your own model").first.click(timeout=60_000)
        page.locator("[data-testid=stFileUploader] input[type=file]").first.set_input_files(str(upload))
        shapes = page.get_by_label("Input shapes for dynamic dimensions (optional)")
        shapes.fill("x=1,4")
        shapes.press("Enter")
        page.get_by_role("button", name="Load upload").click(timeout=30_000)
        poller = threading.Thread(target=_poll_health, args=(hostile_server, stop, seen), daemon=True)
        poller.start()
        t0 = time.monotonic()
        page.get_by_text(re.compile(r"ran past its \d+ s")).first.wait_for(timeout=int((60 * TIME_SCALE + 90) * 1000))
        elapsed = time.monotonic() - t0
        stop.set()
        poller.join(10)
        assert page.get_by_text("Traceback").count() == 0
        browser.close()
    assert elapsed > 5, "the upload did not run (the test would prove nothing)"
    assert len(seen) >= elapsed / 2, seen
    assert all(status == 200 for _, status, _ in seen), seen
    assert max(latency for _, _, latency in seen) < 3.0, max(latency for _, _, latency in seen)
