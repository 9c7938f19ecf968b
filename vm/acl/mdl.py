"""``acl.mdl``: load models, describe their inputs and outputs by index and name, build
datasets of caller-owned buffers, execute."""
from __future__ import annotations

import itertools
import threading
from dataclasses import dataclass, field

from ..checks import expect, expect_bytes, expect_int
from ..errors import EnvironmentFault, TrapError
from ..loader import load
from ..model import Model
from ..symbolic import shape_at
from .memory import DataBuffer, read_array, view, writable, write_array
from .status import (ACL_ERROR_INVALID_FILE, ACL_ERROR_INVALID_MODEL_ID, ACL_ERROR_INVALID_PARAM,
                     ACL_ERROR_MODEL_INPUT_NOT_MATCH, ACL_ERROR_MODEL_OUTPUT_NOT_MATCH,
                     ACL_FORMAT_NCHW, ACL_FORMAT_ND, ACL_SUCCESS, DTYPES, fail, status)

_lock = threading.Lock()
_ids = itertools.count(1)
_models: dict[int, Model] = {}


@status(paired=True)
def load_from_file(path):
    """``(model_id, code)`` of a .dvm/.dvmt file, validated completely."""
    try:
        return _add(load(path))
    except EnvironmentFault as e:       # a missing or unreadable file
        e.acl_code = ACL_ERROR_INVALID_FILE
        raise


@status(paired=True)
def load_from_mem(data, size=None):
    data = expect_bytes(data, "load_from_mem data")
    return _add(load(data if size is None else data[:expect_int(size, "load_from_mem size", lo=0)]))


@status()
def unload(model_id):
    with _lock:
        model = _models.pop(model_id, None) if _is_id(model_id) else None
    if model is None:
        fail(ACL_ERROR_INVALID_MODEL_ID, f"unload: no model {model_id!r}")
    model.close()


def _add(model: Model) -> int:
    with _lock:
        model_id = next(_ids)
        _models[model_id] = model
    return model_id


def _is_id(model_id) -> bool:
    """An int, not a bool (True would name model 1)."""
    return isinstance(model_id, int) and not isinstance(model_id, bool)


def _model(model_id) -> Model:
    model = _models.get(model_id) if _is_id(model_id) else None
    if model is None:
        fail(ACL_ERROR_INVALID_MODEL_ID, f"no loaded model with id {model_id!r}")
    return model


# -- descriptions -------------------------------------------------------------------------------

@dataclass
class ModelDesc:
    """What ``get_desc`` fills in (aclmdlDesc): the model's inputs and outputs."""

    model: Model | None = None


def create_desc() -> ModelDesc:
    return ModelDesc()


def destroy_desc(desc) -> int:
    return ACL_SUCCESS


@status()
def get_desc(desc: ModelDesc, model_id):
    if not isinstance(desc, ModelDesc):
        fail(ACL_ERROR_INVALID_PARAM, "get_desc: create the description with create_desc")
    desc.model = _model(model_id)


def _infos(desc, inputs: bool):
    if not isinstance(desc, ModelDesc) or desc.model is None:
        raise TrapError("the model description is empty: call acl.mdl.get_desc first")
    return desc.model.inputs if inputs else desc.model.outputs


def _io(desc, index, inputs: bool):
    items = _infos(desc, inputs)
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < len(items):
        raise TrapError(f"{'input' if inputs else 'output'} index {index!r} out of range "
                        f"({len(items)})")
    return items[index]


def _nbytes(t, dims) -> int:
    """Bytes of tensor ``t`` for the symbol values ``dims``."""
    return t.size_for(dims) * t.dtype.itemsize


def _dims(t) -> dict:
    """A symbolic (dynamic batch) dim is -1, as pyACL writes dynamic dims."""
    return {"name": t.name, "dimCount": len(t.shape),
            "dims": [-1 if isinstance(d, str) else d for d in t.shape]}


def _index(items, name) -> tuple[int, int]:
    for k, t in enumerate(items):
        if t.name == name:
            return k, ACL_SUCCESS
    return -1, ACL_ERROR_INVALID_PARAM


def get_num_inputs(desc) -> int:
    return len(_infos(desc, True))


def get_num_outputs(desc) -> int:
    return len(_infos(desc, False))


def get_input_size_by_index(desc, index) -> int:
    """Bytes of input ``index`` (at the largest batch for a dynamic batch)."""
    return _nbytes(_io(desc, index, True), desc.model.symbols)


def get_output_size_by_index(desc, index) -> int:
    return _nbytes(_io(desc, index, False), desc.model.symbols)


def get_dynamic_batch(desc) -> tuple[dict, int]:
    """The batch sizes a model accepts: every value up to its symbol's maximum (none for a
    fixed-shape model)."""
    _infos(desc, True)
    top = min(desc.model.symbols.values(), default=0)
    return {"batchCount": top, "batch": list(range(1, top + 1))}, ACL_SUCCESS


@status()
def set_dynamic_batch_size(model_id, dataset, index, batch_size):
    """The batch the next ``execute`` on ``dataset`` runs (default: the largest): every symbol
    of the model takes this value (``index`` is accepted for pyACL's signature)."""
    model = _model(model_id)
    expect(dataset, Dataset, "set_dynamic_batch_size dataset")
    if not model.symbols:
        fail(ACL_ERROR_INVALID_PARAM, f"model {model.name!r} has a fixed batch")
    top = min(model.symbols.values())
    dataset.batch = expect_int(batch_size, "batch_size", lo=1, hi=top)


def get_input_name_by_index(desc, index) -> str:
    return _io(desc, index, True).name


def get_output_name_by_index(desc, index) -> str:
    return _io(desc, index, False).name


def get_input_index_by_name(desc, name) -> tuple[int, int]:
    return _index(_infos(desc, True), name)


def get_output_index_by_name(desc, name) -> tuple[int, int]:
    return _index(_infos(desc, False), name)


def get_input_dims(desc, index) -> tuple[dict, int]:
    return _dims(_io(desc, index, True)), ACL_SUCCESS


def get_output_dims(desc, index) -> tuple[dict, int]:
    return _dims(_io(desc, index, False)), ACL_SUCCESS


def get_input_data_type(desc, index) -> int:
    return DTYPES[_io(desc, index, True).dtype]


def get_output_data_type(desc, index) -> int:
    return DTYPES[_io(desc, index, False).dtype]


def get_input_format(desc, index) -> int:
    return ACL_FORMAT_NCHW if len(_io(desc, index, True).shape) == 4 else ACL_FORMAT_ND


def get_output_format(desc, index) -> int:
    return ACL_FORMAT_NCHW if len(_io(desc, index, False).shape) == 4 else ACL_FORMAT_ND


# -- datasets and execution -----------------------------------------------------------------------

@dataclass
class Dataset:
    """An ordered list of data buffers (aclmdlDataset)."""

    buffers: list[DataBuffer] = field(default_factory=list)
    batch: int | None = None
    """The dynamic batch of the next execute (set_dynamic_batch_size), None: the largest."""


def create_dataset() -> Dataset:
    return Dataset()


def destroy_dataset(dataset) -> int:
    return ACL_SUCCESS if isinstance(dataset, Dataset) else ACL_ERROR_INVALID_PARAM


def add_dataset_buffer(dataset: Dataset, data: DataBuffer) -> tuple[Dataset | None, int]:
    if not isinstance(dataset, Dataset) or not isinstance(data, DataBuffer):
        return None, ACL_ERROR_INVALID_PARAM
    dataset.buffers.append(data)
    return dataset, ACL_SUCCESS


def get_dataset_num_buffers(dataset: Dataset) -> int:
    return len(expect(dataset, Dataset, "get_dataset_num_buffers").buffers)


def get_dataset_buffer(dataset: Dataset, index: int) -> DataBuffer | None:
    buffers = expect(dataset, Dataset, "get_dataset_buffer").buffers
    return buffers[index] if 0 <= expect_int(index, "buffer index") < len(buffers) else None


@status()
def execute(model_id, inputs: Dataset, outputs: Dataset):
    """Run on the input buffers' bytes; write the outputs into the output buffers."""
    model = _model(model_id)
    expect(inputs, Dataset, "execute inputs")
    dims = {s: inputs.batch or n for s, n in model.symbols.items()}
    feeds = {t.name: read_array(buf, shape_at(t.shape, dims), t.dtype)
             for t, buf in _pairs(model.inputs, inputs, True, dims)}
    targets = _pairs(model.outputs, outputs, False, dims)      # checked before running
    result = model.run(feeds)
    for t, buf in targets:
        write_array(buf, result[t.name])


def _pairs(infos, dataset: Dataset, inputs: bool, dims):
    code = ACL_ERROR_MODEL_INPUT_NOT_MATCH if inputs else ACL_ERROR_MODEL_OUTPUT_NOT_MATCH
    if not isinstance(dataset, Dataset) or len(dataset.buffers) != len(infos):
        fail(code, f"the {'input' if inputs else 'output'} dataset has "
                   f"{len(getattr(dataset, 'buffers', []))} buffers, the model {len(infos)}")
    for t, buf in zip(infos, dataset.buffers):
        if buf.size < _nbytes(t, dims):
            fail(code, f"buffer for {t.name!r} holds {buf.size} bytes, needs {_nbytes(t, dims)}")
        if not inputs:                  # every output checked before any is written
            writable(view(buf.ptr), f"the output buffer for {t.name!r}")
    return list(zip(infos, dataset.buffers))
