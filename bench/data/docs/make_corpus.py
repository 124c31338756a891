"""Build the document-retrieval evaluation corpus into a folder.

Usage:
    python bench/data/docs/make_corpus.py OUT_DIR

The corpus is written flat into OUT_DIR:

* every ``.md``, ``.txt`` and ``.html`` file next to this script is copied as is;
* every ``src_pdf/NAME.md`` becomes ``NAME.pdf`` (fpdf2, Unicode TTF font, at least 2 pages);
* every ``src_docx/NAME.md`` becomes ``NAME.docx`` (python-docx, Heading 1/2/3 styles,
  'List Bullet' for list items).

The Markdown understood by the converters is deliberately small: ``#``/``##``/``###``
headings, paragraphs (consecutive lines are joined), ``- `` bullet items and ``1. `` numbered
items. ``**`` and backticks are dropped. The output is deterministic: the PDF creation date,
the DOCX core properties and the DOCX zip timestamps are fixed, so two builds give identical
bytes.
"""

import datetime
import io
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
COPY_SUFFIXES = (".md", ".txt", ".html")
FIXED_DATE = datetime.datetime(2024, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
ZIP_DATE = (2024, 6, 1, 12, 0, 0)
DEJAVU = Path("/usr/share/fonts/truetype/dejavu")


# --- Markdown parsing -------------------------------------------------------------------------


def clean_inline(text):
    """Drop the inline Markdown markup the converters do not render."""
    return text.replace("**", "").replace("`", "")


def parse_markdown(text):
    """Return a list of blocks: (kind, level, text) with kind in heading/para/bullet/number.

    For 'number' blocks, level holds the item number; for headings, the heading level.
    """
    blocks = []
    para = []

    def flush():
        if para:
            blocks.append(("para", 0, clean_inline(" ".join(para))))
            para.clear()

    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            flush()
            continue
        m = re.match(r"^(#{1,3})\s+(.*)$", line)
        if m:
            flush()
            blocks.append(("heading", len(m.group(1)), clean_inline(m.group(2))))
            continue
        m = re.match(r"^[-*]\s+(.*)$", line)
        if m:
            flush()
            blocks.append(("bullet", 0, clean_inline(m.group(1))))
            continue
        m = re.match(r"^(\d+)\.\s+(.*)$", line)
        if m:
            flush()
            blocks.append(("number", int(m.group(1)), clean_inline(m.group(2))))
            continue
        if blocks and blocks[-1][0] in ("bullet", "number") and not para and raw[:1] == " ":
            # indented continuation of a list item
            kind, level, prev = blocks[-1]
            blocks[-1] = (kind, level, prev + " " + clean_inline(line))
            continue
        para.append(line)
    flush()
    return blocks


def document_title(blocks, fallback):
    for kind, _level, text in blocks:
        if kind == "heading":
            return text
    return fallback


# --- PDF --------------------------------------------------------------------------------------


def find_fonts():
    """Return (regular, bold) TTF paths; bold may equal regular if no bold face is found."""
    regular = DEJAVU / "DejaVuSans.ttf"
    bold = DEJAVU / "DejaVuSans-Bold.ttf"
    if regular.exists():
        return str(regular), str(bold if bold.exists() else regular)
    try:
        out = subprocess.run(
            ["fc-list", ":fontformat=TrueType", "file", "style"], capture_output=True, text=True, check=True
        ).stdout
    except (OSError, subprocess.CalledProcessError):
        out = ""
    regular_path = bold_path = None
    for line in sorted(out.splitlines()):
        path, _, style = line.partition(":")
        path = path.strip()
        if not path.lower().endswith(".ttf"):
            continue
        style = style.lower()
        if regular_path is None and ("regular" in style or "book" in style):
            regular_path = path
        if bold_path is None and "bold" in style and "italic" not in style and "oblique" not in style:
            bold_path = path
    if regular_path is None:
        sys.exit("no TrueType font found (install fonts-dejavu-core)")
    return regular_path, bold_path or regular_path


def build_pdf(src, dest):
    from fpdf import FPDF
    from fpdf.enums import XPos, YPos

    blocks = parse_markdown(src.read_text(encoding="utf-8"))
    title = document_title(blocks, src.stem)
    regular, bold = find_fonts()

    class Pdf(FPDF):
        def footer(self):
            self.set_y(-15)
            self.set_font("Body", "", 8)
            self.cell(0, 10, f"{title} - page {self.page_no()}/{{nb}}", align="C")

    pdf = Pdf(format="A4")
    pdf.set_creation_date(FIXED_DATE)
    pdf.set_title(title)
    pdf.set_author("mistralkit retrieval benchmark (fictional document)")
    pdf.set_creator("bench/data/docs/make_corpus.py")
    pdf.add_font("Body", "", regular)
    pdf.add_font("Body", "B", bold)
    pdf.set_margins(22, 20, 22)
    pdf.set_auto_page_break(True, margin=20)
    pdf.add_page()

    heading_sizes = {1: 17, 2: 13.5, 3: 12}
    body_size, line_h = 11, 5.8
    for kind, level, text in blocks:
        if kind == "heading":
            pdf.ln(3 if level > 1 else 0)
            pdf.set_font("Body", "B", heading_sizes[level])
            pdf.multi_cell(0, heading_sizes[level] * 0.55, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2)
        elif kind == "para":
            pdf.set_font("Body", "", body_size)
            pdf.multi_cell(0, line_h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(2.5)
        else:
            marker = "\u2022" if kind == "bullet" else f"{level}."
            pdf.set_font("Body", "", body_size)
            pdf.set_x(pdf.l_margin + 4)
            pdf.cell(7, line_h, marker)
            pdf.multi_cell(pdf.epw - 11, line_h, text, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
            pdf.ln(1)
    if pdf.page_no() < 2:
        sys.exit(f"{src.name}: the PDF has only {pdf.page_no()} page; add text to the source")
    pdf.output(str(dest))


# --- DOCX -------------------------------------------------------------------------------------


def build_docx(src, dest):
    import docx

    blocks = parse_markdown(src.read_text(encoding="utf-8"))
    title = document_title(blocks, src.stem)
    document = docx.Document()
    props = document.core_properties
    props.title = title
    props.author = "mistralkit retrieval benchmark (fictional document)"
    props.last_modified_by = props.author
    props.created = FIXED_DATE.replace(tzinfo=None)
    props.modified = FIXED_DATE.replace(tzinfo=None)
    props.last_printed = FIXED_DATE.replace(tzinfo=None)
    props.revision = 1
    props.comments = "Built by bench/data/docs/make_corpus.py"

    for kind, level, text in blocks:
        if kind == "heading":
            document.add_heading(text, level=level)
        elif kind == "para":
            document.add_paragraph(text)
        elif kind == "bullet":
            document.add_paragraph(text, style="List Bullet")
        else:
            document.add_paragraph(text, style="List Number")

    buffer = io.BytesIO()
    document.save(buffer)
    # python-docx stamps each zip member with the current time: rewrite with a fixed one.
    with zipfile.ZipFile(buffer) as zin, zipfile.ZipFile(dest, "w") as zout:
        for item in zin.infolist():
            info = zipfile.ZipInfo(item.filename, date_time=ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            zout.writestr(info, zin.read(item.filename))


# --- main -------------------------------------------------------------------------------------


def build(out_dir):
    """Build the corpus into out_dir and return the list of file names written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(HERE.iterdir()):
        if path.is_file() and path.suffix in COPY_SUFFIXES:
            shutil.copyfile(path, out / path.name)
            written.append(path.name)
    for src in sorted((HERE / "src_pdf").glob("*.md")):
        build_pdf(src, out / (src.stem + ".pdf"))
        written.append(src.stem + ".pdf")
    for src in sorted((HERE / "src_docx").glob("*.md")):
        build_docx(src, out / (src.stem + ".docx"))
        written.append(src.stem + ".docx")
    names = [Path(n) for n in written]
    if len({n.stem for n in names}) != len(names):
        sys.exit("two corpus files share a name stem")
    return sorted(written)


def main(argv):
    if len(argv) != 2:
        sys.exit(__doc__.strip().splitlines()[0] + "\n\nusage: make_corpus.py OUT_DIR")
    written = build(argv[1])
    print(f"{len(written)} documents written to {argv[1]}")


if __name__ == "__main__":
    main(sys.argv)
