"""Render a `detvm report` page in headless Chromium and save a screenshot of its top.

    detvm report vm/models/digits.dvm --input image=img.npy -o report.html
    python examples/report_screenshot.py report.html docs/audit-report.png

Needs Debian's chromium (apt-get install chromium) and playwright (the test extra); playwright
drives the installed chromium and downloads nothing. With pillow (the test extra) the PNG is
stored with a 64-colour palette: a third of the bytes, the same picture (flat colours, text).
"""
import shutil
import sys
from pathlib import Path

from playwright.sync_api import sync_playwright

FLAGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run"]


def main(page_path: str, png: str) -> None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        sys.exit("chromium is not installed (apt-get install chromium)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=FLAGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1800})
        page.goto(Path(page_path).resolve().as_uri())
        page.screenshot(path=png)
        browser.close()
    try:
        from PIL import Image
    except ImportError:
        return
    with Image.open(png) as shot:
        small = shot.convert("RGB").quantize(64, Image.Quantize.MEDIANCUT,
                                             dither=Image.Dither.NONE)
    small.save(png, optimize=True)


if __name__ == "__main__":
    main(*sys.argv[1:3])
