"""A strict grammar for the symbolic-shape expressions in a ``.pt2`` archive's JSON, checked before torch.

``torch.export.load`` hands every ``expr_str`` to ``sympy.sympify``, which evaluates Python: a crafted
expression runs code. So every ``expr_str`` anywhere in the archive's JSON must parse as::

    expr   := term (('+' | '-') term)*
    term   := unary (('*' | '//' | '%') unary)*
    unary  := '-' unary | atom
    atom   := INT | NAME | '(' expr ')' | FUNC '(' expr (',' expr)* ')' | 'Symbol' '(' QUOTED_NAME ... ')'
    FUNC   := Add | Mul | Integer | Mod | Max | Min | FloorDiv | CeilDiv  (torch writes sympy's srepr form)
    NAME   := a lower-case shape symbol such as s0, s77, u3 (letters, digits, underscore; no dunder)

with bounded length, integer size and nesting; anything else is refused with the offending text cut
short. A hand-written tokenizer and recursive-descent parser, because Python's ``ast`` accepts far
more than this and sympy's parser is what we are protecting.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from typing import Any

from optim.errors import MalformedModelError

MAX_EXPR_CHARS = 2000
MAX_DEPTH = 40
MAX_INT_DIGITS = 19
MAX_EXPRESSIONS = 200_000
FUNCS = {"Add", "Mul", "Integer", "Mod", "Max", "Min", "FloorDiv", "CeilDiv"}  # srepr forms of + * // too
_TOKEN = re.compile(r"\s*(?:(\d+)|([A-Za-z_][A-Za-z0-9_]*)|('[A-Za-z_][A-Za-z0-9_]*')|(//|[-+*%(),=]))")
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_SYMBOL_KWARGS = {"integer", "positive", "nonnegative"}


class ExpressionRefused(ValueError):
    """An expression outside the grammar (message says where)."""


class UnsafeExpressionError(MalformedModelError):
    """A .pt2 symbolic expression outside the grammar: refused before torch (sympy) sees it."""


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExpressionRefused(f"unexpected character {text[pos:pos + 1]!r} at {pos}")
        kind = "int" if m.group(1) else "name" if m.group(2) else "quoted" if m.group(3) else "op"
        out.append((kind, m.group(m.lastindex or 0)))
        pos = m.end()
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.t = tokens
        self.i = 0

    def peek(self) -> tuple[str, str]:
        return self.t[self.i] if self.i < len(self.t) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        tok = self.peek()
        if value is not None and tok[1] != value:
            raise ExpressionRefused(f"expected {value!r}, found {tok[1] or 'the end'!r}")
        self.i += 1
        return tok

    def expr(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise ExpressionRefused("nested too deeply")
        self.term(depth)
        while self.peek()[1] in ("+", "-"):
            self.take()
            self.term(depth)

    def term(self, depth: int) -> None:
        self.unary(depth)
        while self.peek()[1] in ("*", "//", "%"):
            self.take()
            self.unary(depth)

    def unary(self, depth: int) -> None:
        if self.peek()[1] == "-":
            self.take()
            self.unary(depth + 1)
            return
        self.atom(depth)

    def atom(self, depth: int) -> None:
        kind, value = self.take()
        if kind == "int":
            if len(value) > MAX_INT_DIGITS:
                raise ExpressionRefused(f"integer with {len(value)} digits")
            return
        if value == "(":
            self.expr(depth + 1)
            self.take(")")
            return
        if kind != "name":
            raise ExpressionRefused(f"unexpected {value or 'end'!r}")
        if value == "Symbol":
            self.symbol()
        elif value in FUNCS:
            self.take("(")
            self.expr(depth + 1)
            while self.peek()[1] == ",":
                self.take()
                self.expr(depth + 1)
            self.take(")")
        elif not _NAME.match(value) or value.startswith("__") or self.peek()[1] == "(":
            raise ExpressionRefused(f"name {value[:40]!r} is not a shape symbol")

    def symbol(self) -> None:
        self.take("(")
        kind, name = self.take()
        if kind != "quoted" or not _NAME.match(name.strip("'")):
            raise ExpressionRefused("Symbol() needs a quoted shape-symbol name")
        while self.peek()[1] == ",":
            self.take()
            kw, flag = self.take()
            self.take("=")
            if kw != "name" or flag not in _SYMBOL_KWARGS or self.take()[1] not in ("True", "False"):
                raise ExpressionRefused("Symbol() accepts only integer/positive/nonnegative=True|False")
        self.take(")")


def check_expression(text: str) -> None:
    """Raise ExpressionRefused unless ``text`` is in the grammar above."""
    if not isinstance(text, str) or not text.strip():
        raise ExpressionRefused("empty or not text")
    if len(text) > MAX_EXPR_CHARS:
        raise ExpressionRefused(f"{len(text)} characters long")
    parser = _Parser(_tokens(text))
    parser.expr(0)
    if parser.peek()[0] != "end":
        raise ExpressionRefused(f"unexpected {parser.peek()[1]!r} after the expression")


def _expressions(doc: Any) -> Iterator[Any]:
    """Every value under an ``expr_str`` key, walked without recursion."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for k, v in node.items():
                if k == "expr_str":
                    yield v
                else:
                    stack.append(v)
        elif isinstance(node, list):
            stack.extend(node)


def check_pt2_expressions(zf: zipfile.ZipFile, max_bytes: int) -> int:
    """Check every symbolic expression in every JSON member of a .pt2 archive; returns how many."""
    count = 0
    for info in zf.infolist():
        if not info.filename.endswith(".json") or info.is_dir():
            continue
        if info.file_size > max_bytes:
            raise MalformedModelError(f"{info.filename[:100]} in the .pt2 is too large ({info.file_size:,} bytes).")
        try:
            with zf.open(info) as fh:
                doc = json.loads(fh.read(max_bytes + 1))
        except (ValueError, RecursionError) as exc:
            raise MalformedModelError(f"{info.filename[:100]} in the .pt2 is not valid JSON "
                                      f"({str(exc)[:120]}). Export the program again.") from exc
        for expr in _expressions(doc):
            count += 1
            if count > MAX_EXPRESSIONS:
                raise MalformedModelError(f"The .pt2 holds more than {MAX_EXPRESSIONS:,} symbolic expressions.")
            try:
                check_expression(expr)
            except ExpressionRefused as why:
                shown = str(expr)[:80] + ("..." if len(str(expr)) > 80 else "")
                raise UnsafeExpressionError(
                    f"The .pt2 holds a symbolic shape expression we do not evaluate ({why}): {shown!r}. Shape "
                    "expressions may only combine symbols and integers with + - * // Mod Max Min. Export the "
                    "model to ONNX yourself (torch.onnx.export) and upload the .onnx.") from None
    return count
