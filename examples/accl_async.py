"""MemryX's AsyncAccl and MultiStreamAsyncAccl examples, ported to detvm (vm.accl): a data
source callback feeds frames, an output callback receives them in order; two workers
pipeline the runs. The shipped digits CNN plays the part of the compiled model.

    python examples/accl_async.py
"""
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # run from a checkout
import vm  # noqa: E402
from vm.accl import AsyncAccl, MultiStreamAsyncAccl  # noqa: E402

MODELS = Path(__file__).resolve().parents[1] / "vm" / "models"
model = vm.load(MODELS / "digits.dvm")
images = np.load(MODELS / "digits_inputs.npz")["image"]
rng = np.random.default_rng(0)


# -- AsyncAccl: one stream --------------------------------------------------------------------
def data_source():
    for _ in range(10):
        noise = rng.integers(-8, 9, images.shape)
        yield np.clip(images.astype(np.int64) + noise, -128, 127).astype(np.int8)


frames = data_source()
predictions = []


def output_processor(*outputs):
    predictions.append(outputs[0].argmax(axis=1).tolist())


accl = AsyncAccl(model, stream_workers=2)
accl.connect_input(lambda: next(frames, None))   # None ends the stream
accl.connect_output(output_processor)
accl.wait()
print(f"AsyncAccl: {len(predictions)} frames, first predictions {predictions[0]}")


# -- MultiStreamAsyncAccl: two streams, outputs routed by stream index ------------------------
class Application:
    def __init__(self):
        self.streams = [[images[k:k + 1].repeat(8, axis=0) for k in range(4)],
                        [images[k + 4:k + 5].repeat(8, axis=0) for k in range(4)]]
        self.streams_idx = [0, 0]
        self.outputs = [[], []]

    def data_source(self, stream_idx):
        if self.streams_idx[stream_idx] == len(self.streams[stream_idx]):
            return None
        self.streams_idx[stream_idx] += 1
        return self.streams[stream_idx][self.streams_idx[stream_idx] - 1]

    def output_processor(self, stream_idx, *outputs):
        self.outputs[stream_idx].append(int(outputs[0][0].argmax()))


app = Application()
accl = MultiStreamAsyncAccl(model, stream_workers=2)
accl.connect_streams(app.data_source, app.output_processor, 2)
accl.wait()
print("MultiStreamAsyncAccl: stream 0", app.outputs[0], "stream 1", app.outputs[1])
sequential = [[int(model.run({"image": f})["logits"][0].argmax()) for f in s] for s in app.streams]
assert app.outputs == sequential
print("identical to sequential runs: True")
