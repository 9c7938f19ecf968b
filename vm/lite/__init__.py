"""MegEngine Lite's Python API (``megenginelite``) on detvm: a thin layer over one vm.Model.

    from vm.lite import LiteConfig, LiteNetwork
    network = LiteNetwork(LiteConfig())
    network.load("model.dvm")
    network.get_io_tensor(network.get_input_name(0)).set_data_by_copy(x)
    network.forward()
    network.wait()
    y = network.get_io_tensor(network.get_output_name(0)).to_numpy()

Outputs are the model's bytes, identical on every machine; the performance options of
``LiteOptions`` are accepted and change nothing. Errors are detvm's (vm/errors.py): using a
network before ``load`` or after its model failed is a TrapError. docs/api.md maps every call.
"""
from .network import LiteNetwork
from .types import (LiteBackend, LiteConfig, LiteDeviceType, LiteIO, LiteIOType, LiteLayout,
                    LiteNetworkIO, LiteOptions, LiteTensor, LiteTensorPhase)

__all__ = ["LiteNetwork", "LiteConfig", "LiteOptions", "LiteIO", "LiteNetworkIO", "LiteTensor",
           "LiteLayout", "LiteDeviceType", "LiteBackend", "LiteIOType", "LiteTensorPhase"]
