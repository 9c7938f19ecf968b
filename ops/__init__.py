"""detvm's operator library: every operator declared once (:class:`ops.base.OpDef`).

Importing this package registers all ops; a missing rule is an import-time error naming the op.
``get`` and ``by_opcode`` look an op up under a semantics version (ops/semantics.py; default:
the current one): code that holds a program passes ``program.semantics``.
"""
__all__ = ["Attr", "OpDef", "OpError", "Ref", "bound", "bitlen", "number_precision",
           "REGISTRY", "all_ops", "by_opcode", "get", "semantics"]

from .base import Attr, OpDef, OpError, Ref, bound, bitlen, number_precision  # noqa: F401
from .registry import REGISTRY, all_ops  # noqa: F401
from . import semantics  # noqa: F401
from .semantics import by_opcode, get  # noqa: F401
from . import nn, elemwise, broadcast, reduce, layout, indexing, vision  # noqa: F401  (registration)
from . import quant, pool, table, resize, softmax, deconv, matmul, norm, qpool  # noqa: F401  (ops for imported models: ONNX, compiler/onnx/)
from . import post  # noqa: F401  (post-processing decoders: topk, ctc_greedy_decode)
