"""Image parts: fetching from every kind of URL, OCR, and failures recorded instead of raised.

Images are drawn with Pillow here; http URLs point at a server started by the test on 127.0.0.1.
OCR tests need the ``tesseract`` program: they are skipped without it, and fail when ``CI`` is set.
"""

from __future__ import annotations

import base64
import functools
import http.server
import io
import os
import shutil
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("PIL", reason="images need the 'images' extra (pillow)")

from PIL import Image, ImageDraw, ImageFont

from memos_core.errors import InvalidInputError, PayloadTooLargeError
from memos_core.images import ImageReading, fetch_image, ocr, read_image, short_url, tesseract_available


def _png(lines: list[str] | None = None, size: tuple[int, int] = (900, 260)) -> bytes:
    img = Image.new("RGB", size, "white")
    if lines:
        font = ImageFont.load_default(size=48)
        draw = ImageDraw.Draw(img)
        for i, line in enumerate(lines):
            draw.text((40, 40 + i * 90), line, fill="black", font=font)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


TEXT_PNG = _png(["INVOICE 4711", "TOTAL 99 EUR"])


@pytest.fixture
def tesseract() -> None:
    """OCR tests need the tesseract program: a missing one fails under CI and skips elsewhere."""
    pytest.importorskip("pytesseract", reason="OCR needs the 'images' extra (pytesseract)")
    if shutil.which("tesseract") is None:
        if os.environ.get("CI"):
            pytest.fail("tesseract is not installed but CI is set: apt-get install tesseract-ocr")
        pytest.skip("tesseract is not installed (apt-get install tesseract-ocr)")


@pytest.fixture
def served(tmp_path: Path) -> Iterator[str]:
    """A real HTTP server on 127.0.0.1 serving ``tmp_path``; yields its base URL.

    ``/stall`` never answers and ``/drip`` sends a few bytes every 50 ms, until the test ends.
    """
    release = threading.Event()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            if self.path == "/stall":
                release.wait(10)
            elif self.path == "/drip":
                self.send_response(200)
                self.send_header("Content-Length", "100000")
                self.end_headers()
                try:
                    while not release.wait(0.05):
                        self.wfile.write(b"x" * 10)
                except OSError:  # the client gave up: expected
                    pass
            else:
                super().do_GET()

    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(Quiet, directory=str(tmp_path))
    )
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port


def _assert_invoice(r: ImageReading) -> None:
    assert r.ok and r.error is None and r.ocr_error is None, r
    assert r.mime == "image/png" and (r.width, r.height) == (900, 260)
    text = r.ocr_text.upper()
    assert "INVOICE" in text and "4711" in text, r.ocr_text
    assert r.data == TEXT_PNG


def test_ocr_from_local_path(tmp_path: Path, tesseract: None) -> None:
    (tmp_path / "invoice.png").write_bytes(TEXT_PNG)
    started = time.perf_counter()
    r = read_image(str(tmp_path / "invoice.png"))
    print(f"OCR took {time.perf_counter() - started:.2f}s: {r.ocr_text!r}")
    _assert_invoice(r)
    assert "TOTAL 99 EUR" in r.ocr_text.upper()
    assert r.url == str(tmp_path / "invoice.png")


def test_ocr_from_file_url(tmp_path: Path, tesseract: None) -> None:
    (tmp_path / "my invoice.png").write_bytes(TEXT_PNG)
    _assert_invoice(read_image((tmp_path / "my invoice.png").as_uri()))


def test_ocr_from_data_url(tesseract: None) -> None:
    url = "data:image/png;base64," + base64.b64encode(TEXT_PNG).decode()
    r = read_image(url)
    _assert_invoice(r)
    assert r.url == f"data:image/png;base64,…({len(TEXT_PNG)} bytes)"


def test_ocr_from_http(tmp_path: Path, served: str, tesseract: None) -> None:
    (tmp_path / "invoice.png").write_bytes(TEXT_PNG)
    _assert_invoice(read_image(f"{served}/invoice.png"))


def test_ocr_function_and_availability(tesseract: None) -> None:
    assert tesseract_available()
    assert "4711" in ocr(TEXT_PNG)
    assert ocr(_png()) == ""


def test_blank_image_has_no_text(tesseract: None) -> None:
    r = read_image("data:image/png;base64," + base64.b64encode(_png()).decode())
    assert r.ok and r.ocr_text == "" and r.ocr_error is None


def test_transparent_text_is_read_on_white(tesseract: None) -> None:
    """Black text on a transparent background must not turn into black on black."""
    img = Image.new("RGBA", (900, 160), (0, 0, 0, 0))
    ImageDraw.Draw(img).text(
        (40, 40), "INVOICE 4711", fill=(0, 0, 0, 255), font=ImageFont.load_default(size=48)
    )
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    assert "4711" in ocr(buf.getvalue())


def test_without_ocr_the_image_is_still_identified(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(TEXT_PNG)
    r = read_image(str(tmp_path / "a.png"), do_ocr=False)
    assert r.ok and r.ocr_text == "" and r.ocr_error is None and r.mime == "image/png"


def test_unreachable_host_is_recorded() -> None:
    r = read_image(f"http://127.0.0.1:{_closed_port()}/x.png", timeout=5)
    assert not r.ok and r.error is not None and r.error.startswith("unreachable"), r.error
    assert r.data is None and r.ocr_text == ""


def test_http_404_is_recorded(served: str) -> None:
    r = read_image(f"{served}/missing.png")
    assert not r.ok and r.error == "unreachable: HTTP 404 File not found", r.error


def test_slow_servers_time_out(served: str) -> None:
    """``/stall`` trips urllib's socket timeout; ``/drip`` never does, only the total deadline."""
    for path in ("/stall", "/drip"):
        started = time.perf_counter()
        r = read_image(served + path, timeout=0.5)
        assert time.perf_counter() - started < 3
        assert not r.ok and r.error is not None and r.error.startswith("unreachable"), r.error


def test_missing_file_is_recorded(tmp_path: Path) -> None:
    r = read_image(str(tmp_path / "nope.png"))
    assert not r.ok and r.error is not None and r.error.startswith("unreachable"), r.error


def test_non_image_is_recorded(tmp_path: Path, served: str) -> None:
    (tmp_path / "notes.txt").write_text("hello, not a picture")
    for url in (str(tmp_path / "notes.txt"), f"{served}/notes.txt"):
        r = read_image(url)
        assert not r.ok and r.error is not None and r.error.startswith("not an image"), r.error
    truncated = read_image("data:image/png;base64," + base64.b64encode(TEXT_PNG[:400]).decode())
    assert not truncated.ok and truncated.error is not None and "not an image" in truncated.error


def test_too_large_is_recorded(tmp_path: Path, served: str) -> None:
    (tmp_path / "a.png").write_bytes(TEXT_PNG)
    data_url = "data:image/png;base64," + base64.b64encode(TEXT_PNG).decode()
    for url in (str(tmp_path / "a.png"), f"{served}/a.png", data_url):
        r = read_image(url, max_bytes=100)
        assert not r.ok and r.error is not None and r.error.startswith("too large"), (url, r.error)
    with pytest.raises(PayloadTooLargeError):
        fetch_image(data_url, max_bytes=100)


def test_decompression_bomb_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = read_image("data:image/png;base64," + base64.b64encode(TEXT_PNG).decode())
    assert not r.ok and r.error is not None and r.error.startswith("too large"), r.error


def test_local_files_can_be_forbidden(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(TEXT_PNG)
    for url in (str(tmp_path / "a.png"), (tmp_path / "a.png").as_uri()):
        r = read_image(url, allow_local=False)
        assert not r.ok and r.error is not None and "not allowed" in r.error, r.error
    assert fetch_image("data:image/png;base64," + base64.b64encode(TEXT_PNG).decode(), allow_local=False)


@pytest.mark.parametrize(
    "url",
    [
        "data:image/png;base64,@@not base64@@",
        "data:image/png;base64",
        "ftp://example.com/a.png",
        "http://[::1/a.png",
        "http://127.0.0.1:99999/a.png",
        "file://otherhost/a.png",
        "",
    ],
)
def test_malformed_urls_are_recorded(url: str) -> None:
    r = read_image(url)
    assert not r.ok and r.error is not None and r.error.startswith("invalid url"), r.error
    with pytest.raises(InvalidInputError):
        fetch_image(url)


def test_percent_encoded_data_url() -> None:
    assert fetch_image("data:text/plain,hello%20world") == b"hello world"
    r = read_image("data:text/plain,hello%20world")
    assert not r.ok and r.error is not None and r.error.startswith("not an image")


def test_short_url_never_keeps_the_blob() -> None:
    blob = base64.b64encode(TEXT_PNG).decode()
    short = short_url("data:image/png;base64," + blob)
    assert short == f"data:image/png;base64,…({len(TEXT_PNG)} bytes)" and blob[:50] not in short
    assert len(short_url("data:" + "A" * 100_000)) < 200
    assert len(short_url("data:" + "x" * 100_000 + "," + blob)) < 200
    assert short_url("https://example.com/a.png") == "https://example.com/a.png"
    assert len(short_url("https://example.com/" + "a" * 5000)) == 2000
    r = read_image("data:image/png;base64," + blob, do_ocr=False)
    assert blob[:50] not in repr(r) and "data" not in repr(r).split("ocr_error")[1]


def test_missing_tesseract_is_an_ocr_error(monkeypatch: pytest.MonkeyPatch) -> None:
    pytesseract = pytest.importorskip("pytesseract")
    monkeypatch.setattr(pytesseract.pytesseract, "tesseract_cmd", "/nonexistent/tesseract")
    r = read_image("data:image/png;base64," + base64.b64encode(TEXT_PNG).decode())
    assert r.ok and r.ocr_text == "" and r.ocr_error is not None
    assert "apt-get install tesseract-ocr" in r.ocr_error


def test_missing_pillow_is_recorded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "PIL", None)
    r = read_image("data:image/png;base64," + base64.b64encode(TEXT_PNG).decode())
    assert not r.ok and r.error is not None and "pillow" in r.error and "images" in r.error
    assert r.data == TEXT_PNG


def test_missing_language_is_an_ocr_error(tesseract: None) -> None:
    r = read_image("data:image/png;base64," + base64.b64encode(TEXT_PNG).decode(), lang="xyz")
    assert r.ok and r.ocr_text == "" and r.ocr_error is not None and r.ocr_error.startswith("OCR failed")


def test_bad_arguments_raise() -> None:
    with pytest.raises(InvalidInputError):
        read_image(b"http://x/a.png")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError):
        read_image("http://x/a.png", timeout=0)
    with pytest.raises(InvalidInputError):
        read_image("http://x/a.png", lang="eng; rm -rf /")
    with pytest.raises(InvalidInputError):
        ocr(TEXT_PNG, lang="")
