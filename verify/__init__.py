"""Formal mode (Z3): encodings, proof obligations, certificates, SMT-LIB export.

The formal executor and certificates are tracked by their own issue; until they land,
``vm.formal()`` raises a clean EnvironmentFault when a model is loaded on it.
"""
