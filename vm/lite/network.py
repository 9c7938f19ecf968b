"""MegEngine Lite's LiteNetwork: load, I/O tensors, forward (sync or async), callbacks, I/O
dumps and profiles, weight sharing."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .. import observe
from ..checks import expect, expect_path
from ..errors import TrapError
from ..loader import load
from ..model import Model
from ..symbolic import shape_at
from .types import (LiteConfig, LiteIO, LiteLayout, LiteNetworkIO, LiteTensor, LiteTensorPhase,
                    checked)


class LiteNetwork:
    """A model loaded for forwarding, with its I/O tensors."""

    def __init__(self, config: LiteConfig | None = None, io: LiteNetworkIO | None = None):
        self.config = checked(config or LiteConfig(), LiteConfig, "config")
        self.io = checked(io or LiteNetworkIO(), LiteNetworkIO, "io")
        self.model: Model | None = None
        self._owns_model = False
        """Whether ``model`` was loaded here (closed when replaced by a shared one)."""
        self._threads: int | None = None
        self._tensors: dict[tuple[str, int], LiteTensor] = {}
        self._ios: dict[str, LiteIO] = {}
        self._start = self._finish = self._async = None
        self._txt = self._bin = self._profile = None
        self._events: list[dict] = []
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._error: BaseException | None = None

    # -- loading ------------------------------------------------------------------------------
    def load(self, path_or_bytes) -> None:
        """Load and validate a .dvm/.dvmt file, its bytes, or an already loaded vm.Model."""
        mine = not isinstance(path_or_bytes, Model)
        model = load(path_or_bytes, self.config.context(), threads=self._threads) if mine \
            else path_or_bytes
        self._bind(model)
        self._owns_model = mine

    def _bind(self, model: Model) -> None:
        self.model = model
        given = {io.name: io for io in self.io.inputs + self.io.outputs}
        self._ios, self._tensors = {}, {}
        for infos, phase in ((model.inputs, LiteTensorPhase.LITE_INPUT),
                             (model.outputs, LiteTensorPhase.LITE_OUTPUT)):
            for t in infos:
                self._ios[t.name] = given.get(t.name) or LiteIO(t.name)
                shape = shape_at(t.shape, {s: 1 for s in model.symbols})   # a batch of 1
                self._tensors[(t.name, phase)] = LiteTensor(LiteLayout(shape, t.dtype), phase)

    def _model(self) -> Model:
        if self.model is None:
            raise TrapError("the network has no model: call load() first")
        return self.model

    # -- names and tensors --------------------------------------------------------------------
    def get_input_name(self, index: int) -> str:
        return _nth(self._model().inputs, index, "input")

    def get_output_name(self, index: int) -> str:
        return _nth(self._model().outputs, index, "output")

    def get_all_input_name(self) -> list[str]:
        return [t.name for t in self._model().inputs]

    def get_all_output_name(self) -> list[str]:
        return [t.name for t in self._model().outputs]

    def get_io_tensor(self, name: str, phase=LiteTensorPhase.LITE_IO) -> LiteTensor:
        """The tensor of input or output ``name`` (``phase`` separates equal names)."""
        self._model()
        expect(name, str, "get_io_tensor name")
        try:
            phase = LiteTensorPhase(phase)
        except ValueError:
            raise TrapError(f"get_io_tensor phase: {phase!r} is not a LiteTensorPhase") from None
        phases = ((LiteTensorPhase.LITE_INPUT, LiteTensorPhase.LITE_OUTPUT)
                  if phase == LiteTensorPhase.LITE_IO else (phase,))
        for p in phases:
            if (name, p) in self._tensors:
                return self._tensors[(name, p)]
        raise TrapError(f"no input or output named {name!r} (inputs: "
                        f"{', '.join(self.get_all_input_name())}; outputs: "
                        f"{', '.join(self.get_all_output_name())})")

    # -- forwarding -----------------------------------------------------------------------------
    def forward(self) -> None:
        """Run on the input tensors and fill the output tensors; in async mode
        (``async_with_callback``) return at once and run on a worker thread."""
        model = self._model()
        self.wait()
        if self._async is None:
            self._forward(model)
            return
        with self._worker_lock:             # a wait() elsewhere sees it started, or not at all
            self._worker = threading.Thread(target=self._forward_async, args=(model,),
                                            daemon=True)
            self._worker.start()

    def _forward_async(self, model: Model) -> None:
        try:
            self._forward(model)
            self._async()
        except BaseException as e:          # re-raised by wait(), in the caller's thread
            self._error = e

    def _forward(self, model: Model) -> None:
        inputs = {t.name: self._tensors[(t.name, LiteTensorPhase.LITE_INPUT)] for t in model.inputs}
        if self._start is not None:
            self._start({self._ios[n]: t for n, t in inputs.items()})
        feeds = {n: t._data for n, t in inputs.items()}
        if self._txt or self._bin or self._profile:
            outputs, records = observe.run_recorded(model, feeds)
            self._write_observations(model, records)
        else:
            outputs = model.run(feeds)
        results = {}
        for t in model.outputs:
            tensor = self._tensors[(t.name, LiteTensorPhase.LITE_OUTPUT)]
            _check_layout(self._ios[t.name], outputs[t.name])
            array = outputs[t.name]
            tensor._data, tensor.layout = array, LiteLayout(array.shape, array.dtype)
            results[self._ios[t.name]] = tensor
        if self._finish is not None:
            self._finish(results)

    def wait(self) -> None:
        """Block until an async forward has finished (and every forward its callback started);
        re-raise what it raised. From the callback it returns at once (its forward is done)."""
        me = threading.current_thread()
        while True:
            with self._worker_lock:
                worker = self._worker
            if worker is None or worker is me:
                break
            worker.join()
            with self._worker_lock:
                if self._worker is worker:  # not replaced by a forward from its callback
                    self._worker = None
        if worker is me:
            return
        error, self._error = self._error, None
        if error is not None:
            raise error

    def async_with_callback(self, async_callback: Callable[[], Any]) -> None:
        """From now on ``forward`` runs asynchronously and calls ``async_callback()`` when done."""
        self._async = _callable(async_callback, "async_with_callback")

    def set_start_callback(self, start_callback: Callable[[dict], Any]) -> None:
        """``start_callback({LiteIO: LiteTensor})`` before each forward (the inputs)."""
        self._start = _callable(start_callback, "set_start_callback")

    def set_finish_callback(self, finish_callback: Callable[[dict], Any]) -> None:
        """``finish_callback({LiteIO: LiteTensor})`` after each forward (the outputs)."""
        self._finish = _callable(finish_callback, "set_finish_callback")

    # -- debugging and profiling ----------------------------------------------------------------
    def io_txt_dump(self, txt_file) -> None:
        """Write every instruction's inputs and outputs (statistics, SHA-256, first values) to
        ``txt_file`` at each forward."""
        self._txt = expect_path(txt_file, "io_txt_dump")

    def io_bin_dump(self, bin_dir) -> None:
        """Write every instruction's inputs and outputs as .npy files (and index.json) into
        ``bin_dir`` at each forward."""
        self._bin = expect_path(bin_dir, "io_bin_dump")

    def enable_profile_performance(self, profile_file) -> None:
        """Write a per-instruction profile of every forward to ``profile_file`` as Chrome trace
        JSON (chrome://tracing, Perfetto)."""
        self._profile, self._events = expect_path(profile_file, "enable_profile_performance"), []

    def _write_observations(self, model: Model, records: list) -> None:
        if self._txt:
            observe.write_text_dump(self._txt, records)
        if self._bin:
            observe.write_binary_dump(self._bin, records)
        if self._profile:
            offset = (self._events[-1]["ts"] + self._events[-1]["dur"]) / 1e6 if self._events else 0
            self._events += observe.chrome_trace(records, offset)
            observe.write_chrome_trace(self._profile, self._events,
                                       {"model": model.hash, "name": model.name})

    # -- resources ------------------------------------------------------------------------------
    def share_weights_with(self, src_network: "LiteNetwork") -> None:
        """Use ``src_network``'s loaded model, weights included (one copy in memory for both);
        this network keeps its own I/O tensors. Both must hold the same model (hash)."""
        src = checked(src_network, LiteNetwork, "share_weights_with")._model()
        if self.model is not None and self.model.hash != src.hash:
            raise TrapError(f"share_weights_with: the networks hold different models "
                            f"({self.model.hash[:16]}... and {src.hash[:16]}...)")
        if self.model is not None and self.model is not src and self._owns_model:
            self.model.close()                  # loaded here; a caller's model stays open
        self._bind(src)
        self._owns_model = False

    def set_cpu_threads_number(self, nr_threads: int) -> None:
        """Threads for the CPU executor (results never depend on it); applies to the next load."""
        if not isinstance(nr_threads, int) or isinstance(nr_threads, bool) or nr_threads < 1:
            raise TrapError(f"set_cpu_threads_number: a positive int expected, got {nr_threads!r}")
        self._threads = nr_threads

    def enable_cpu_inplace_mode(self) -> None:
        """Forward on one CPU thread (the caller's); applies to the next load."""
        self._threads = 1

    def is_cpu_inplace_mode(self) -> bool:
        return self._threads == 1

    @property
    def threads_number(self) -> int:
        return self._threads or 1

    @property
    def device_id(self) -> int:
        return self.config.device_id

    @property
    def stream_id(self) -> int:
        return 0

    def get_static_memory_alloc_info(self, log_dir=None) -> dict:
        """The validated memory plan: peak bytes of live tensors (an upper bound of what a run
        holds), gas, and the per-tensor sizes; also written to ``log_dir``/memory.json."""
        model = self._model()
        tensors = model.program.tensors if isinstance(model, Model) else []
        info = {"peak_memory": model.peak_memory, "gas": model.gas,
                "tensors": {t.name: int(np.prod(shape_at(t.shape, model.symbols)))
                            * t.dtype.itemsize for t in tensors}}
        if log_dir is not None:
            observe.write_text(Path(log_dir) / "memory.json", json.dumps(info, indent=1) + "\n")
        return info


def _nth(infos, index, what: str) -> str:
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(infos):
        raise TrapError(f"{what} index {index!r} out of range (the model has {len(infos)} "
                        f"{what}s)")
    return infos[index].name


def _check_layout(io: LiteIO, array: np.ndarray) -> None:
    if io.layout is not None and io.layout.shapes and tuple(array.shape) != io.layout.shapes:
        raise TrapError(f"output {io.name!r}: shape {list(array.shape)} differs from the "
                        f"configured layout {list(io.layout.shapes)}")


def _callable(fn, what: str):
    if not callable(fn):
        raise TrapError(f"{what}: expected a callable, got {type(fn).__name__}")
    return fn
