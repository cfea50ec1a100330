"""Document parsing: bytes of a txt, md, pdf, docx, html, csv or xlsx file → blocks of text.

A :class:`Block` is a unit the chunker may join with others but never cuts across
when it is ``atomic`` (a table row). Spreadsheets become :class:`Row` records for
structured knowledge bases, with their columns as fields.

Parsers: pypdf (pdf, page numbers kept), python-docx (docx, headings and tables),
BeautifulSoup (html), openpyxl (xlsx), the standard library for the rest.
"""

from __future__ import annotations

import csv
import io
import logging
import re
from dataclasses import dataclass, field
from pathlib import PurePath

SUPPORTED = ("txt", "md", "markdown", "pdf", "docx", "html", "htm", "csv", "xlsx")
TABLE_TYPES = ("csv", "xlsx")


class ParseError(Exception):
    """The file could not be parsed; the message says why (shown as the file's failure reason)."""


@dataclass(frozen=True)
class Block:
    text: str
    title: str = ""  # the nearest heading above the block
    page: int | None = None  # 0-based page, for paged formats
    atomic: bool = False  # a table row: never split


@dataclass
class Parsed:
    blocks: list[Block] = field(default_factory=list)
    rows: list[dict[str, str]] = field(default_factory=list)  # spreadsheets: one dict per row
    columns: list[str] = field(default_factory=list)


def file_type(name: str) -> str:
    return PurePath(name).suffix.lower().lstrip(".")


TABLE_TYPES = ("csv", "xlsx")  # what a structured knowledge base takes
logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings ("EOF marker not found") duplicate the reason we report

def parse(data: bytes, name: str) -> Parsed:
    kind = file_type(name)
    if kind not in SUPPORTED:
        raise ParseError(f"unsupported file type '.{kind}' (supported: {', '.join(SUPPORTED)})")
    try:
        if kind in ("txt",):
            return Parsed(blocks=_paragraphs(_decode(data)))
        if kind in ("md", "markdown"):
            return Parsed(blocks=_markdown(_decode(data)))
        if kind == "pdf":
            return Parsed(blocks=_pdf(data))
        if kind == "docx":
            return Parsed(blocks=_docx(data))
        if kind in ("html", "htm"):
            return Parsed(blocks=_html(data))
        if kind == "csv":
            return _table(list(csv.reader(io.StringIO(_decode(data)))))
        return _xlsx(data)
    except ParseError:
        raise
    except Exception as exc:  # every parser library has its own errors: report, don't crash
        raise ParseError(f"cannot parse {name} as {kind}: {type(exc).__name__}: {exc}") from None


def _decode(data: bytes) -> str:
    for enc in ("utf-8-sig", "gb18030"):
        try:
            return data.decode(enc)
        except UnicodeDecodeError:
            continue
    raise ParseError("the text is neither UTF-8 nor GB18030")


def _paragraphs(text: str, title: str = "", page: int | None = None) -> list[Block]:
    parts = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    return [Block(p.strip(), title, page) for p in parts if p.strip()]


_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$")
_TABLE_RULE = re.compile(r"^\s*\|?(\s*:?-{3,}:?\s*\|)+\s*:?-*:?\s*$")


def _markdown(text: str) -> list[Block]:
    blocks: list[Block] = []
    title = ""
    para: list[str] = []

    def flush() -> None:
        if para and "".join(para).strip():
            blocks.append(Block("\n".join(para).strip(), title))
        para.clear()

    for line in text.replace("\r\n", "\n").split("\n"):
        heading = _HEADING.match(line)
        if heading:
            flush()
            title = heading.group(2)
            continue
        if _TABLE_ROW.match(line):
            flush()
            if not _TABLE_RULE.match(line):  # skip the |---|---| rule under a header
                blocks.append(Block(line.strip(), title, atomic=True))
            continue
        if not line.strip():
            flush()
            continue
        para.append(line)
    flush()
    return blocks


def _pdf(data: bytes) -> list[Block]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise ParseError("the PDF is encrypted")
        blocks: list[Block] = []
        for page_no, page in enumerate(reader.pages):
            blocks += _paragraphs(page.extract_text() or "", page=page_no)
    except PdfReadError as exc:
        raise ParseError(f"not a readable PDF: {exc}") from None
    if not blocks:
        raise ParseError("the PDF has no extractable text (scanned images need OCR, which bailu does not do)")
    return blocks


def _docx(data: bytes) -> list[Block]:
    import docx
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    document = docx.Document(io.BytesIO(data))
    blocks: list[Block] = []
    title = ""
    for item in document.iter_inner_content():
        if isinstance(item, Paragraph):
            text = item.text.strip()
            if not text:
                continue
            if item.style is not None and (item.style.name or "").lower().startswith(("heading", "title")):
                title = text
                continue
            blocks.append(Block(text, title))
        elif isinstance(item, Table):
            for row in item.rows:
                cells = [c.text.strip() for c in row.cells]
                blocks.append(Block("| " + " | ".join(cells) + " |", title, atomic=True))
    return blocks


def _html(data: bytes) -> list[Block]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(data, "html.parser")
    for tag in soup(["script", "style", "noscript", "template"]):
        tag.decompose()
    blocks: list[Block] = []
    title = soup.title.get_text(strip=True) if soup.title else ""
    for el in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "tr", "pre", "blockquote", "dd", "dt"]):
        if el.name == "tr":
            cells = [c.get_text(" ", strip=True) for c in el.find_all(["td", "th"])]
            blocks.append(Block("| " + " | ".join(cells) + " |", title, atomic=True))
            continue
        if el.find_parent(["p", "li", "tr", "pre", "blockquote"]) is not None:
            continue  # nested: its text is part of the parent's
        text = el.get_text(" ", strip=True)
        if not text:
            continue
        if el.name and el.name[0] == "h" and el.name[1:].isdigit():
            title = text
            continue
        blocks.append(Block(text, title))
    return blocks


def _table(rows: list[list[str]]) -> Parsed:
    rows = [r for r in rows if any((c or "").strip() for c in r)]
    if not rows:
        raise ParseError("the table is empty")
    header = [(h or "").strip() or f"column{i + 1}" for i, h in enumerate(rows[0])]
    records = []
    for r in rows[1:]:
        cells = [(c if c is not None else "") for c in r] + [""] * (len(header) - len(r))
        records.append({h: str(v).strip() for h, v in zip(header, cells, strict=False)})
    blocks = [Block("; ".join(f"{k}: {v}" for k, v in rec.items() if v), atomic=True) for rec in records]
    return Parsed(blocks=blocks, rows=records, columns=header)


def _xlsx(data: bytes) -> Parsed:
    import openpyxl

    book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    sheet = book.worksheets[0]
    rows = [["" if v is None else str(v) for v in row] for row in sheet.iter_rows(values_only=True)]
    book.close()
    return _table(rows)
