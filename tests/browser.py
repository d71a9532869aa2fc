"""Open a page in headless Chromium (Debian's package) and collect its console messages."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

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
