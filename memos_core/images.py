"""Images in messages: fetch an ``image_url`` part and read its text with OCR.

An image part carries an http(s) URL, a ``data:`` URL, a ``file://`` URL or a local path. The
fine stage keeps one memory per image: the URL always, the OCR text when the image could be read.
So :func:`read_image` never raises for an unreachable, oversized or broken image: it returns an
:class:`ImageReading` with ``ok=False`` and the reason, or ``ok=True`` and ``ocr_error`` set.

Pillow and pytesseract are optional (``pip install 'memos-suite[images]'``) and imported lazily;
OCR also needs the ``tesseract`` program (``apt-get install tesseract-ocr``).
"""

from __future__ import annotations

import base64
import binascii
import functools
import http.client
import io
import re
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import (
    InvalidInputError,
    MissingDependencyError,
    NotSupportedError,
    PayloadTooLargeError,
    RuntimeFailure,
)
from .schema import display_url

if TYPE_CHECKING:
    from PIL import Image, ImageFile

__all__ = ["ImageReading", "fetch_image", "ocr", "read_image", "short_url", "tesseract_available"]

_MAX_BYTES = 20 * 1024 * 1024
_UPSCALE_BELOW_PIXELS = 400_000  # small images (often small glyphs) read better at 2x; large text worse
# Only raster formats: Pillow would hand EPS/PS to Ghostscript, which is no place for untrusted input.
_FORMATS = ("PNG", "JPEG", "GIF", "WEBP", "BMP", "TIFF", "ICO", "PPM", "AVIF")
_LANG = re.compile(r"[A-Za-z0-9_]+(\+[A-Za-z0-9_]+)*")


@dataclass(frozen=True)
class ImageReading:
    """What :func:`read_image` found. ``url`` is :func:`short_url` of the input, never a base64 blob."""

    url: str
    ok: bool
    error: str | None
    mime: str | None
    width: int | None
    height: int | None
    ocr_text: str
    ocr_error: str | None
    data: bytes | None = field(default=None, repr=False, compare=False)


def short_url(url: str) -> str:
    """Display form: ``data:image/png;base64,…(1234 bytes)`` for data URLs, others cut to 2000
    chars (the same form memory text uses: :func:`memos_core.schema.display_url`)."""
    return display_url(url)


def _check_args(url: object, timeout: float, max_bytes: int, lang: str = "eng") -> None:
    if not isinstance(url, str):
        raise InvalidInputError(f"image url must be a string, not {type(url).__name__}")
    if timeout <= 0 or max_bytes <= 0:
        raise InvalidInputError("timeout and max_bytes must be positive")
    if not _LANG.fullmatch(lang):
        raise InvalidInputError(f"invalid tesseract language {lang!r}; e.g. 'eng' or 'eng+deu'")


def _too_large(max_bytes: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(f"the image is larger than {max_bytes} bytes")


def fetch_image(
    url: str,
    *,
    timeout: float = 10.0,
    max_bytes: int = _MAX_BYTES,
    allow_local: bool = True,
    allow_private_hosts: bool = True,
) -> bytes:
    """Return the bytes behind an image URL; ``timeout`` bounds the whole http download.

    ``allow_private_hosts=False`` (a server) refuses http(s) URLs whose host resolves to a
    loopback, private, link-local or otherwise non-public address, at every redirect too, so a
    caller cannot make the server probe its own network.

    Raises InvalidInputError for a malformed or unsupported URL (or a local one with ``allow_local=False``),
    PayloadTooLargeError beyond ``max_bytes``, OSError when unreachable (URLError, FileNotFoundError, ...).
    """
    _check_args(url, timeout, max_bytes)
    url = url.strip()
    if not url:
        raise InvalidInputError("image url is empty")
    if url[:5].lower() == "data:":
        return _from_data_url(url, max_bytes)
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  (raises ValueError for a port out of range)
    except ValueError as exc:
        raise InvalidInputError(f"malformed URL: {exc}") from exc
    scheme = parts.scheme.lower()
    if scheme in ("http", "https"):
        return _from_http(url, timeout, max_bytes, public_only=not allow_private_hosts)
    if scheme not in ("", "file") and len(scheme) > 1:  # one letter: a Windows drive, not a scheme
        raise InvalidInputError(f"unsupported URL scheme {scheme!r}; use http(s), data: or a file path")
    if not allow_local:
        raise InvalidInputError("local image files are not allowed here")
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidInputError(f"file URL names another host: {parts.netloc!r}")
        path = Path(urllib.request.url2pathname(parts.path))
    else:
        path = Path(url)
    if not path.is_file():  # a FIFO or a device would block the worker forever
        raise FileNotFoundError(f"{path} is not a regular file")
    with path.open("rb") as f:
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _from_data_url(url: str, max_bytes: int) -> bytes:
    header, sep, payload = url[5:].partition(",")
    if not sep:
        raise InvalidInputError("malformed data: URL: no comma before the data")
    if not header.lower().endswith(";base64"):
        data = urllib.parse.unquote_to_bytes(payload)
    elif len(payload) > (max_bytes + 2) // 3 * 4 + 4096:  # leave room for line breaks and padding
        raise _too_large(max_bytes)
    else:
        try:
            data = base64.b64decode(
                re.sub(rb"\s+", b"", urllib.parse.unquote_to_bytes(payload)), validate=True
            )
        except binascii.Error as exc:
            raise InvalidInputError(f"malformed data: URL: bad base64 ({exc})") from exc
    if len(data) > max_bytes:
        raise _too_large(max_bytes)
    return data


def _check_public(url: str) -> None:
    """Refuse a URL whose host is, or resolves to, a non-public address."""
    import ipaddress
    import socket

    host = urllib.parse.urlsplit(url).hostname
    if not host:
        raise InvalidInputError("image URL has no host")
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError as exc:
        raise ConnectionError(f"cannot resolve {host!r}: {exc}") from exc
    for info in infos:
        address = ipaddress.ip_address(str(info[4][0]).split("%")[0])
        if not address.is_global or address.is_multicast:
            raise InvalidInputError(
                f"image URL host {host!r} is not a public address; this server fetches only public URLs"
            )


class _PublicRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        _check_public(newurl)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _from_http(url: str, timeout: float, max_bytes: int, *, public_only: bool = False) -> bytes:
    deadline = time.monotonic() + timeout  # urllib's timeout is per socket operation, not in total
    request = urllib.request.Request(url, headers={"User-Agent": "memos-suite", "Accept": "image/*"})
    if public_only:
        _check_public(url)
        opener = urllib.request.build_opener(_PublicRedirects)
    else:
        opener = urllib.request.build_opener()
    try:
        with opener.open(request, timeout=timeout) as resp:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > max_bytes:
                raise _too_large(max_bytes)
            chunks: list[bytes] = []
            size = 0
            while chunk := resp.read1(64 * 1024):  # read1: whatever arrived, so the deadline is checked
                size += len(chunk)
                if size > max_bytes:
                    raise _too_large(max_bytes)
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the download took longer than {timeout} s")
                chunks.append(chunk)
            return b"".join(chunks)
    except urllib.error.HTTPError as exc:
        exc.close()  # it holds the response; closing avoids an unclosed-socket ResourceWarning
        raise
    except (http.client.InvalidURL, ValueError) as exc:  # bad port, control or non-ASCII characters
        raise InvalidInputError(f"malformed URL: {exc}") from exc
    except http.client.HTTPException as exc:  # not an OSError: a broken or truncated response
        raise ConnectionError(f"bad HTTP response: {exc!r}") from exc


def _open(data: bytes) -> ImageFile.ImageFile:
    """Decode ``data`` fully; :class:`InvalidInputError` when it is not a (supported) image."""
    try:
        from PIL import Image
    except ImportError as exc:
        raise MissingDependencyError("pillow", "images") from exc
    Image.init()
    formats = [f for f in _FORMATS if f in Image.OPEN]
    try:
        with Image.open(io.BytesIO(data), formats=formats) as probe:
            probe.verify()  # checksums and structure; the image is unusable afterwards
        im = Image.open(io.BytesIO(data), formats=formats)
        im.load()
    except Image.DecompressionBombError as exc:
        raise PayloadTooLargeError(f"the image has too many pixels: {exc}") from exc
    except (OSError, SyntaxError, ValueError, EOFError) as exc:  # UnidentifiedImageError is an OSError
        raise InvalidInputError(f"not an image: {exc}") from exc
    return im


def _ocr_image(im: Image.Image, lang: str, timeout: float) -> str:
    try:
        import pytesseract  # type: ignore[import-untyped]
    except ImportError as exc:
        raise MissingDependencyError("pytesseract", "images") from exc
    from PIL import Image

    if im.mode in ("RGBA", "LA", "PA", "La") or "transparency" in im.info:
        im = Image.alpha_composite(Image.new("RGBA", im.size, "white"), im.convert("RGBA"))
    im = im.convert("L")
    if im.width * im.height < _UPSCALE_BELOW_PIXELS:
        im = im.resize((im.width * 2, im.height * 2), Image.Resampling.LANCZOS)
    try:
        raw = pytesseract.image_to_string(im, lang=lang, timeout=timeout)
    except pytesseract.TesseractNotFoundError as exc:
        raise NotSupportedError("tesseract is not installed: apt-get install tesseract-ocr") from exc
    except (RuntimeError, OSError) as exc:  # TesseractError, 'Tesseract process timeout', temp files
        raise RuntimeFailure(f"OCR failed: {exc}") from exc
    lines = (" ".join(line.split()) for line in str(raw).splitlines())
    return "\n".join(line for line in lines if line)


def ocr(data: bytes, *, lang: str = "eng", timeout: float = 30.0) -> str:
    """Return the text tesseract reads in an image, one line per text line, "" when there is none.

    Raises MissingDependencyError (no Pillow or pytesseract), InvalidInputError (not a supported raster
    image, or a bad ``lang``), PayloadTooLargeError (more pixels than Pillow's decompression-bomb limit),
    NotSupportedError (no tesseract program), RuntimeFailure (tesseract failed or timed out).
    """
    _check_args("", timeout, 1, lang)
    return _ocr_image(_open(data), lang, timeout)


@functools.cache
def tesseract_available() -> bool:
    """True when pytesseract imports and the tesseract program answers (cached; ``cache_clear()``)."""
    try:
        import pytesseract

        pytesseract.get_tesseract_version()
    except (ImportError, OSError, subprocess.SubprocessError, SystemExit):  # SystemExit: a bad version
        return False
    return True


def read_image(
    url: str,
    *,
    timeout: float = 10.0,
    max_bytes: int = _MAX_BYTES,
    allow_local: bool = True,
    allow_private_hosts: bool = True,
    do_ocr: bool = True,
    lang: str = "eng",
    ocr_timeout: float = 30.0,
) -> ImageReading:
    """Fetch, identify and OCR one image; problems with the image are recorded, never raised.

    Only bad arguments (a non-string url, a non-positive limit, a malformed ``lang``) raise
    :class:`InvalidInputError`. ``ocr_timeout`` bounds the tesseract run, ``timeout`` the download.
    """
    _check_args(url, timeout, max_bytes, lang)
    shown = short_url(url)

    def failed(error: str, data: bytes | None = None) -> ImageReading:
        return ImageReading(shown, False, error, None, None, None, "", None, data)

    data = None
    try:
        data = fetch_image(
            url,
            timeout=timeout,
            max_bytes=max_bytes,
            allow_local=allow_local,
            allow_private_hosts=allow_private_hosts,
        )
        im = _open(data)
    except MissingDependencyError as exc:  # no Pillow: the bytes may still serve a captioning model
        return failed(str(exc), data)
    except PayloadTooLargeError as exc:
        return failed(f"too large: {exc}")
    except InvalidInputError as exc:  # from fetch_image before there is data, else "not an image: ..."
        return failed(str(exc) if data is not None else f"invalid url: {exc}")
    except urllib.error.HTTPError as exc:
        return failed(f"unreachable: HTTP {exc.code} {exc.reason}")
    except OSError as exc:
        return failed(f"unreachable: {exc.reason if isinstance(exc, urllib.error.URLError) else exc}")
    text, ocr_error = "", None
    if do_ocr:
        try:
            text = _ocr_image(im, lang, ocr_timeout)
        except (MissingDependencyError, NotSupportedError, RuntimeFailure) as exc:
            ocr_error = str(exc)
    mime = im.get_format_mimetype()
    return ImageReading(shown, True, None, mime, im.width, im.height, text, ocr_error, data)
