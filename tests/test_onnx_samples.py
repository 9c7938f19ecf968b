"""compiler/onnx/samples.py: generated inputs for the real models, YOLOv8 detections,
agreement figures."""
from __future__ import annotations

import numpy as np
import pytest

from compiler.onnx import samples

pytest.importorskip("PIL", reason="rendered text needs Pillow: pip install 'detvm[test]'")


def test_text_crops_are_preprocessed_like_rapidocr():
    x, labels = samples.text_crops(6, seed=3)
    assert x.shape == (6, 3, 48, 192) and x.dtype == np.float32
    assert list(labels) == [0, 1, 0, 1, 0, 1]
    assert x.min() >= -1 and x.max() <= 1
    again, _ = samples.text_crops(6, seed=3)
    assert np.array_equal(x, again)                       # generated the same every time
    assert not np.array_equal(x, samples.text_crops(6, seed=4)[0])


def test_text_pages():
    pages = samples.text_pages(2, size=96)
    assert pages.shape == (2, 3, 96, 96) and (pages < 0).any()    # ink on the page


def test_photos_are_square_padded_rgb():
    pytest.importorskip("skimage", reason="photos need scikit-image: pip install "
                                          "'detvm[test]'")
    x = samples.photos(64, names=("coffee", "camera"), flips=True)
    assert x.shape == (4, 3, 64, 64) and 0 <= x.min() and x.max() <= 1
    assert np.array_equal(x[2, 0], x[2, 1])                          # grey camera
    assert np.all(x[0][:, 60:] == 0)                # coffee (400x600) padded at the bottom


def test_detections_filter_then_suppress():
    out = np.zeros((4 + 3, 4), np.float32)
    out[:4, 0] = [50, 50, 20, 20]          # class 1, 0.9
    out[:4, 1] = [52, 50, 20, 20]          # overlaps box 0: suppressed
    out[:4, 2] = [150, 50, 20, 20]         # class 2, 0.5
    out[:4, 3] = [10, 10, 4, 4]            # below the threshold
    out[4 + 1, 0], out[4 + 1, 1], out[4 + 2, 2], out[4 + 0, 3] = 0.9, 0.8, 0.5, 0.2
    found = samples.detections(out)
    assert [(c, round(s, 3)) for c, s, _ in found] == [(1, 0.9), (2, 0.5)]
    assert found[0][2] == (40.0, 40.0, 60.0, 60.0)


def test_agreement_figures():
    scale = np.float32(0.5)
    a = np.array([0, 0.5, 1, 1.5], np.float32)
    b = np.array([0, 0.5, 2, 1.5], np.float32)
    assert samples.agreement(a, b, scale) == {"identical": 0.75, "max_lsb": 2, "values": 4}
    with pytest.raises(ValueError, match="shapes differ"):
        samples.agreement(a, b[:3], scale)
