"""Regenerate docs/screenshots/*.png: runs the browser tests with DAGRUN_SCREENSHOT_DIR set.

Needs Debian's chromium at /usr/bin/chromium and `pip install playwright` (no browser
download). Run from anywhere: `python docs/make_screenshots.py`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    env = {**os.environ, "DAGRUN_SCREENSHOT_DIR": str(ROOT / "docs" / "screenshots")}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_dashboard_browser.py"]
    return subprocess.call(command, cwd=ROOT, env=env)


if __name__ == "__main__":
    sys.exit(main())
