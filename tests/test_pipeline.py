"""Pre- and post-processing models chained around a model (vm/pipeline.py), and the shipped
examples (examples/pre_post/): every stage validated, bit-exact, gas the sum."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import vm
from compiler import parse
from compiler.symbolize import symbolize
from vm.errors import InvalidError, TrapError
from vm.pipeline import Pipeline

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "pre_post"
MODELS = Path(vm.__file__).parent / "models"


@pytest.fixture(scope="module")
def digits():
    return symbolize(vm.load(MODELS / "digits.dvm").program, {"N": 8}, {"N": 64})


@pytest.fixture(scope="module")
def pixels():
    return np.rint(np.load(MODELS / "digits_inputs.npz")["image_float"] * 16).astype(np.int8)


def test_digits_chain_is_bit_exact(digits, pixels):
    chain = vm.load(digits, pre=EXAMPLES / "digits_pre.dvmt", post=EXAMPLES / "argmax_post.dvmt")
    assert isinstance(chain, Pipeline) and [r for r, _ in chain.stages] == ["pre", "main", "post"]
    image = chain.pre.run({"pixels": pixels})["image"]
    shipped = np.load(MODELS / "digits_inputs.npz")["image"]
    assert np.array_equal(image, shipped)        # the pre model reproduces the quantization
    expected = np.load(MODELS / "digits_expected.npz")["logits"].argmax(1)
    got = chain.run({"pixels": pixels})
    assert np.array_equal(got["label"], expected)
    ref = vm.load(digits, vm.reference(), pre=EXAMPLES / "digits_pre.dvmt",
                  post=EXAMPLES / "argmax_post.dvmt").run({"pixels": pixels[:2]})
    assert ref["label"].tobytes() == got["label"][:2].tobytes()
    assert chain.gas_for(N=5) == sum(m.gas_for(N=5) for _, m in chain.stages)
    assert str(chain.gas_formula).endswith("*N") and chain.gas == chain.gas_for(N=64)
    singles = [chain.run({"pixels": pixels[k:k + 1]}) for k in range(8)]
    for a, b in zip(chain.run_many([{"pixels": pixels[k:k + 1]} for k in range(8)]), singles):
        assert a["label"].tobytes() == b["label"].tobytes()
    buf = np.zeros(8, np.int8)
    assert chain.run({"pixels": pixels}, out={"label": buf})["label"] is buf
    assert np.array_equal(buf, expected)
    with pytest.raises(TrapError, match="N = 65"):
        chain.run({"pixels": np.zeros((65, 1, 8, 8), np.int8)})


def test_the_packaging_example(tmp_path):
    import runpy
    example = runpy.run_path(str(ROOT / "examples" / "pre_post.py"))
    blob = example["digits_package"]()
    assert blob == example["digits_package"]()                   # deterministic bytes
    chain = vm.load(blob)
    assert chain.package.tests == 1 and [r for r, _ in chain.stages] == ["pre", "main", "post"]
    from detvm.info import info_of
    facts = info_of(chain)
    assert facts["chain"] == ["pre digits-pre", "main digits-cnn", "post argmax-post"]
    assert facts["package"]["tests"] == 1 and facts["gas_formula"] == str(chain.gas_formula)


def test_pre_model_quantizes_as_the_model_does():
    scale = np.float32(vm.load(MODELS / "digits.dvm").metadata["input.image.scale"])
    pixels = np.arange(17, dtype=np.int8).reshape(17, 1, 1, 1) * np.ones((1, 1, 8, 8), np.int8)
    got = vm.load(EXAMPLES / "digits_pre.dvmt").run({"pixels": pixels})["image"][:, 0, 0, 0]
    want = np.rint(np.float32(np.arange(17) / 16) / scale).astype(np.int64) - 128
    assert got.tolist() == want.tolist()


def test_every_example_loads_and_certifies():
    import verify
    for path in sorted(EXAMPLES.glob("*.dvmt")):
        model = vm.load(path)
        assert verify.certify(model).proved, path.name


def test_post_examples_decode(digits):
    logits = np.array([[1, 5, 5, -3, 0, 0, 9, 9, 2, 1]], np.int8)
    top = vm.load(EXAMPLES / "topk_post.dvmt").run({"logits": logits})
    assert top["classes"].tolist() == [[6, 7, 1]] and top["scores"].tolist() == [[9, 9, 5]]
    scores = np.full((1, 24, 37), -5, np.int8)
    for t, c in enumerate([3, 3, 0, 3, 5, 5, 0, 0, 7] + [0] * 15):
        scores[0, t, c] = 9
    out = vm.load(EXAMPLES / "ctc_post.dvmt").run({"scores": scores})
    assert out["text"][0, :4].tolist() == [3, 3, 5, 7] and int(out["length"][0]) == 4
    assert (out["text"][0, 4:] == -1).all()
    boxes = np.zeros((1, 32, 6), np.int16)
    boxes[0, :3] = [[0, 90, 0, 0, 10, 10], [0, 80, 1, 1, 10, 10], [0, 70, 20, 20, 30, 30]]
    kept = vm.load(EXAMPLES / "nms_post.dvmt").run({"detections": boxes})["boxes"]
    assert kept[0, :2, 1].tolist() == [90, 70] and (kept[0, 2:] == -1).all()


def _stage(text: str):
    return vm.load(parse(text))


def test_links_symbols_and_refusals():
    pre = _stage('model "p"\nsymbol M <= 4\ninput %a : [M, 3] p8\n%b = relu %a\noutput %b\n')
    main = _stage('model "m"\nsymbol N <= 9\ninput %x : [N, 3] p8\n%y = negative %x\n'
                  'output %y\n')
    chain = vm.load(main, pre=pre)                 # names differ, counts match: in order
    assert chain.symbols == {"M": 4}
    x = np.array([[1, -2, 3], [-4, 5, 6]], np.int8)
    assert chain.run({"a": x})["y"].tolist() == [[-1, 0, -3], [0, -5, -6]]
    wide = _stage('model "w"\nsymbol N <= 4\ninput %a : [N, 3] p9\n%b = relu %a\noutput %b\n')
    with pytest.raises(InvalidError, match="p9 does not fit main input 'x' p8"):
        vm.load(main, pre=wide)
    fixed = _stage('model "f"\ninput %a : [1, 3] p8\n%b = relu %a\noutput %b\n')
    with pytest.raises(InvalidError, match=r"does not fit main input 'x' \[N, 3\]"):
        vm.load(main, pre=fixed)
    two = _stage('model "t"\nsymbol N <= 4\ninput %a : [N, 3] p8\n%b = relu %a\n'
                 '%c = relu %b\noutput %b, %c\n')
    with pytest.raises(InvalidError, match="the names or the counts must match"):
        vm.load(main, pre=two)
    with pytest.raises(InvalidError, match="pre/post stage is one model"):
        vm.load(main, pre=b"PK\3\4 not really")
