"""Documents: read PDF, DOCX, HTML, Markdown and text files into markdown, and chunk them.

:func:`read_document` turns a path or raw bytes into a :class:`Document` whose ``text`` is
markdown. PDF, DOCX and HTML go through `markitdown <https://github.com/microsoft/markitdown>`_
(the ``docs`` extra, imported lazily); Markdown and text are decoded directly as UTF-8. Each
kind gets its own ``MarkItDown`` instance, built once per process, with plugins off and only the
converter for that kind registered: with the built-in set, a corrupt PDF falls through to the
plain-text converter and comes back as its raw bytes instead of failing.

:func:`chunk_text` cuts a text into overlapping :class:`Chunk` values that keep exact character
offsets, so ``document.text[chunk.start:chunk.end] == chunk.text`` always holds and every chunk
can be traced back to its place in the document::

    doc = read_document("report.pdf")
    for chunk in chunk_text(doc.text, size=800, overlap=120):
        print(doc.doc_id, chunk.index, chunk.start, chunk.text[:40])

Every caller mistake (unknown type, missing file, unreadable or empty document) raises
:class:`~memos_core.errors.InvalidInputError`; a file over ``max_bytes`` raises
:class:`~memos_core.errors.PayloadTooLargeError`.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import InvalidInputError, MissingDependencyError, PayloadTooLargeError

if TYPE_CHECKING:
    from markitdown import MarkItDown

__all__ = ["SUPPORTED", "Chunk", "Document", "chunk_text", "read_document"]

SUPPORTED = frozenset({".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt"})
_PLAIN = frozenset({".md", ".markdown", ".txt"})

_converters: dict[str, MarkItDown] = {}
_converters_lock = threading.Lock()

_HEADING = re.compile(r"^#{1,6}[ \t]+(\S.*?)[ \t#]*$", re.MULTILINE)
_TRAILING_SPACE = re.compile(r"[ \t]+$", re.MULTILINE)
_BLANK_RUN = re.compile(r"\n{3,}")
_SPACE = re.compile(r"\s+")
_SENTENCE_ENDS = (". ", "。", "! ", "? ")


@dataclass(frozen=True)
class Document:
    """A document read into markdown text.

    Attributes:
        doc_id: first 32 hex characters of the SHA-256 of the raw bytes; the same bytes always
            give the same id, whatever the file is called.
        filename: the file's name (no directory).
        kind: the extension without the dot: ``"pdf"``, ``"docx"``, ``"html"``, ``"md"``...
        text: the content as markdown, trailing spaces removed and blank runs collapsed.
        title: the HTML ``<title>`` or the first markdown heading, if any.
        size_bytes: the size of the raw bytes.
    """

    doc_id: str
    filename: str
    kind: str
    text: str
    title: str | None
    size_bytes: int


@dataclass(frozen=True)
class Chunk:
    """A slice of a text: ``text == source[start:end]`` exactly (character offsets)."""

    index: int
    text: str
    start: int
    end: int


def read_document(
    source: str | os.PathLike[str] | bytes,
    *,
    filename: str | None = None,
    max_bytes: int = 50 * 1024 * 1024,
) -> Document:
    """Read a file (a path, or raw bytes plus ``filename``) into a :class:`Document`.

    Args:
        source: a path to the file, or its raw bytes.
        filename: the name to report and to take the type from; required with bytes, and
            overrides the path's own name otherwise.
        max_bytes: the largest accepted size.

    Raises:
        InvalidInputError: unsupported extension, bytes without ``filename``, missing file, a
            file that cannot be parsed, or one with no extractable text (a scanned PDF).
        PayloadTooLargeError: the file is larger than ``max_bytes``.
        MissingDependencyError: ``markitdown`` is not installed (needed for PDF, DOCX, HTML).

    Example:
        >>> read_document(b"# Notes\\n\\nBuy milk.", filename="notes.md").title
        'Notes'
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        if not filename:
            raise InvalidInputError("filename is required when the document is given as bytes")
        ext = _extension(filename)
        data = bytes(source)
    elif isinstance(source, (str, os.PathLike)):
        path = Path(source)
        filename = filename or path.name
        ext = _extension(filename)
        data = _read_file(path, max_bytes)
    else:
        raise InvalidInputError(f"source must be a path or bytes, not {type(source).__name__}")
    if len(data) > max_bytes:
        raise PayloadTooLargeError(f"{filename!r} has {len(data)} bytes; the limit is {max_bytes}")

    title: str | None = None
    if ext in _PLAIN:
        text = data.decode("utf-8-sig", errors="replace")
    else:
        text, title = _convert(data, ext, filename)
    text = _normalise(text)
    if not text.strip():
        raise InvalidInputError(
            f"{filename!r} has no extractable text (a scanned PDF needs OCR before it can be read)"
        )
    if title is None and ext != ".txt":
        match = _HEADING.search(text)
        title = match.group(1) if match else None
    return Document(
        doc_id=hashlib.sha256(data).hexdigest()[:32],
        filename=filename,
        kind=ext[1:],
        text=text,
        title=(title or "").strip() or None,
        size_bytes=len(data),
    )


def _extension(filename: str) -> str:
    ext = os.path.splitext(filename)[1].lower()
    if ext not in SUPPORTED:
        raise InvalidInputError(
            f"cannot read {filename!r}: unsupported type {ext or '(no extension)'}; "
            f"supported: {', '.join(sorted(SUPPORTED))}"
        )
    return ext


def _read_file(path: Path, max_bytes: int) -> bytes:
    try:
        size = path.stat().st_size
        if size <= max_bytes:  # checked before reading, so a huge file is never loaded
            return path.read_bytes()
    except FileNotFoundError as exc:
        raise InvalidInputError(f"no such file: {str(path)!r}") from exc
    except OSError as exc:  # a directory, no permission...
        raise InvalidInputError(f"cannot open {str(path)!r}: {exc}") from exc
    raise PayloadTooLargeError(f"{path.name!r} has {size} bytes; the limit is {max_bytes}")


def _converter(ext: str) -> MarkItDown:
    """The process-wide MarkItDown for one kind, holding only that kind's converter."""
    with _converters_lock:
        md = _converters.get(ext)
        if md is None:
            try:
                from markitdown import MarkItDown
                from markitdown.converters import DocxConverter, HtmlConverter, PdfConverter
            except ImportError as exc:
                raise MissingDependencyError("markitdown", "docs") from exc
            md = MarkItDown(enable_builtins=False, enable_plugins=False)
            if ext == ".pdf":
                md.register_converter(PdfConverter())
            elif ext == ".docx":
                md.register_converter(DocxConverter())  # type: ignore[no-untyped-call]  # untyped __init__
            else:
                md.register_converter(HtmlConverter())
            _converters[ext] = md
        return md


def _convert(data: bytes, ext: str, filename: str) -> tuple[str, str | None]:
    md = _converter(ext)
    from markitdown import (
        FileConversionException,
        MarkItDownException,
        MissingDependencyException,
        StreamInfo,
    )

    try:
        result = md.convert_stream(io.BytesIO(data), stream_info=StreamInfo(extension=ext))
    except MarkItDownException as exc:
        # a converter's own missing dependency (pdfminer, mammoth) arrives wrapped in its attempts
        attempts = (exc.attempts or []) if isinstance(exc, FileConversionException) else []
        for attempt in attempts:
            if attempt.exc_info and isinstance(attempt.exc_info[1], MissingDependencyException):
                raise MissingDependencyError(f"markitdown[{ext[1:]}]", "docs") from exc
        cause = attempts[-1].exc_info[1] if attempts and attempts[-1].exc_info else exc
        raise InvalidInputError(f"could not read {filename!r}: {cause}") from exc
    return result.markdown, result.title


def _normalise(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\f", "\n\n")  # \f: PDF page break
    text = _TRAILING_SPACE.sub("", text)
    return _BLANK_RUN.sub("\n\n", text).strip("\n")


def chunk_text(text: str, *, size: int = 800, overlap: int = 120) -> list[Chunk]:
    """Cut ``text`` into chunks of at most ``size`` characters, neighbours sharing up to ``overlap``.

    A chunk ends at the last paragraph break in its second half, else a line break, else a
    sentence end, else whitespace, else exactly at ``size`` (CJK text without spaces). The next
    chunk starts ``overlap`` characters before that end, moved forward to the next word start.
    Chunks that are only whitespace are dropped; ``index`` counts the chunks returned.

    Raises:
        InvalidInputError: ``size < 50`` or not ``0 <= overlap <= size // 2``.

    Example:
        >>> [c.text for c in chunk_text("First paragraph. " * 4 + "\\n\\nSecond.", size=60, overlap=0)]
        ['First paragraph. First paragraph. First paragraph. ', 'First paragraph. \\n\\nSecond.']
    """
    if size < 50:
        raise InvalidInputError(f"chunk size must be at least 50 characters, not {size}")
    if not 0 <= overlap <= size // 2:
        # A larger overlap multiplies the chunks (size 50, overlap 49: one chunk per character).
        raise InvalidInputError(f"chunk overlap must be 0..{size // 2} (half the size), not {overlap}")
    chunks: list[Chunk] = []
    start, end, n = 0, 0, len(text)
    while start < n:
        # the cut must pass the previous end, or a chunk could sit inside its predecessor
        end = n if n - start <= size else _cut(text, max(start + size // 2, end + 1), start + size)
        if text[start:end].strip():
            chunks.append(Chunk(index=len(chunks), text=text[start:end], start=start, end=end))
        if end >= n:
            break
        start = _next_start(text, max(end - overlap, start + 1), end)
    return chunks


def _cut(text: str, low: int, limit: int) -> int:
    """Where to end a chunk: after the best separator in ``text[low:limit]``, else ``limit``."""
    for seps in (("\n\n",), ("\n",), _SENTENCE_ENDS):
        best = max(text.rfind(sep, low, limit) + len(sep) for sep in seps)  # not found: <= 1
        if best > low:
            return best
    for i in range(limit - 1, low - 1, -1):
        if text[i].isspace():
            return i + 1
    return limit


def _next_start(text: str, pos: int, end: int) -> int:
    """``pos`` moved forward (never past ``end``) to the start of the next word."""
    if pos >= end or (text[pos - 1].isspace() and not text[pos].isspace()):
        return pos
    match = _SPACE.search(text, pos, end)
    return pos if match is None else match.end()  # no whitespace at all (CJK): cut mid-run
