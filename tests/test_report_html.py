"""`authsieve report --html`: one self-contained page that headless Chromium renders with the
expected numbers in its tables and charts (Debian package `chromium`)."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pytest

from classifier.commands.main import main
from tests.dnsserver import DnsTestServer
from tests.helpers import CHROMIUM_FLAGS
from tests.test_report import CONFIG, SERVFAIL, SPECS, STRICT, ZONE, build_maildir, expected

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


class DataKeys(HTMLParser):
    """Collects the text of every element with a data-k attribute, and every element's tag."""

    def __init__(self) -> None:
        super().__init__()
        self.values: dict[str, str] = {}
        self.open: list[tuple[str, str | None]] = []
        self.bold_texts: list[str] = []
        self.cell_texts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.open.append((tag, dict(attrs).get("data-k")))

    def handle_endtag(self, tag: str) -> None:
        while self.open and self.open.pop()[0] != tag:
            pass

    def handle_data(self, data: str) -> None:
        if not self.open:
            return
        tag, key = self.open[-1]
        if key:
            self.values[key] = self.values.get(key, "") + data
        if tag == "b":
            self.bold_texts.append(data)
        if tag == "td":
            self.cell_texts.append(data)


def chromium(page: Path, profile: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [
            CHROMIUM or "chromium",
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            *args,
            page.as_uri(),
        ],
        capture_output=True,
        timeout=90,
        check=True,
    )


def png_size_and_colours(data: bytes) -> tuple[int, int, int]:
    """Gives (width, height, distinct byte values of the pixel data) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, width, height, idat = 8, 0, 0, b""
    while pos < len(data):
        (length,), kind = struct.unpack(">I", data[pos : pos + 4]), data[pos + 4 : pos + 8]
        body = data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height = struct.unpack(">II", body[:8])
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


@pytest.fixture(scope="module")
def page(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("html")
    server = DnsTestServer(ZONE, servfail=SERVFAIL)
    try:
        maildir = build_maildir(d / "Maildir")
        (d / "config.toml").write_text(CONFIG)
        (d / "strict.toml").write_text(STRICT)
        code = main(
            [
                "report",
                "--config",
                str(d / "config.toml"),
                "--dns-server",
                server.address,
                "--no-cache",
                "--policy",
                str(d / "config.toml"),
                "--policy",
                str(d / "strict.toml"),
                "--html",
                str(d / "report.html"),
                str(maildir),
            ]
        )
    finally:
        server.stop()
    assert code == 0
    return d / "report.html"


def test_page_is_self_contained(page: Path) -> None:
    html = page.read_text()
    assert not re.search(r"\s(src|href|srcset|action)=", html, re.I)
    assert set(re.findall(r"https?://[^\s\"'<>]*", html)) == {"http://www.w3.org/2000/svg"}
    assert "<script" not in html.lower() and "@import" not in html
    assert "default-src 'none'" in html  # nothing may be loaded even if something slipped in


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
def test_chromium_shows_the_expected_numbers(page: Path, tmp_path: Path) -> None:
    dom = chromium(page, tmp_path / "profile", "--dump-dom").stdout.decode()
    parsed = DataKeys()
    parsed.feed(dom)
    shown = {k: v.strip().removesuffix("%") for k, v in parsed.values.items()}
    want = {".".join(k): str(v) for k, v in expected().items()}
    assert {k: shown.get(k) for k in want} == want
    # The charts carry the same numbers: one bar group per policy and one for "now".
    for name in ("now", "config", "strict"):
        prefix = "now" if name == "now" else f"policy.{name}"
        for place in ("inbox", "junk", "quarantine"):
            assert shown[f"chart.{name}.{place}"] == want[f"{prefix}.{place}"]
    day_totals = {k.split(".")[2]: v for k, v in shown.items() if k.startswith("chart.timeline.")}
    per_day = Counter(f"2025-03-0{spec[3]}" for spec in SPECS)
    assert day_totals == {day: str(n) for day, n in per_day.items()}
    # Text from a message is text: its <b> is shown, never obeyed.
    assert "Tom & Jerry <b>Garden</b>" in parsed.cell_texts
    assert "Garden" not in parsed.bold_texts


@pytest.mark.skipif(CHROMIUM is None, reason="Debian package chromium is not installed")
def test_chromium_screenshot_is_a_drawn_page(page: Path, tmp_path: Path) -> None:
    shot = tmp_path / "shot.png"
    chromium(page, tmp_path / "profile", "--window-size=1000,800", f"--screenshot={shot}")
    width, height, colours = png_size_and_colours(shot.read_bytes())
    assert (width, height) == (1000, 800)
    assert colours > 50  # bars, text and tables, not a blank page
