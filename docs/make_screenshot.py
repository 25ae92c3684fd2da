#!/usr/bin/env python3
"""Writes docs/report.png: the HTML report of the demo Maildir, as headless Chromium shows it.

    python3 docs/make_screenshot.py [--out docs/report.png] [--html report.html]

Two policies are compared: the demo's own (examples/config.toml, "current")
and a stricter one that also junks SPF none, softfail and neutral
("strict").  DNS answers come from examples/maildir/zone.txt: no network.
Needs the Debian package `chromium`.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "config.toml"
sys.path.insert(0, str(ROOT))
from tests.helpers import CHROMIUM_FLAGS  # noqa: E402

STRICTER = '\nspf_none = "junk"\nspf_softfail = "junk"\nspf_neutral = "junk"\n'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "report.png"))
    parser.add_argument("--html", help="also keep the HTML page here")
    parser.add_argument("--size", default="1200,1500", help="window WIDTH,HEIGHT in pixels")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("make_screenshot: the chromium package is not installed", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="authsieve-shot-") as tmp:
        d = Path(tmp)
        (d / "current.toml").write_text(CONFIG.read_text())
        # [policy] comes before [users.*] in the demo config: append the stricter keys there.
        text = CONFIG.read_text()
        head, sep, users = text.partition("\n[users.")
        (d / "strict.toml").write_text(head + STRICTER + sep + users)
        page = d / "report.html"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "classifier.commands.main",
                "report",
                "--config",
                str(CONFIG),
                "--dns-zone",
                str(ROOT / "examples" / "maildir" / "zone.txt"),
                "--no-cache",
                "--policy",
                str(d / "current.toml"),
                "--policy",
                str(d / "strict.toml"),
                "--html",
                str(page),
                str(ROOT / "examples" / "maildir"),
            ],
            cwd=ROOT,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            [
                chromium,
                *CHROMIUM_FLAGS,
                f"--user-data-dir={d / 'profile'}",
                f"--window-size={args.size}",
                f"--screenshot={Path(args.out).resolve()}",
                page.as_uri(),
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
        if args.html:
            shutil.copyfile(page, args.html)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
