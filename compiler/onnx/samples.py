"""Inputs for the models of compiler/onnx/zoo.py, generated in code, preprocessed as the
packages that ship the models do; and YOLOv8's detections from its raw output.

* :func:`text_crops`: rendered words at 0 or 180 degrees for the PP-OCR direction classifier
  (rapidocr: height 48, width <= 192 keeping the aspect ratio, zero padding, ``x/127.5 - 1``,
  BGR);
* :func:`text_pages`: pages of rendered text lines for the PP-OCR detector (same scaling);
* :func:`photos`: scikit-image's sample photographs for NudeNet's YOLOv8n (padded to a
  square at the bottom and right, resized, ``x/255``, RGB).

Text is drawn with Pillow's own scalable font (the same glyphs on every machine with the same
Pillow). Pillow and scikit-image are optional (the ``test`` extra).
"""
from __future__ import annotations

import math

import numpy as np

from vm.errors import EnvironmentFault

WORDS = ("the quick brown fox jumps over lazy dog invoice total amount date paper receipt "
         "model vector number street station coffee market window table page section chapter "
         "report figure result value deterministic integer machine every order account "
         "customer address phone email open close north south river garden 2024 17.50 "
         "No.38 A4 $120 ID:7731").split()
PHOTOS = ("astronaut", "camera", "chelsea", "coffee", "rocket", "hubble_deep_field",
          "immunohistochemistry", "retina", "coins", "moon", "page", "text", "clock", "brick",
          "grass", "gravel", "colorwheel")
"""scikit-image's sample images (shipped with it: no download)."""


def _pillow():
    try:
        from PIL import Image, ImageDraw, ImageFont
    except ImportError as e:
        raise EnvironmentFault(f"rendering text needs Pillow (pip install pillow): {e}") \
            from None
    return Image, ImageDraw, ImageFont


def _phrase(rng, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def _render_word(rng) -> "object":
    """A crop of dark text on a light background (or the reverse), as a PIL image."""
    Image, ImageDraw, ImageFont = _pillow()
    font = ImageFont.load_default(size=int(rng.integers(18, 44)))
    text = _phrase(rng, int(rng.integers(1, 4)))
    ink = tuple(int(v) for v in rng.integers(0, 90, 3))
    paper = tuple(int(v) for v in rng.integers(170, 256, 3))
    if rng.random() < 0.2:
        ink, paper = paper, ink
    left, top, right, bottom = ImageDraw.Draw(Image.new("RGB", (1, 1))).textbbox(
        (0, 0), text, font=font)
    pad = int(rng.integers(2, 9))
    image = Image.new("RGB", (right - left + 2 * pad, bottom - top + 2 * pad), paper)
    ImageDraw.Draw(image).text((pad - left, pad - top), text, font=font, fill=ink)
    return image


def text_crops(n: int, seed: int = 0, *, height: int = 48, width: int = 192):
    """(float32 [n, 3, height, width], labels: 0 upright, 1 turned 180 degrees)."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for k in range(n):
        crop = _render_word(rng)
        if k % 2:
            crop = crop.rotate(180)
        images.append(classifier_input(np.asarray(crop)[:, :, ::-1], height, width))
        labels.append(k % 2)
    return np.stack(images), np.array(labels)


def classifier_input(bgr: np.ndarray, height: int = 48, width: int = 192) -> np.ndarray:
    """rapidocr's direction-classifier preprocessing of one HxWx3 uint8 BGR crop."""
    Image, _, _ = _pillow()
    h, w = bgr.shape[:2]
    resized_w = min(width, math.ceil(height * w / h))
    resized = np.asarray(Image.fromarray(bgr).resize((resized_w, height), Image.BILINEAR))
    out = np.zeros((3, height, width), np.float32)
    out[:, :, :resized_w] = resized.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1
    return out


def text_pages(n: int, seed: int = 0, *, size: int = 640):
    """float32 [n, 3, size, size]: pages of text lines at random places and sizes."""
    Image, ImageDraw, ImageFont = _pillow()
    rng = np.random.default_rng(seed)
    pages = []
    for _ in range(n):
        paper = tuple(int(v) for v in rng.integers(200, 256, 3))
        page = Image.new("RGB", (size, size), paper)
        draw = ImageDraw.Draw(page)
        y = int(rng.integers(4, 30))
        while y < size - 20:
            font = ImageFont.load_default(size=int(rng.integers(14, 40)))
            ink = tuple(int(v) for v in rng.integers(0, 100, 3))
            draw.text((int(rng.integers(4, size // 3)), y), _phrase(rng, int(rng.integers(2, 7))),
                      font=font, fill=ink)
            y += int(font.size * rng.uniform(1.3, 2.6))
        bgr = np.asarray(page)[:, :, ::-1]
        pages.append(bgr.transpose(2, 0, 1).astype(np.float32) / 127.5 - 1)
    return np.stack(pages)


def photos(size: int = 320, names=PHOTOS, flips: bool = False):
    """float32 [k, 3, size, size] from scikit-image's sample photographs (``flips``: each
    also mirrored left to right)."""
    Image, _, _ = _pillow()
    try:
        from skimage import data
    except ImportError as e:
        raise EnvironmentFault(f"sample photographs need scikit-image (pip install "
                               f"scikit-image): {e}") from None
    out = []
    for name in names:
        image = np.asarray(getattr(data, name)())
        image = np.repeat(image[:, :, None], 3, 2) if image.ndim == 2 else image[:, :, :3]
        for picture in (image, image[:, ::-1]) if flips else (image,):
            side = max(picture.shape[:2])
            square = np.zeros((side, side, 3), np.uint8)
            square[:picture.shape[0], :picture.shape[1]] = picture
            resized = Image.fromarray(square).resize((size, size), Image.BILINEAR)
            out.append(np.asarray(resized).transpose(2, 0, 1).astype(np.float32) / 255)
    return np.stack(out)


def detections(output: np.ndarray, threshold: float = 0.25, iou: float = 0.45) -> list:
    """YOLOv8 output [4 + classes, boxes] -> [(class, score, (x0, y0, x1, y1))], best first:
    boxes whose best class score reaches ``threshold``, then greedy non-maximum suppression."""
    boxes = np.asarray(output, dtype=np.float64)
    scores, classes = boxes[4:].max(0), boxes[4:].argmax(0)
    keep = np.flatnonzero(scores >= threshold)
    keep = keep[np.argsort(-scores[keep], kind="stable")]
    cx, cy, w, h = boxes[:4]
    corners = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
    chosen: list[int] = []
    for k in keep:
        if all(_iou(corners[k], corners[j]) <= iou for j in chosen):
            chosen.append(int(k))
    return [(int(classes[k]), float(scores[k]), tuple(float(v) for v in corners[k]))
            for k in chosen]


def _iou(a, b) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def agreement(ours: np.ndarray, theirs: np.ndarray, scale) -> dict:
    """How two float outputs of one quantized model agree: the fraction of identical values
    and the largest distance in units of the output's scale (LSB; ``scale`` broadcasts)."""
    ours, theirs = np.asarray(ours, np.float64), np.asarray(theirs, np.float64)
    if ours.shape != theirs.shape:
        raise ValueError(f"shapes differ: {ours.shape} and {theirs.shape}")
    lsb = np.rint(np.abs(ours - theirs) / np.asarray(scale, np.float64))
    return {"identical": float(np.mean(ours == theirs)) if ours.size else 1.0,
            "max_lsb": int(lsb.max()) if lsb.size else 0, "values": int(ours.size)}
