"""Headless Chromium as a person's browser: open a page from the file system and read the DOM it ends with
(after the page's own scripts ran), at a given window size."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path


def chromium() -> str | None:
    """The Chromium executable on PATH (CI installs Debian's), or None."""
    return shutil.which("chromium") or shutil.which("chromium-browser")


def dump_dom(
    page: Path | str, profile: Path, window: tuple[int, int] = (1400, 1000), virtual_time_ms: int = 5000
) -> subprocess.CompletedProcess:
    """Render ``page`` (a file, or a URL) headless in a ``window``-sized window, its scripts given
    ``virtual_time_ms`` of virtual time; stdout is the DOM they leave."""
    command = [
        chromium() or "chromium",
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        f"--user-data-dir={profile}",
        f"--window-size={window[0]},{window[1]}",
        f"--virtual-time-budget={virtual_time_ms}",
        "--dump-dom",
        page.as_uri() if isinstance(page, Path) else page,
    ]
    return subprocess.run(command, capture_output=True, text=True, timeout=180)
