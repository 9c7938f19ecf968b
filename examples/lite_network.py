"""MegEngine Lite's example, ported to detvm (vm.lite): configure, load, fill the input tensor,
forward, wait, read the output tensor; then the same network asynchronously with callbacks.

    python examples/lite_network.py [MODEL.dvm]       # default: the shipped digits CNN
"""
import sys
import threading
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
from vm.lite import LiteConfig, LiteDeviceType, LiteNetwork  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "vm" / "models"
model_path = sys.argv[1] if len(sys.argv) > 1 else str(MODELS / "digits.dvm")

config = LiteConfig()
config.device_type = LiteDeviceType.LITE_CPU
network = LiteNetwork(config)
network.load(model_path)

input_name = network.get_input_name(0)
input_tensor = network.get_io_tensor(input_name)
output_name = network.get_output_name(0)
output_tensor = network.get_io_tensor(output_name)
print(f"{input_name} {list(input_tensor.shape)} -> {output_name}")

if model_path.endswith("digits.dvm"):
    input_data = np.load(MODELS / "digits_inputs.npz")[input_name]
else:
    input_data = np.zeros(input_tensor.shape, dtype=input_tensor.layout.data_type)
input_tensor.set_data_by_copy(input_data)
network.forward()
network.wait()
output = output_tensor.to_numpy()
print("sync  argmax per row:", output.reshape(output.shape[0], -1).argmax(axis=1).tolist())

# Asynchronous: forward() returns at once; the callbacks see the IO-to-tensor mapping.
done = threading.Event()
network.set_finish_callback(lambda io: print("finish callback:",
                                             {k.name: list(v.shape) for k, v in io.items()}))
network.async_with_callback(done.set)
network.forward()
network.wait()
assert done.is_set() and output_tensor.to_numpy().tobytes() == output.tobytes()
print("async output identical:", True)
