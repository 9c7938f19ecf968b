"""Parser of detvm assembly (``.dvmt``): text -> :class:`vm.program.Program`.

The grammar is ``assembly.lark`` (LALR). The tree is walked statement by statement, driving a
:class:`compiler.builder.Builder`, so every check of the Builder applies with a line number:

* syntax errors -> MalformedError("line L, column C: expected ..., found ...");
* unknown op -> MalformedError; every other semantic error (undefined or duplicate name, type
  mismatch, rule failure) -> InvalidError("line L: ... at column C in `<source line>`").

Tensor ids come out in the order of first declaration (inputs, constants, op results).
"""
from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

import numpy as np
from lark import Lark, Token, Tree
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.lexer import PatternStr

import ops
from vm.errors import DetvmError, InvalidError, MalformedError
from vm.program import Program

from .builder import Builder

_TERMS = {"VAR": "a %name", "CONST": "an @name", "NAME": "a name",
          "INT": "an integer", "PREC": "a precision (p8)", "STRING": 'a "string"',
          "CONST_VALUES": "a list of integers [1, -2, ...]", "_NL": "end of line",
          "$END": "end of file"}
_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t"}
_MAX_DIGITS = 40
_MAX_QUOTE = 100
_INT = re.compile(r"\s*-?[0-9]+\s*")
_ESCAPE_HELP = r'\" \\ \n \t \u{hex}'


class _Lines:
    """Post-lexer: drop newlines inside brackets, merge repeated ones, end with one."""

    always_accept = ("_NL",)

    def process(self, stream):
        depth, last = 0, None
        for tok in stream:
            if tok.type == "_NL":
                if depth or last is None or last.type == "_NL":
                    continue
            elif tok.type in ("LSQB", "LBRACE"):
                depth += 1
            elif tok.type in ("RSQB", "RBRACE"):
                depth = max(0, depth - 1)
            last = tok
            yield tok
        if last is not None and last.type != "_NL":
            yield Token("_NL", "", start_pos=last.end_pos, line=last.end_line,
                        column=last.end_column, end_line=last.end_line,
                        end_column=last.end_column, end_pos=last.end_pos)


@lru_cache(maxsize=1)
def _parser() -> Lark:
    grammar = (Path(__file__).with_name("assembly.lark")).read_text()
    return Lark(grammar, parser="lalr", lexer="contextual", postlex=_Lines(),
                maybe_placeholders=False, propagate_positions=False)


def parse(text: str) -> Program:
    """Parse detvm assembly into a validated Program."""
    if not isinstance(text, str):
        raise MalformedError(f"assembly must be a str, got {type(text).__name__}")
    return _Walker(text).run(_tree(text))


def _tree(text: str) -> Tree:
    try:
        return _parser().parse(text)
    except UnexpectedInput as e:
        raise MalformedError(_syntax_message(e, text)) from None
    except LarkError as e:  # defensive: any other lark failure is still a malformed text
        raise MalformedError(f"cannot parse: {e}") from None


def _syntax_message(e: UnexpectedInput, text: str) -> str:
    line, col = getattr(e, "line", -1), getattr(e, "column", -1)
    if line is None or line < 1:
        line, col = text.count("\n") + 1, len(text) - text.rfind("\n")
    expected = _expected(e) or getattr(e, "allowed", None) or getattr(e, "expected", ())
    if isinstance(e, UnexpectedCharacters):
        found = f"character {e.char!r}"
    elif isinstance(e, UnexpectedToken):
        tok = e.token
        found = _TERMS.get(tok.type) if tok.type in ("_NL", "$END") else repr(str(tok))
    else:
        found = "end of file"
    if "CONST_VALUES" in expected:
        found = "a malformed list (only integers, commas and comments)"
    elif isinstance(e, UnexpectedCharacters) and e.char in '%@"':
        what = "string" if e.char == '"' else "name"
        found = f"a malformed {what} (escapes: {_ESCAPE_HELP})"
    names = sorted({_describe(t) for t in expected or ()})
    want = f"expected {' or '.join(names)}, " if names else ""
    return f"line {line}, column {col}: {want}found {found}"


def _expected(e: UnexpectedInput) -> set[str]:
    """Terminals the parser accepts where it failed (the contextual lexer's set is wider)."""
    state = getattr(e, "state", None)
    try:
        if isinstance(state, int):
            table = _parser().parser.parser.parser.parse_table.states[state]
        else:
            table = state.parse_conf.parse_table.states[state.position]
    except (AttributeError, KeyError):
        return set()
    names = {t.name for t in _parser().terminals} | {"$END"}
    return {k for k in table if k in names}


def _describe(term: str) -> str:
    if term in _TERMS:
        return _TERMS[term]
    for t in _parser().terminals:
        if t.name == term and isinstance(t.pattern, PatternStr):
            return f'"{t.pattern.value}"'
    return term


def unquote(tok: str) -> str:
    """The value of a STRING token (or of a quoted name without its sigil)."""
    body, out, i = tok[1:-1], [], 0
    while i < len(body):
        ch = body[i]
        if ch != "\\":
            out.append(ch)
            i += 1
        elif body[i + 1] == "u":
            end = body.index("}", i)
            code = int(body[i + 3:end], 16)
            if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                raise ValueError(f"\\u{{{body[i + 3:end]}}} is not a character")
            out.append(chr(code))
            i = end + 1
        else:
            out.append(_ESCAPES[body[i + 1]])
            i += 2
    return "".join(out)


class _Walker:
    """Drives a Builder over the statements of a parse tree, adding positions to errors."""

    def __init__(self, text: str):
        self.lines = text.split("\n")
        self.b: Builder | None = None

    def run(self, tree: Tree) -> Program:
        for stmt in tree.children:
            getattr(self, "_" + stmt.data)(stmt.children)
        try:
            return self.b.build()
        except InvalidError as e:
            raise InvalidError(f"program {self.b.name!r}: {e.message}") from None

    def fail(self, tok: Token, message: str, cls=InvalidError):
        src = self.lines[tok.line - 1].strip() if 0 < tok.line <= len(self.lines) else ""
        src = src if len(src) <= _MAX_QUOTE else src[:_MAX_QUOTE - 3] + "..."
        raise cls(f"line {tok.line}: {message} at column {tok.column} in `{src}`")

    def guard(self, tok: Token, fn, *args):
        """Call a Builder method; its InvalidError gets the position of ``tok``."""
        try:
            return fn(*args)
        except DetvmError as e:
            self.fail(tok, e.message, type(e))

    # -- values -------------------------------------------------------------------------------
    def string(self, tok: Token) -> str:
        try:
            return unquote(str(tok))
        except ValueError as e:
            self.fail(tok, str(e), MalformedError)

    def name(self, tok: Token) -> str:
        s = str(tok)[1:]
        return self.string(Token(tok.type, s, tok.start_pos, tok.line, tok.column)) \
            if s.startswith('"') else s

    def integer(self, tok: Token) -> int:
        if len(tok.lstrip("-p")) > _MAX_DIGITS:
            self.fail(tok, f"integer {tok[:12]}... is too large")
        return int(str(tok).lstrip("p"))

    def dim(self, tok: Token):
        """An INT, or a NAME that must be a declared symbol."""
        if tok.type == "INT":
            return self.integer(tok)
        if str(tok) not in self.b.symbols:
            self.fail(tok, f"undeclared symbol {tok!s} (declare it: symbol {tok!s} <= MAX)")
        return str(tok)

    def tensor_type(self, tree: Tree) -> tuple[tuple, int]:
        *dims, prec = tree.children
        return tuple(self.dim(d) for d in dims), self.integer(prec)

    def attr_value(self, tree: Tree):
        kind, kids = tree.data, tree.children
        if kind == "int":
            return self.integer(kids[0])
        if kind == "string":
            return self.string(kids[0])
        if kind == "ints":
            return tuple(self.dim(k) for k in kids)
        return {"true": True, "false": False, "none": None}[kind]

    def const_values(self, tok: Token) -> np.ndarray:
        """The integers of a CONST_VALUES token (comments blanked, so offsets stay true)."""
        body = re.sub(r";[^\n]*", lambda m: " " * len(m.group()), str(tok)[1:-1])
        if not body.strip():
            return np.zeros(0, np.int64)
        parts = body.split(",")
        try:
            return np.array(parts, dtype=np.int64)
        except (OverflowError, ValueError):
            pass
        offset = 1
        for part in parts:
            if not _INT.fullmatch(part):
                offset += len(part) - len(part.lstrip())
                line = tok.line + str(tok)[:offset].count("\n")
                column = offset - str(tok).rfind("\n", 0, offset) + (
                    tok.column - 1 if line == tok.line else 0)
                raise MalformedError(f"line {line}, column {column}: expected an integer "
                                     f"between commas, found {part.strip()!r}")
            offset += len(part) + 1
        self.fail(tok, "a constant value is out of range")

    def ref(self, tok: Token) -> str:
        name = self.name(tok)
        if name not in self.b:
            self.fail(tok, f"undefined name {tok!s}")
        is_const = self.b.tensor(name).kind == "const"
        if is_const != (tok.type == "CONST"):
            self.fail(tok, f"{tok!s} is {'a constant' if is_const else 'not a constant'}: "
                      f"write {'@' if is_const else '%'}{tok[1:]}")
        return name

    def fresh(self, tok: Token) -> str:
        name = self.name(tok)
        if name in self.b:
            self.fail(tok, f"duplicate name {tok!s}")
        return name

    # -- statements ---------------------------------------------------------------------------
    def _model(self, kids):
        self.b = self.guard(kids[0], Builder, self.string(kids[0]))

    def _semantics(self, kids):
        self.b = self.guard(kids[0], Builder, self.b.name, self.integer(kids[0]))

    def _meta(self, kids):
        self.guard(kids[0], self.b.meta, self.string(kids[0]), self.string(kids[1]))

    def _symbol(self, kids):
        self.guard(kids[0], self.b.symbol, str(kids[0]), self.integer(kids[1]))

    def _input(self, kids):
        shape, prec = self.tensor_type(kids[1])
        self.guard(kids[0], self.b.input, self.fresh(kids[0]), shape, prec)

    def _const(self, kids):
        shape, prec = self.tensor_type(kids[1])
        name = self.fresh(kids[0])
        self.guard(kids[0], self.b.const, name, self.const_values(kids[2]), prec, shape)

    def _instr(self, kids):
        results = [k for k in kids if isinstance(k, Tree) and k.data == "result"]
        op_tok = kids[len(results)]
        operands, attrs = kids[len(results) + 1], kids[len(results) + 2:]
        op = ops.get(str(op_tok), self.b.semantics)
        if op is None:
            self.fail(op_tok, f"unknown op {op_tok!s}", MalformedError)
        names = [self.fresh(r.children[0]) for r in results]
        if len(set(names)) != len(names):
            self.fail(results[0].children[0], "the same result name twice")
        declared = [self.tensor_type(r.children[1]) if len(r.children) > 1 else None
                    for r in results]
        inputs = [self.ref(t) for t in operands.children]
        given = self.attrs(op, attrs[0].children if attrs else [])
        self.guard(op_tok, self.b.apply, str(op_tok), inputs, given, names, declared)

    def attrs(self, op, items) -> dict:
        known, given = {a.name for a in op.attrs}, {}
        for item in items:
            key = item.children[0]
            if key not in known:
                hint = f" (known: {', '.join(sorted(known))})" if known else ""
                self.fail(key, f"{op.name} has no attribute {key!s}{hint}")
            if key in given:
                self.fail(key, f"attribute {key!s} given twice")
            given[str(key)] = self.attr_value(item.children[1])
        return given

    def _output(self, kids):
        for tok in kids:
            self.guard(tok, self.b.output, self.ref(tok))
