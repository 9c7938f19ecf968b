"""Front-ends that build :class:`vm.program.Program`: the Builder and detvm assembly (.dvmt)."""
from vm import plugins

from .builder import Builder
from .disasm import disassemble
from .text import parse

compile_text = parse
plugins.register("loaders", "dvmt", parse)     # vm.load("model.dvmt") (vm/plugins.py)

__all__ = ["Builder", "parse", "compile_text", "disassemble"]
