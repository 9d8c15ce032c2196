"""Documents made for the OCR and table tests: a two-page image-only PDF (pages rendered as images with
noise and a slight rotation, as a scanner gives them), an HTML page and a PDF with a data table."""
from __future__ import annotations

import random
from pathlib import Path

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSerif.ttf"
SCAN_PAGES = [
    ["Annual report of the Inis Mor harbour board", "",
     "The harbour board met four times during the year.", "Its chair is Brid Flaherty, a former ferry captain.",
     "The board approved a new slipway for the lifeboat."],
    ["Works completed", "",
     "The breakwater was repaired by Galway Marine Works.", "The repair cost 412,000 euro and took nine weeks.",
     "The harbour master, Sean Ryan, inspected it in May."],
]
LAKES = [("Lake", "Maximum depth (m)", "Volume (km3)", "Area (km2)"),
         ("Superior", "406", "12,100", "82,100"), ("Michigan", "281", "4,900", "58,000"),
         ("Huron", "229", "3,540", "59,600"), ("Erie", "64", "484", "25,700"), ("Ontario", "244", "1,640", "18,960")]


def scanned_page(lines: list[str], seed: int):
    """A page image as a scanner gives it: 150 dpi, grey speckle, turned by a degree."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    rng = random.Random(seed)
    page = Image.new("L", (1240, 1754), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.truetype(FONT, 34)
    y = 160
    for line in lines:
        draw.text((130, y), line, fill=25, font=font)
        y += 62
    for _ in range(4000):  # speckle
        x, yy = rng.randrange(page.width), rng.randrange(page.height)
        page.putpixel((x, yy), rng.randrange(120, 255))
    page = page.rotate(rng.choice([-1.2, 0.9]), fillcolor=255, resample=Image.BICUBIC)
    return page.filter(ImageFilter.GaussianBlur(0.6)).convert("RGB")


def write_scan_pdf(path: Path) -> Path:
    pages = [scanned_page(lines, seed) for seed, lines in enumerate(SCAN_PAGES)]
    pages[0].save(path, "PDF", resolution=150, save_all=True, append_images=pages[1:])
    return path


def write_table_html(path: Path) -> Path:
    head = "".join(f"<th>{h}</th>" for h in LAKES[0])
    body = "".join("<tr><th scope=\"row\">" + row[0] + "</th>" + "".join(f"<td>{c}</td>" for c in row[1:]) + "</tr>"
                   for row in LAKES[1:])
    path.write_text(f"<html><head><title>Great Lakes</title></head><body><main><h1>The Great Lakes</h1>"
                    "<p>The five Great Lakes of North America hold a fifth of the world's surface fresh water.</p>"
                    f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
                    "<p>Figures are rounded.</p></main></body></html>", encoding="utf-8")
    return path


def write_table_pdf(path: Path) -> Path:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.add_page()
    pdf.set_font("Helvetica", size=12)
    pdf.multi_cell(0, 8, "Ferries of the Aran Islands. The table lists each ferry, its home port and its crossing time.")
    pdf.ln(4)
    rows = [("Ferry", "Home port", "Crossing (minutes)", "Passengers"),
            ("Aran Flyer", "Rossaveal", "40", "294"), ("Star of Doolin", "Doolin", "35", "200"),
            ("Saoirse na Farraige", "Rossaveal", "45", "294")]
    with pdf.table() as table:
        for row in rows:
            cells = table.row()
            for cell in row:
                cells.cell(cell)
    pdf.ln(4)
    pdf.multi_cell(0, 8, "Sailings are fewer in winter.")
    pdf.output(str(path))
    return path
