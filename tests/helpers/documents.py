"""Documents made in the test: two short facts, a PDF, a Word file, a line of encoded data, text without a space."""
from __future__ import annotations

import base64
import io
import random

LIGHTHOUSE = "The lighthouse keeper on Inis Mor is named Brigid Flanagan. She has kept the light since 1998.\n"
FERRY = "The ferry to the island leaves from Rossaveal harbour every morning at nine.\n"


def make_pdf(pages: list[str], password: str | None = None, image_only: bool = False) -> bytes:
    from fpdf import FPDF

    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    for text in pages:
        pdf.add_page()
        if image_only:
            pdf.rect(20, 20, 100, 60, style="F")
        else:
            pdf.multi_cell(0, 8, text)
    if password:
        pdf.set_encryption(owner_password=password, user_password=password)
    return bytes(pdf.output())


def make_docx() -> bytes:
    import docx

    document = docx.Document()
    document.add_heading("Annual report", level=1)
    document.add_paragraph("The cooperative had 312 members at the end of the year.")
    document.add_heading("Harvest", level=2)
    document.add_paragraph("The apple harvest reached 41 tonnes, the best since 2009.")
    table = document.add_table(rows=1, cols=2)
    table.rows[0].cells[0].text = "Pears"
    table.rows[0].cells[1].text = "7 tonnes"
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def base64_text(n_bytes: int) -> str:
    return base64.b64encode(random.Random(0).randbytes(n_bytes * 3 // 4)).decode()


def spaceless_chinese(n_chars: int) -> str:
    rng = random.Random(0)
    return "".join(chr(rng.randint(0x4E00, 0x9FA5)) for _ in range(n_chars))
