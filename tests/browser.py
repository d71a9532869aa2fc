"""Open a page in headless Chromium (Debian's package) and collect its console messages."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any

CONSOLE_RE = re.compile(r"INFO:CONSOLE[^\]]*\] (.*)")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def screenshot(page: Path, png: Path, width: int = 1200, height: int = 2400) -> list[str]:
    """Render `page` to `png`; return the page's console messages (errors, warnings, logs)."""
    exe = chromium()
    assert exe, "chromium is not installed (apt-get install chromium)"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             f"--window-size={width},{height}", f"--screenshot={png}", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert png.is_file(), f"chromium wrote no screenshot:\n{proc.stderr[-2000:]}"
    return CONSOLE_RE.findall(proc.stderr)


def is_blank(png: Path) -> bool:
    """True when the screenshot is one flat colour (nothing rendered)."""
    import matplotlib.image as mpimg

    img = mpimg.imread(str(png))
    return float(img[..., :3].std()) < 0.01


BOXES_MARK = "CAI-BOXES "


def element_boxes(page: Path, selectors: list[str], width: int = 1280, height: int = 800) -> dict[str, Any]:
    """Lay `page` out at `width`×`height` in Chromium; return the viewport ("viewport": width,
    height) and, per CSS selector, the bounding boxes (top, bottom, left, right, width, height
    in CSS pixels) of the elements it matches, measured by a script run after load.

    The script goes into a copy of the page beside it (same folder, so relative links hold);
    the boxes come back as one console message, which `screenshot` already collects.
    """
    probe = (
        "<script>addEventListener('load', () => { const out = {viewport: {width: innerWidth, height: innerHeight}};"
        f" for (const s of {json.dumps(selectors)}) out[s] = [...document.querySelectorAll(s)].map(e => {{"
        " const r = e.getBoundingClientRect();"
        " return {top: r.top, bottom: r.bottom, left: r.left, right: r.right, width: r.width, height: r.height}; });"
        f" console.log({json.dumps(BOXES_MARK)} + JSON.stringify(out)); }});</script>"
    )
    text = page.read_text(encoding="utf-8")
    cut = text.rfind("</body>")
    copy = page.with_name(f".probe-{page.name}")
    copy.write_text(text[:cut] + probe + text[cut:] if cut >= 0 else text + probe, encoding="utf-8")
    try:
        with tempfile.TemporaryDirectory() as tmp:
            console = screenshot(copy, Path(tmp) / "probe.png", width, height)
    finally:
        copy.unlink()
    found = [m for m in console if BOXES_MARK in m]
    assert found, f"the probe script did not report (console: {console})"
    msg = found[0][found[0].index(BOXES_MARK) + len(BOXES_MARK) :]
    return json.loads(msg[: msg.rindex("}") + 1])
