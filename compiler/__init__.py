"""Front-ends that build :class:`vm.program.Program`: the Builder and detvm assembly (.dvmt)."""
from .builder import Builder
from .disasm import disassemble
from .text import parse

compile_text = parse

__all__ = ["Builder", "parse", "compile_text", "disassemble"]
