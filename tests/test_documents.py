"""Reading documents into markdown and chunking them with exact offsets.

Every document is generated inside the test (fpdf2, python-docx, literal strings); nothing is
downloaded.
"""

from __future__ import annotations

import io
import itertools
from pathlib import Path

import docx
import pytest
from fpdf import FPDF
from hypothesis import given, settings
from hypothesis import strategies as st

from memos_core.documents import SUPPORTED, Chunk, Document, chunk_text, read_document
from memos_core.errors import InvalidInputError, PayloadTooLargeError

PAGE_ONE = "The quick brown fox jumps over the lazy dog."
PAGE_ONE_MORE = "Quarterly revenue grew by twelve percent."
PAGE_TWO = "The archive on page two remembers everything."


def make_pdf(*pages: str) -> bytes:
    pdf = FPDF()
    pdf.set_font("Helvetica", size=12)
    for page in pages:
        pdf.add_page()
        pdf.multi_cell(0, 8, page, align="L")
    return bytes(pdf.output())


def make_blank_pdf() -> bytes:
    """A PDF with a drawn rectangle and no text layer, like a scan without OCR."""
    pdf = FPDF()
    pdf.add_page()
    pdf.rect(20, 20, 100, 60, style="F")
    return bytes(pdf.output())


def make_docx() -> bytes:
    document = docx.Document()
    document.add_heading("Annual Report", level=1)
    document.add_paragraph("Revenue grew by ten percent this year.")
    document.add_paragraph("The team shipped the memory engine.")
    table = document.add_table(rows=2, cols=2)
    for (row, col), value in {(0, 0): "Region", (0, 1): "Sales", (1, 0): "North", (1, 1): "42"}.items():
        table.cell(row, col).text = value
    buffer = io.BytesIO()
    document.save(buffer)
    return buffer.getvalue()


# ---- reading ---------------------------------------------------------------------------------


def test_pdf_two_pages(tmp_path: Path) -> None:
    """Sentences from both pages come back; look at the PdfConverter output if this fails."""
    data = make_pdf(f"{PAGE_ONE}\n\n{PAGE_ONE_MORE}", PAGE_TWO)
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    doc = read_document(path)
    assert isinstance(doc, Document)
    for sentence in (PAGE_ONE, PAGE_ONE_MORE, PAGE_TWO):
        assert sentence in doc.text
    assert doc.text.index(PAGE_ONE) < doc.text.index(PAGE_TWO)
    assert "\f" not in doc.text and "\n\n\n" not in doc.text
    assert (doc.filename, doc.kind, doc.size_bytes) == ("report.pdf", "pdf", len(data))
    assert len(doc.doc_id) == 32 and int(doc.doc_id, 16) >= 0


def test_doc_id_depends_on_bytes_only(tmp_path: Path) -> None:
    data = make_pdf(PAGE_ONE, PAGE_TWO)
    (tmp_path / "a.pdf").write_bytes(data)
    (tmp_path / "b.pdf").write_bytes(data)
    a, b = read_document(tmp_path / "a.pdf"), read_document(str(tmp_path / "b.pdf"))
    assert a.doc_id == b.doc_id
    assert read_document(make_pdf(PAGE_TWO), filename="c.pdf").doc_id != a.doc_id


@pytest.mark.parametrize("name", ["report.pdf", "r.docx"])
def test_bytes_read_like_path(tmp_path: Path, name: str) -> None:
    data = make_pdf(PAGE_ONE, PAGE_TWO) if name.endswith(".pdf") else make_docx()
    path = tmp_path / name
    path.write_bytes(data)
    assert read_document(data, filename=name) == read_document(path)


def test_docx_heading_paragraphs_table(tmp_path: Path) -> None:
    path = tmp_path / "annual.docx"
    path.write_bytes(make_docx())
    doc = read_document(path)
    assert doc.kind == "docx"
    assert "# Annual Report" in doc.text
    assert doc.title == "Annual Report"
    assert "Revenue grew by ten percent this year." in doc.text
    assert "The team shipped the memory engine." in doc.text
    assert "| Region | Sales |" in doc.text and "| North | 42 |" in doc.text


def test_html_drops_script_and_style() -> None:
    html = """<!doctype html><html><head><title>Trip notes</title>
    <style>.secret { color: red }</style><script>var token = "do-not-index";</script></head>
    <body><h1>Kyoto</h1><p>We visited 清水寺 in <b>April</b>.</p><script>alert("x")</script></body></html>"""
    doc = read_document(html.encode(), filename="trip.HTM")
    assert doc.kind == "htm" and doc.title == "Trip notes"
    assert "# Kyoto" in doc.text and "We visited 清水寺 in **April**." in doc.text
    for hidden in ("do-not-index", "color: red", "alert"):
        assert hidden not in doc.text


def test_markdown_kept_and_normalised(tmp_path: Path) -> None:
    path = tmp_path / "notes.markdown"
    path.write_bytes(b"# Shopping   \r\n\r\n\r\n\r\n- milk  \n- eggs\n\n\n\n## Later\n")
    doc = read_document(path)
    assert doc.text == "# Shopping\n\n- milk\n- eggs\n\n## Later"
    assert (doc.kind, doc.title) == ("markdown", "Shopping")


def test_txt_with_bom_and_chinese() -> None:
    text = "我们明天去北京。\n\n天气很好。"
    doc = read_document(b"\xef\xbb\xbf" + text.encode(), filename="日记.txt")
    assert doc.text == text
    assert (doc.kind, doc.title, doc.filename) == ("txt", None, "日记.txt")


def test_txt_invalid_utf8_is_replaced() -> None:
    assert read_document(b"caf\xe9 ok", filename="x.txt").text == "caf\ufffd ok"


# ---- errors ----------------------------------------------------------------------------------


def test_unsupported_extension_names_supported(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"\.exe.*supported: .*\.docx.*\.pdf"):
        read_document(b"MZ", filename="tool.exe")
    with pytest.raises(InvalidInputError, match="no extension"):
        read_document(tmp_path / "README")
    assert {".pdf", ".docx", ".html", ".htm", ".md", ".markdown", ".txt"} == SUPPORTED


def test_bytes_need_filename() -> None:
    with pytest.raises(InvalidInputError, match="filename is required"):
        read_document(b"hello")


def test_bad_source_type() -> None:
    with pytest.raises(InvalidInputError, match="path or bytes"):
        read_document(42)  # type: ignore[arg-type]


def test_missing_file_and_directory(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        read_document(tmp_path / "nope.pdf")
    (tmp_path / "folder.md").mkdir()
    with pytest.raises(InvalidInputError, match="cannot open"):
        read_document(tmp_path / "folder.md")


def test_too_large(tmp_path: Path) -> None:
    path = tmp_path / "big.txt"
    path.write_bytes(b"x" * 200)
    with pytest.raises(PayloadTooLargeError, match="limit is 100"):
        read_document(path, max_bytes=100)
    with pytest.raises(PayloadTooLargeError):
        read_document(b"x" * 200, filename="big.txt", max_bytes=100)
    assert read_document(path, max_bytes=200).size_bytes == 200


@pytest.mark.parametrize(
    ("data", "name"),
    [(b"%PDF-1.4 garbage", "broken.pdf"), (b"", "empty.pdf"), (b"PK\x03\x04 not a zip", "broken.docx")],
)
def test_corrupt_document(data: bytes, name: str) -> None:
    """markitdown's text fallback must not turn a corrupt PDF into its raw bytes as 'text'."""
    with pytest.raises(InvalidInputError, match=f"could not read '{name}'"):
        read_document(data, filename=name)


def test_pdf_without_text_layer() -> None:
    with pytest.raises(InvalidInputError, match="no extractable text"):
        read_document(make_blank_pdf(), filename="scan.pdf")


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf  \n\n\t\n"])
def test_empty_text_file(data: bytes) -> None:
    with pytest.raises(InvalidInputError, match="no extractable text"):
        read_document(data, filename="empty.txt")


# ---- chunking --------------------------------------------------------------------------------


def check_chunks(text: str, chunks: list[Chunk], size: int, overlap: int) -> None:
    """The invariants every chunking must satisfy."""
    assert [c.index for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == text[c.start : c.end]
        assert 0 < len(c.text) <= size
        assert c.text.strip()
    for prev, nxt in itertools.pairwise(chunks):
        assert nxt.start > prev.start and nxt.end > prev.end
        assert prev.end - nxt.start <= overlap  # shared characters
        assert not text[prev.end : nxt.start].strip()  # a gap holds only whitespace
    covered: set[int] = set()
    for c in chunks:
        covered.update(range(c.start, c.end))
    assert all(i in covered for i, ch in enumerate(text) if not ch.isspace())
    if chunks:
        assert not text[chunks[-1].end :].strip() and not text[: chunks[0].start].strip()


@st.composite
def chunk_args(draw: st.DrawFn) -> tuple[str, int, int]:
    words = st.sampled_from(["memory", "a", "cube", "。", ". ", "! ", "? ", " ", "  ", "\n", "\n\n", "\t"])
    pieces = draw(st.lists(st.one_of(words, st.text(min_size=1, max_size=30)), max_size=120))
    size = draw(st.integers(min_value=50, max_value=200))
    overlap = draw(st.integers(min_value=0, max_value=size // 2))
    return "".join(pieces), size, overlap


@settings(max_examples=300, deadline=None)
@given(chunk_args())
def test_chunk_invariants(args: tuple[str, int, int]) -> None:
    text, size, overlap = args
    check_chunks(text, chunk_text(text, size=size, overlap=overlap), size, overlap)


def test_chunks_prefer_paragraph_then_sentence() -> None:
    para = "Memory cubes hold items. " * 10  # 250 characters
    text = f"{para}\n\n{para}\n\n{para}"
    chunks = chunk_text(text, size=300, overlap=0)
    check_chunks(text, chunks, 300, 0)
    assert all(c.text.endswith("\n\n") for c in chunks[:-1])
    one_paragraph = "Memory cubes hold items. " * 40
    assert all(c.text.endswith(". ") for c in chunk_text(one_paragraph, size=100, overlap=0)[:-1])


def test_overlap_starts_at_word() -> None:
    text = " ".join(f"word{i:03d}" for i in range(300))
    chunks = chunk_text(text, size=200, overlap=50)
    check_chunks(text, chunks, 200, 50)
    assert all(text[c.start - 1] == " " for c in chunks[1:])
    assert all(0 < chunks[i].end - chunks[i + 1].start <= 50 for i in range(len(chunks) - 1))


def test_cjk_without_spaces_hard_cut() -> None:
    text = "记忆立方体保存用户的长期记忆和偏好" * 200  # 3,400 characters, no whitespace at all
    chunks = chunk_text(text, size=500, overlap=100)
    check_chunks(text, chunks, 500, 100)
    assert [len(c.text) for c in chunks[:-1]] == [500] * (len(chunks) - 1)
    assert all(chunks[i].end - chunks[i + 1].start == 100 for i in range(len(chunks) - 1))
    assert chunks[-1].end == len(text)


def test_cjk_sentences_cut_after_full_stop() -> None:
    text = "我们明天去北京看长城。" * 100
    chunks = chunk_text(text, size=120, overlap=20)
    check_chunks(text, chunks, 120, 20)
    assert all(c.text.endswith("。") for c in chunks)


def test_chunk_edge_inputs() -> None:
    assert chunk_text("") == []
    assert chunk_text(" \n\n \t ") == []
    assert chunk_text("short text") == [Chunk(index=0, text="short text", start=0, end=10)]


@pytest.mark.parametrize(("size", "overlap"), [(49, 0), (100, 100), (100, -1), (100, 51)])
def test_chunk_bad_arguments(size: int, overlap: int) -> None:
    with pytest.raises(InvalidInputError):
        chunk_text("some text", size=size, overlap=overlap)


def test_chunk_a_read_document() -> None:
    doc = read_document(make_pdf(" ".join([PAGE_ONE] * 20), " ".join([PAGE_TWO] * 20)), filename="long.pdf")
    chunks = chunk_text(doc.text, size=300, overlap=60)
    check_chunks(doc.text, chunks, 300, 60)
    assert "quick brown fox" in chunks[0].text and "remembers everything" in chunks[-1].text
