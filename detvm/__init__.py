"""The ``detvm`` command line, on top of every other layer (vm, compiler, verify).

``python -m detvm COMMAND ...`` or the ``detvm`` script; the Python API is ``vm``.
"""
