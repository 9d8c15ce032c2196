"""Compare OCR engines on the same page images: RapidOCR (what rag uses) and Tesseract (Debian's
`tesseract-ocr`, run as a subprocess), by seconds per page and character similarity with the page's known
text. Pages: OCRmyPDF's scan of the LinnSequencer brochure (its reference text ships beside it) and the two
noisy, rotated pages the tests render. Run with the machine otherwise idle:

    python scripts/ocr_compare.py --linn eval/scans-tables/linnsequencer-brochure-scan.png --linn-text LINN.txt
"""
from __future__ import annotations

import argparse
import difflib
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def similarity(found: str, truth: str) -> float:
    """Character similarity of two texts with white space collapsed and typographic quotes and dashes folded
    to ASCII (difflib's ratio, 0–100)."""
    import unicodedata

    from rag.text import _FOLD

    fold = lambda t: " ".join(unicodedata.normalize("NFKC", t).translate(_FOLD).split())  # noqa: E731
    a, b = fold(found), fold(truth)
    return 100 * difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()


def rapidocr(image) -> str:
    from rag.ingest import ocr

    return ocr.read_image(image)


def tesseract(image) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "page.png"
        image.save(path)
        out = subprocess.run(["tesseract", str(path), "-", "-l", "eng"], capture_output=True, text=True, check=True)
    return out.stdout


def pages(scans: Path | None, truths: Path | None = None):
    """(name, image, known text or None) of every page compared."""
    from PIL import Image
    from scans import SCAN_PAGES, scanned_page

    for seed, lines in enumerate(SCAN_PAGES):
        yield f"rendered page {seed + 1} (noise, 1° turn)", scanned_page(lines, seed), "\n".join(lines)
    if scans is None:
        return
    def truth(path: Path) -> str | None:
        known = truths / f"{path.stem}.txt" if truths else None
        return known.read_text(encoding="utf-8") if known and known.is_file() else None

    for path in sorted(scans.glob("*.png")):
        yield path.name, Image.open(path).convert("RGB"), truth(path)
    for path in sorted(scans.glob("*scan*.pdf")):
        import pypdfium2 as pdfium

        from rag.ingest.ocr import RENDER_DPI

        document = pdfium.PdfDocument(path)
        yield f"{path.name} (rendered at {RENDER_DPI} dpi)", document[0].render(scale=RENDER_DPI / 72).to_pil(), truth(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scans", type=Path, help="a folder of real scans (.png, *scan*.pdf) to time")
    parser.add_argument("--truth", type=Path, help="a folder of hand transcriptions, NAME.txt for the scan NAME.*")
    args = parser.parse_args()
    engines = {"RapidOCR (PP-OCRv6 small, ONNX Runtime)": rapidocr}
    if shutil.which("tesseract"):
        engines["Tesseract 5 (eng)"] = tesseract
    rapidocr(next(pages(None))[1])  # load the models before timing
    print("| page | engine | seconds | character similarity with the known text (%) |\n|---|---|---:|---:|")
    for name, image, truth in pages(args.scans, args.truth):
        for engine, read in engines.items():
            started = time.perf_counter()
            text = read(image)
            seconds = time.perf_counter() - started
            shown = f"{similarity(text, truth):.1f}" if truth else "– (no true text)"
            print(f"| {name} | {engine} | {seconds:.2f} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
