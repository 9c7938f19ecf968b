"""Load a CVM model (a directory with `symbol` and `params`) two ways: with CVM's Python API
(`vm.runtime`, bytes in and out) and with detvm's own `vm.load` (numpy in and out).

    python examples/cvm_api.py [MODEL_DIR]     # without MODEL_DIR: a small model is made
"""
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
import vm  # noqa: E402
from compiler import Builder  # noqa: E402
from compiler.cvm import export_cvm, import_cvm  # noqa: E402


def make_model(directory: Path) -> None:
    """A 1x1x6x6 int8 CNN in CVM's deploy format, as CVM's compiler would write it."""
    b = Builder("tiny")
    w = b.const("w", np.arange(-13, 14).reshape(3, 1, 3, 3) % 7 - 3, precision=8)
    y = b.conv2d(b.input("data", (1, 1, 6, 6), 8), w, channels=3, kernel_size=(3, 3),
                 use_bias=False)
    y = b.relu(b.cvm_right_shift(y, precision=8, shift_bit=4))
    b.output(b.flatten(b.max_pool2d(y, pool_size=(2, 2), strides=(2, 2))))
    symbol, params = export_cvm(b.build())
    (directory / "symbol").write_text(symbol)
    (directory / "params").write_bytes(params)


directory = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp())
if len(sys.argv) == 1:
    make_model(directory)
symbol, params = (directory / "symbol").read_text(), (directory / "params").read_bytes()

# 1. CVM's API: the same names, the same bytes (compat="cvm" would replay CVM's quirks too).
net = vm.runtime.CVMAPILoadModel(symbol, params, vm.cpu())
n_in = vm.runtime.CVMAPIGetInputLength(net)
size = vm.runtime.CVMAPIGetOutputTypeSize(net)
x = np.random.default_rng(0).integers(-127, 128, n_in).astype(np.int8)   # int8: 1-byte input
out = vm.runtime.CVMAPIInference(net, x.tobytes())
print("CVM API   :", np.frombuffer(out, "i1" if size == 1 else "<i4").tolist())
print("gas", vm.runtime.CVMAPIGetGasFromModel(net), "storage",
      vm.runtime.CVMAPIGetStorageSize(net), "version", vm.runtime.CVMAPIGetVersion(net))
vm.runtime.CVMAPIFreeModel(net)

# 2. detvm: import once (every CVM load-time check), then a validated, hashed model.
model = vm.load(import_cvm(symbol, params, name=directory.name or "cvm"))
(data,) = model.inputs
(y,) = model.run({"data": x.reshape(data.shape)}).values()
print("vm.load   :", y.reshape(-1).tolist())
print("model", model.hash[:16], "gas", model.gas)
