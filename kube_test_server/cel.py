"""A small CEL evaluator for the ``x-kubernetes-validations`` rules of a CRD.

It is honest about its subset: ``compile`` refuses, with ``UnsupportedRule``, every construct it does
not evaluate (bytes and uint literals, optional syntax, message construction, functions outside the
list below), so a rule is never passed because this evaluator misread it. What it supports follows
cel-go as kube-apiserver runs it, error texts included (``no such key: x``, ``integer overflow``):

- literals: int (int64), double, string (quotes, triple quotes, raw, every escape), bool, null,
  lists ``[...]`` and maps ``{k: v}``;
- identifiers ``self`` and ``oldSelf`` (or the names given to ``compile``), field selection ``a.b``
  (Kubernetes' escaped names such as ``__dash__`` included), index ``a[0]`` and ``a['k']``;
- ``has(a.b)``; ``+ - * / %``; ``== != < <= > >=``; ``in``; ``&& || !`` with CEL's error-absorbing
  short circuit; ``c ? a : b``;
- ``size``, ``startsWith``, ``endsWith``, ``contains``, ``matches``, ``int``, ``double``, ``string``,
  ``bool``, ``dyn``; the macros ``all``, ``exists``, ``exists_one``, ``map`` (2 and 3 arguments) and
  ``filter`` over lists and map keys.

There is no type checker: where cel-go refuses a rule at CRD creation for its types (``1 + 'a'``,
``self.x == 1.0`` on an integer field), this evaluator fails the rule when it runs instead.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

__all__ = [
    "CelError",
    "CelEvalError",
    "CelSyntaxError",
    "Program",
    "UnsupportedRule",
    "compile",
    "format_double",
    "translate_re2",
]

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1


class CelError(Exception):
    """Any error of this module; ``position`` is the offset in the expression, when one applies."""

    def __init__(self, message: str, position: int | None = None, source: str = "") -> None:
        self.message = message
        self.position = position
        self.source = source
        super().__init__(self._render())

    def _render(self) -> str:
        if self.position is None:
            return self.message
        line = self.source.count("\n", 0, self.position) + 1
        column = self.position - (self.source.rfind("\n", 0, self.position) + 1) + 1
        return f"<input>:{line}:{column}: {self.message}"


class CelSyntaxError(CelError):
    """A rule that kube-apiserver would refuse too: bad syntax, an undeclared name, a wrong arity."""


class UnsupportedRule(CelError):
    """A rule that is valid CEL but uses something this evaluator does not implement."""


class CelEvalError(CelError):
    """An evaluation error, worded as cel-go words it (``no such key: minReplicas``)."""


# --- tokens ------------------------------------------------------------------------------------

_RESERVED = frozenset(
    {
        "as", "break", "const", "continue", "else", "for", "function", "if", "import", "let", "loop",
        "package", "namespace", "return", "var", "void", "while",
    }
)  # fmt: skip
_KEYWORDS = frozenset({"true", "false", "null", "in"})
_HEX_INT = re.compile(r"0[xX][0-9a-fA-F]+[uU]?")
_FLOAT = re.compile(r"(?:\d+\.\d+(?:[eE][+-]?\d+)?|\d+[eE][+-]?\d+|\.\d+(?:[eE][+-]?\d+)?)")
_DEC_INT = re.compile(r"\d+[uU]?")
_IDENT = re.compile(r"[_a-zA-Z][_a-zA-Z0-9]*")
_STRING_START = re.compile(r"([rRbB]{0,2})(\"\"\"|'''|\"|')")
_TWO_CHAR_OPS = ("==", "!=", "<=", ">=", "&&", "||")
_ONE_CHAR_OPS = frozenset("+-*/%!<>?:.,[](){}")
_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    "'": "'",
    '"': '"',
    "`": "`",
    "?": "?",
}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # "int", "double", "string", "ident", "op", "eof"
    value: Any
    pos: int


def _tokenize(src: str) -> list[_Tok]:
    toks: list[_Tok] = []
    i, n = 0, len(src)
    while i < n:
        ch = src[i]
        if ch in " \t\n\r\f":
            i += 1
            continue
        if src.startswith("//", i):
            end = src.find("\n", i)
            i = n if end < 0 else end + 1
            continue
        string = _STRING_START.match(src, i)
        if string is not None and len(set(string.group(1).lower())) == len(string.group(1)):
            prefix, quote = string.group(1).lower(), string.group(2)
            if "b" in prefix:
                raise UnsupportedRule("bytes literals are not supported", i, src)
            value, i = _read_string(src, string.end(), quote, raw="r" in prefix, start=i)
            toks.append(_Tok("string", value, string.start()))
            continue
        if ch.isdigit() or (ch == "." and i + 1 < n and src[i + 1].isdigit()):
            toks.append(_read_number(src, i))
            i += len(toks[-1].value[1])
            continue
        ident = _IDENT.match(src, i)
        if ident:
            word = ident.group()
            if word in _KEYWORDS:
                toks.append(_Tok("op" if word == "in" else "kw", word, i))
            else:
                toks.append(_Tok("ident", word, i))
            i = ident.end()
            continue
        two = src[i : i + 2]
        if two in _TWO_CHAR_OPS:
            toks.append(_Tok("op", two, i))
            i += 2
            continue
        if ch in _ONE_CHAR_OPS:
            toks.append(_Tok("op", ch, i))
            i += 1
            continue
        raise CelSyntaxError(f"Syntax error: token recognition error at: {ch!r}", i, src)
    toks.append(_Tok("eof", None, n))
    return toks


def _read_number(src: str, i: int) -> _Tok:
    """A number token; ``value`` is ``(parsed, text)`` so the parser can fold a leading minus."""
    for pattern, kind in ((_HEX_INT, "int"), (_FLOAT, "double"), (_DEC_INT, "int")):
        m = pattern.match(src, i)
        if m is None:
            continue
        text = m.group()
        if kind == "double":
            return _Tok("double", (float(text), text), i)
        if text[-1] in "uU":
            raise UnsupportedRule("unsigned integer literals are not supported", i, src)
        return _Tok("int", (int(text, 16) if text[:2].lower() == "0x" else int(text), text), i)
    raise CelSyntaxError("Syntax error: bad number", i, src)  # pragma: no cover - the caller saw a digit


def _read_string(src: str, i: int, quote: str, raw: bool, start: int) -> tuple[str, int]:
    out: list[str] = []
    n = len(src)
    multiline = len(quote) == 3
    while True:
        if i >= n:
            raise CelSyntaxError("Syntax error: unterminated string literal", start, src)
        if src.startswith(quote, i):
            return "".join(out), i + len(quote)
        ch = src[i]
        if ch in "\r\n" and not multiline:
            raise CelSyntaxError("Syntax error: newline in string literal", i, src)
        if ch != "\\" or raw:
            out.append(ch)
            i += 1
            continue
        esc = src[i + 1] if i + 1 < n else ""
        if esc in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[esc])
            i += 2
        elif esc in "xX" and esc:
            out.append(_hex_escape(src, i, 2))
            i += 4
        elif esc == "u":
            out.append(_hex_escape(src, i, 4))
            i += 6
        elif esc == "U":
            out.append(_hex_escape(src, i, 8))
            i += 10
        elif esc and esc in "0123" and re.fullmatch(r"[0-7]{2}", src[i + 2 : i + 4]):
            out.append(chr(int(src[i + 1 : i + 4], 8)))
            i += 4
        else:
            raise CelSyntaxError(f"Syntax error: invalid escape sequence '\\{esc}'", i, src)


def _hex_escape(src: str, i: int, digits: int) -> str:
    text = src[i + 2 : i + 2 + digits]
    if not re.fullmatch(rf"[0-9a-fA-F]{{{digits}}}", text):
        raise CelSyntaxError("Syntax error: invalid escape sequence", i, src)
    code = int(text, 16)
    if 0xD800 <= code <= 0xDFFF or code > 0x10FFFF:
        raise CelSyntaxError("Syntax error: invalid unicode code point", i, src)
    return chr(code)


# --- syntax tree -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Lit:
    pos: int
    value: Any


@dataclass(frozen=True, slots=True)
class _Ident:
    pos: int
    name: str


@dataclass(frozen=True, slots=True)
class _Select:
    pos: int
    operand: _Node
    field: str


@dataclass(frozen=True, slots=True)
class _Has:
    pos: int
    operand: _Node
    field: str


@dataclass(frozen=True, slots=True)
class _Index:
    pos: int
    operand: _Node
    index: _Node


@dataclass(frozen=True, slots=True)
class _Call:
    pos: int
    name: str
    target: _Node | None
    args: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _ListLit:
    pos: int
    items: tuple[_Node, ...]


@dataclass(frozen=True, slots=True)
class _MapLit:
    pos: int
    entries: tuple[tuple[_Node, _Node], ...]


@dataclass(frozen=True, slots=True)
class _Unary:
    pos: int
    op: str
    operand: _Node


@dataclass(frozen=True, slots=True)
class _Binary:
    pos: int
    op: str
    left: _Node
    right: _Node


@dataclass(frozen=True, slots=True)
class _Cond:
    pos: int
    cond: _Node
    then: _Node
    other: _Node


@dataclass(frozen=True, slots=True)
class _Comprehension:
    pos: int
    macro: str  # all, exists, exists_one, filter, map
    target: _Node
    var: str
    pred: _Node | None  # the filter of map/3, the predicate of the others
    transform: _Node | None  # map only


_Node = (
    _Lit
    | _Ident
    | _Select
    | _Has
    | _Index
    | _Call
    | _ListLit
    | _MapLit
    | _Unary
    | _Binary
    | _Cond
    | _Comprehension
)

# Functions this evaluator implements, by name, with the argument counts CEL defines for them.
_GLOBAL_FUNCTIONS: dict[str, frozenset[int]] = {
    "size": frozenset({1}),
    "int": frozenset({1}),
    "double": frozenset({1}),
    "string": frozenset({1}),
    "bool": frozenset({1}),
    "dyn": frozenset({1}),
    "matches": frozenset({2}),
}
_METHODS: dict[str, frozenset[int]] = {
    "size": frozenset({0}),
    "startsWith": frozenset({1}),
    "endsWith": frozenset({1}),
    "contains": frozenset({1}),
    "matches": frozenset({1}),
}
_MACROS = {"all": 2, "exists": 2, "exists_one": 2, "filter": 2, "map": 2}


class _Parser:
    def __init__(self, src: str) -> None:
        self.src = src
        self.toks = _tokenize(src)
        self.i = 0

    def peek(self, ahead: int = 0) -> _Tok:
        return self.toks[min(self.i + ahead, len(self.toks) - 1)]

    def at(self, value: str) -> bool:
        tok = self.peek()
        return tok.kind == "op" and tok.value == value

    def take(self) -> _Tok:
        tok = self.toks[self.i]
        self.i = min(self.i + 1, len(self.toks) - 1)
        return tok

    def expect(self, value: str) -> _Tok:
        tok = self.peek()
        if not self.at(value):
            raise self.error(f"Syntax error: expected {value!r}, got {_describe(tok)}", tok.pos)
        return self.take()

    def error(self, message: str, pos: int) -> CelSyntaxError:
        return CelSyntaxError(message, pos, self.src)

    def unsupported(self, message: str, pos: int) -> UnsupportedRule:
        return UnsupportedRule(message, pos, self.src)

    def parse(self) -> _Node:
        node = self.expr()
        tok = self.peek()
        if tok.kind != "eof":
            raise self.error(f"Syntax error: unexpected {_describe(tok)}", tok.pos)
        return node

    def expr(self) -> _Node:
        cond = self.or_()
        if not self.at("?"):
            return cond
        pos = self.take().pos
        then = self.or_()
        self.expect(":")
        return _Cond(pos, cond, then, self.expr())

    def binary(self, operators: tuple[str, ...], operand: Callable[[], _Node]) -> _Node:
        """A left-associative run of ``operand`` joined by any of ``operators``."""
        node = operand()
        while self.peek().kind == "op" and self.peek().value in operators:
            tok = self.take()
            node = _Binary(tok.pos, tok.value, node, operand())
        return node

    def or_(self) -> _Node:
        return self.binary(("||",), self.and_)

    def and_(self) -> _Node:
        return self.binary(("&&",), self.relation)

    def relation(self) -> _Node:
        return self.binary(("==", "!=", "<", "<=", ">", ">=", "in"), self.calc)

    def calc(self) -> _Node:
        return self.binary(("+", "-"), self.product)

    def product(self) -> _Node:
        return self.binary(("*", "/", "%"), self.unary)

    def unary(self) -> _Node:
        if self.at("!"):
            pos = self.take().pos
            return _Unary(pos, "!", self.unary())
        if self.at("-"):
            pos = self.take().pos
            nxt = self.peek()
            # CEL's grammar reads a minus right before a number as part of the literal, which is how
            # -9223372036854775808 is written at all.
            if nxt.kind in ("int", "double"):
                self.take()
                return self.member(self.number(nxt, negative=True, pos=pos))
            return _Unary(pos, "-", self.unary())
        return self.member(self.primary())

    def number(self, tok: _Tok, negative: bool, pos: int) -> _Lit:
        value, _text = tok.value
        if negative:
            value = -value
        if tok.kind == "int" and not INT64_MIN <= value <= INT64_MAX:
            raise self.error("Syntax error: invalid int literal", pos)
        return _Lit(pos, value)

    def member(self, node: _Node) -> _Node:
        while True:
            if self.at("."):
                dot = self.take()
                if self.at("?"):
                    raise self.unsupported("optional field selection '.?' is not supported", dot.pos)
                name_tok = self.peek()
                if name_tok.kind == "ident" and name_tok.value in _RESERVED:
                    raise self.error(f"Syntax error: reserved identifier: {name_tok.value}", name_tok.pos)
                if name_tok.kind != "ident":
                    raise self.error(
                        f"Syntax error: expected a field name, got {_describe(name_tok)}", name_tok.pos
                    )
                self.take()
                if self.at("("):
                    args = self.call_args()
                    node = self.method(node, name_tok, args)
                else:
                    node = _Select(name_tok.pos, node, name_tok.value)
            elif self.at("["):
                bracket = self.take()
                if self.at("?"):
                    raise self.unsupported("optional index '[?' is not supported", bracket.pos)
                index = self.expr()
                self.expect("]")
                node = _Index(bracket.pos, node, index)
            elif self.at("{"):
                raise self.unsupported("message construction is not supported", self.peek().pos)
            else:
                return node

    def call_args(self) -> tuple[_Node, ...]:
        self.expect("(")
        args: list[_Node] = []
        if not self.at(")"):
            args.append(self.expr())
            while self.at(","):
                self.take()
                args.append(self.expr())
        self.expect(")")
        return tuple(args)

    def method(self, target: _Node, name_tok: _Tok, args: tuple[_Node, ...]) -> _Node:
        name, pos = name_tok.value, name_tok.pos
        if name in _MACROS:
            if name == "map" and len(args) == 3:
                return _Comprehension(pos, name, target, self.macro_var(args[0]), args[1], args[2])
            if len(args) == 2:
                var = self.macro_var(args[0])
                if name == "map":
                    return _Comprehension(pos, name, target, var, None, args[1])
                return _Comprehension(pos, name, target, var, args[1], None)
            if len(args) == 3:
                raise self.unsupported(f"two-variable comprehension {name}() is not supported", pos)
            raise self.error(f"found no matching overload for '{name}' applied to {len(args)} arguments", pos)
        if name not in _METHODS:
            raise self.unsupported(f"function '{name}' is not supported", pos)
        if len(args) not in _METHODS[name]:
            raise self.error(f"found no matching overload for '{name}' applied to {len(args)} arguments", pos)
        return _Call(pos, name, target, args)

    def macro_var(self, node: _Node) -> str:
        if not isinstance(node, _Ident):
            raise self.error("argument must be a simple name", node.pos)
        return node.name

    def primary(self) -> _Node:
        tok = self.peek()
        if tok.kind in ("int", "double"):
            self.take()
            return self.number(tok, negative=False, pos=tok.pos)
        if tok.kind == "string":
            self.take()
            return _Lit(tok.pos, tok.value)
        if tok.kind == "kw":
            self.take()
            return _Lit(tok.pos, {"true": True, "false": False, "null": None}[tok.value])
        if self.at("."):
            self.take()  # a leading dot only says the name is not namespaced, and none is here
            tok = self.peek()
        if tok.kind == "ident":
            self.take()
            if tok.value in _RESERVED:
                raise self.error(f"Syntax error: reserved identifier: {tok.value}", tok.pos)
            if self.at("("):
                return self.global_call(tok, self.call_args())
            if self.at("{"):
                raise self.unsupported("message construction is not supported", self.peek().pos)
            return _Ident(tok.pos, tok.value)
        if self.at("("):
            self.take()
            node = self.expr()
            self.expect(")")
            return node
        if self.at("["):
            pos = self.take().pos
            items: list[_Node] = []
            while not self.at("]"):
                if self.at("?"):
                    raise self.unsupported("optional list elements are not supported", self.peek().pos)
                items.append(self.expr())
                if not self.at(","):
                    break
                self.take()
            self.expect("]")
            return _ListLit(pos, tuple(items))
        if self.at("{"):
            pos = self.take().pos
            entries: list[tuple[_Node, _Node]] = []
            while not self.at("}"):
                if self.at("?"):
                    raise self.unsupported("optional map entries are not supported", self.peek().pos)
                key = self.expr()
                self.expect(":")
                entries.append((key, self.expr()))
                if not self.at(","):
                    break
                self.take()
            self.expect("}")
            return _MapLit(pos, tuple(entries))
        raise self.error(f"Syntax error: unexpected {_describe(tok)}", tok.pos)

    def global_call(self, tok: _Tok, args: tuple[_Node, ...]) -> _Node:
        name, pos = tok.value, tok.pos
        if name == "has":
            if len(args) != 1 or not isinstance(args[0], _Select):
                raise self.error("invalid argument to has() macro", pos)
            return _Has(pos, args[0].operand, args[0].field)
        if name not in _GLOBAL_FUNCTIONS:
            raise self.unsupported(f"function '{name}' is not supported", pos)
        if len(args) not in _GLOBAL_FUNCTIONS[name]:
            raise self.error(f"found no matching overload for '{name}' applied to {len(args)} arguments", pos)
        return _Call(pos, name, None, args)


def _describe(tok: _Tok) -> str:
    if tok.kind == "eof":
        return "end of input"
    if tok.kind in ("int", "double"):
        return repr(tok.value[1])
    return repr(tok.value)


def _check(node: _Node, local: frozenset[str], declared: frozenset[str], src: str, used: set[str]) -> None:
    """Names must be declared, and a literal regular expression must compile, as cel-go checks."""
    match node:
        case _Ident(pos, name):
            if name in local:
                return
            if name not in declared:
                raise CelSyntaxError(f"undeclared reference to '{name}'", pos, src)
            used.add(name)
        case _Comprehension(_, _, target, var, pred, transform):
            _check(target, local, declared, src, used)
            for part in (pred, transform):
                if part is not None:
                    _check(part, local | {var}, declared, src, used)
        case _Call(_, "matches", target, args):
            pattern = args[-1]
            if isinstance(pattern, _Lit) and isinstance(pattern.value, str):
                try:
                    translate_re2(pattern.value)
                except ValueError as e:
                    raise UnsupportedRule(str(e), pattern.pos, src) from None
                try:
                    _regex(pattern.value)
                except CelEvalError as e:
                    raise CelSyntaxError(e.message, pattern.pos, src) from None
            for child in _children(node):
                _check(child, local, declared, src, used)
        case _:
            for child in _children(node):
                _check(child, local, declared, src, used)


def _children(node: _Node) -> Iterator[_Node]:
    match node:
        case _Select(_, operand, _) | _Has(_, operand, _) | _Unary(_, _, operand):
            yield operand
        case _Index(_, operand, index):
            yield from (operand, index)
        case _Call(_, _, target, args):
            if target is not None:
                yield target
            yield from args
        case _ListLit(_, items):
            yield from items
        case _MapLit(_, entries):
            for key, value in entries:
                yield from (key, value)
        case _Binary(_, _, left, right):
            yield from (left, right)
        case _Cond(_, cond, then, other):
            yield from (cond, then, other)
        case _Comprehension(_, _, target, _, pred, transform):
            yield target
            yield from (part for part in (pred, transform) if part is not None)
        case _:
            return


# --- programs ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Program:
    """A compiled expression; ``references`` are the declared names it uses (``oldSelf`` for a
    transition rule)."""

    source: str
    references: frozenset[str]
    _root: _Node = field(repr=False)

    @property
    def uses_old_self(self) -> bool:
        return "oldSelf" in self.references

    def evaluate(self, bindings: Mapping[str, Any]) -> Any:
        """The value of the expression; ``CelEvalError`` when it evaluates to an error."""
        return _eval(self._root, dict(bindings))


@functools.lru_cache(maxsize=2048)
def compile(expr: str, variables: tuple[str, ...] = ("self", "oldSelf")) -> Program:  # noqa: A001
    """Parse and check ``expr``; ``CelSyntaxError`` or ``UnsupportedRule`` say where it fails."""
    root = _Parser(expr).parse()
    used: set[str] = set()
    _check(root, frozenset(), frozenset(variables), expr, used)
    return Program(expr, frozenset(used), root)


# --- values ------------------------------------------------------------------------------------


def _type_name(v: Any) -> str:
    if v is None:
        return "null_type"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int):
        return "int"
    if isinstance(v, float):
        return "double"
    if isinstance(v, str):
        return "string"
    if isinstance(v, list):
        return "list"
    if isinstance(v, dict):
        return "map"
    return type(v).__name__


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _no_overload() -> CelEvalError:
    return CelEvalError("no such overload")


def _checked(v: int) -> int:
    if not INT64_MIN <= v <= INT64_MAX:
        raise CelEvalError("integer overflow")
    return v


def _equal(a: Any, b: Any) -> bool:
    """CEL's heterogeneous equality: numbers compare by value across int and double, other
    values of different types are simply unequal."""
    if _is_num(a) and _is_num(b):
        return bool(a == b)
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(_map_has(b, k) and _equal(v, _map_get(b, k)) for k, v in a.items())
    return bool(a == b)


def _map_has(m: dict[Any, Any], key: Any) -> bool:
    if isinstance(key, str) or key is None:
        return key in m
    return any(not isinstance(k, str) and _equal(k, key) for k in m)


def _map_get(m: dict[Any, Any], key: Any) -> Any:
    if isinstance(key, str):
        if key in m:
            return m[key]
    else:
        for k, v in m.items():
            if not isinstance(k, str) and _equal(k, key):
                return v
    raise CelEvalError(f"no such key: {_key_text(key)}")


def _key_text(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    if isinstance(key, float):
        return format_double(key)
    return str(key)


# Kubernetes escapes property names that are not CEL identifiers (apiserver/pkg/cel/escaping.go).
_ESCAPE_PART = re.compile(r"__|[-./]|[^a-zA-Z0-9_]")
_ESCAPES = {"__": "__underscores__", ".": "__dot__", "-": "__dash__", "/": "__slash__"}
_CEL_RESERVED = _RESERVED | _KEYWORDS


def _escape(name: str) -> str | None:
    if not name or name[0].isdigit():
        return None
    if name in _CEL_RESERVED:
        return f"__{name}__"
    if any(m.group() not in _ESCAPES for m in _ESCAPE_PART.finditer(name)):
        return None
    return _ESCAPE_PART.sub(lambda m: _ESCAPES[m.group()], name)


def _field_key(obj: dict[str, Any], name: str) -> str | None:
    if name in obj and _escape(name) in (name, None):
        return name
    for key in obj:
        if _escape(key) == name:
            return key
    return name if name in obj else None


def _select(obj: Any, name: str) -> Any:
    if not isinstance(obj, dict):
        raise _no_overload()
    key = _field_key(obj, name)
    if key is None:
        raise CelEvalError(f"no such key: {name}")
    return obj[key]


def _index(obj: Any, index: Any) -> Any:
    if isinstance(obj, list):
        if isinstance(index, float) and index.is_integer():
            index = int(index)
        if not isinstance(index, int) or isinstance(index, bool):
            raise CelEvalError(f"unsupported index type '{_type_name(index)}' in list")
        if not 0 <= index < len(obj):
            raise CelEvalError(f"index '{index}' out of range in list size '{len(obj)}'")
        return obj[index]
    if isinstance(obj, dict):
        return _map_get(obj, index)
    raise _no_overload()


def _relational(op: str, a: Any, b: Any) -> bool:
    comparable = (_is_num(a) and _is_num(b)) or (type(a) is type(b) and isinstance(a, (str, bool)))
    if not comparable:
        raise _no_overload()
    if op == "<":
        return bool(a < b)
    if op == "<=":
        return bool(a <= b)
    if op == ">":
        return bool(a > b)
    return bool(a >= b)


def _trunc_div(a: int, b: int) -> int:
    q = abs(a) // abs(b)
    return q if (a < 0) == (b < 0) else -q


def _arith(op: str, a: Any, b: Any) -> Any:
    both_int = (
        isinstance(a, int) and isinstance(b, int) and not isinstance(a, bool) and not isinstance(b, bool)
    )
    both_double = isinstance(a, float) and isinstance(b, float)
    if op == "+":
        if both_int:
            return _checked(a + b)
        if both_double or (isinstance(a, str) and isinstance(b, str)):
            return a + b
        if isinstance(a, list) and isinstance(b, list):
            return [*a, *b]
        raise _no_overload()
    if op == "-":
        if both_int:
            return _checked(a - b)
        if both_double:
            return a - b
        raise _no_overload()
    if op == "*":
        if both_int:
            return _checked(a * b)
        if both_double:
            return a * b
        raise _no_overload()
    if op == "/":
        if both_int:
            if b == 0:
                raise CelEvalError("division by zero")
            return _checked(_trunc_div(a, b))
        if both_double:
            if b == 0.0:
                if a == 0.0 or math.isnan(a):
                    return math.nan
                return math.copysign(math.inf, a) * math.copysign(1.0, b)
            return a / b
        raise _no_overload()
    if op == "%":
        if both_int:
            if b == 0:
                raise CelEvalError("modulus by zero")
            if a == INT64_MIN and b == -1:
                raise CelEvalError("integer overflow")
            return a - b * _trunc_div(a, b)
        raise _no_overload()
    raise _no_overload()  # pragma: no cover - the parser makes no other operators


def _logical(op: str, node: _Binary, env: dict[str, Any]) -> bool:
    """``&&`` and ``||`` as CEL defines them: commutative, and an error (or a non-bool) on one side
    is absorbed when the other side decides the result (``false && error`` is false)."""
    decisive = op == "||"  # the value that decides the result on its own
    first_error: CelEvalError | None = None
    for side in (node.left, node.right):
        try:
            value = _eval(side, env)
        except CelEvalError as e:
            first_error = first_error or e
            continue
        if not isinstance(value, bool):
            first_error = first_error or _no_overload()
        elif value == decisive:
            return value
    if first_error is not None:
        raise first_error
    return not decisive


def _eval(node: _Node, env: dict[str, Any]) -> Any:
    match node:
        case _Lit(_, value):
            return value
        case _Ident(_, name):
            if name not in env:
                raise CelEvalError(f"no such attribute: {name}")
            return env[name]
        case _Select(_, operand, name):
            return _select(_eval(operand, env), name)
        case _Has(_, operand, name):
            obj = _eval(operand, env)
            if not isinstance(obj, dict):
                raise _no_overload()
            return _field_key(obj, name) is not None
        case _Index(_, operand, index):
            return _index(_eval(operand, env), _eval(index, env))
        case _ListLit(_, items):
            return [_eval(item, env) for item in items]
        case _MapLit(_, entries):
            return _map_literal(entries, env)
        case _Unary(_, "!", operand):
            value = _eval(operand, env)
            if not isinstance(value, bool):
                raise _no_overload()
            return not value
        case _Unary(_, _, operand):
            value = _eval(operand, env)
            if isinstance(value, bool) or not _is_num(value):
                raise _no_overload()
            return _checked(-value) if isinstance(value, int) else -value
        case _Binary(_, "&&" | "||", _, _):
            return _logical(node.op, node, env)
        case _Binary(_, op, left, right):
            a, b = _eval(left, env), _eval(right, env)
            if op == "==":
                return _equal(a, b)
            if op == "!=":
                return not _equal(a, b)
            if op in ("<", "<=", ">", ">="):
                return _relational(op, a, b)
            if op == "in":
                if isinstance(b, list):
                    return any(_equal(a, item) for item in b)
                if isinstance(b, dict):
                    return _map_has(b, a)
                raise _no_overload()
            return _arith(op, a, b)
        case _Cond(_, cond, then, other):
            c = _eval(cond, env)
            if not isinstance(c, bool):
                raise _no_overload()
            return _eval(then if c else other, env)
        case _Call(_, name, target, args):
            values = [_eval(arg, env) for arg in args]
            if target is not None:
                return _METHOD_IMPLS[name](_eval(target, env), *values)
            return _GLOBAL_IMPLS[name](*values)
        case _Comprehension():
            return _comprehension(node, env)
    raise AssertionError(f"unknown node {node!r}")  # pragma: no cover


def _map_literal(entries: tuple[tuple[_Node, _Node], ...], env: dict[str, Any]) -> dict[Any, Any]:
    out: dict[Any, Any] = {}
    for key_node, value_node in entries:
        key = _eval(key_node, env)
        if not isinstance(key, (str, int)) or isinstance(key, bool):
            # A bool key would collide with 1 and 0 in a Python dict, so only string and int keys
            # are allowed here; CEL also allows bool and uint keys.
            raise CelEvalError(f"unsupported key type '{_type_name(key)}' in a map literal")
        if key in out:
            raise CelEvalError(f"Failed with repeated key: {key}")
        out[key] = _eval(value_node, env)
    return out


def _comprehension(node: _Comprehension, env: dict[str, Any]) -> Any:
    target = _eval(node.target, env)
    if isinstance(target, list):
        elements: list[Any] = list(target)
    elif isinstance(target, dict):
        elements = list(target)
    else:
        raise _no_overload()

    def run(part: _Node, element: Any) -> Any:
        return _eval(part, {**env, node.var: element})

    def predicate(element: Any) -> bool:
        assert node.pred is not None
        value = run(node.pred, element)
        if not isinstance(value, bool):
            raise _no_overload()
        return value

    if node.macro in ("all", "exists"):
        # Like && and ||, a false (true) element decides `all` (`exists`) whatever errors others raise.
        decisive = node.macro == "exists"
        first_error: CelEvalError | None = None
        for element in elements:
            try:
                if predicate(element) is decisive:
                    return decisive
            except CelEvalError as e:
                first_error = first_error or e
        if first_error is not None:
            raise first_error
        return not decisive
    if node.macro == "exists_one":
        return sum(predicate(element) for element in elements) == 1
    if node.macro == "filter":
        return [element for element in elements if predicate(element)]
    assert node.transform is not None
    transform = node.transform
    return [run(transform, element) for element in elements if node.pred is None or predicate(element)]


# --- functions ---------------------------------------------------------------------------------


def _size(v: Any) -> int:
    if isinstance(v, (str, list, dict)):
        return len(v)
    raise _no_overload()


def _string_method(impl: Callable[[str, str], bool]) -> Callable[[Any, Any], bool]:
    def call(s: Any, arg: Any) -> bool:
        if not isinstance(s, str) or not isinstance(arg, str):
            raise _no_overload()
        return impl(s, arg)

    return call


def _matches(s: Any, pattern: Any) -> bool:
    if not isinstance(s, str) or not isinstance(pattern, str):
        raise _no_overload()
    return _regex(pattern).search(s) is not None


_GO_INT = re.compile(r"[+-]?\d+")
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?|[iI][nN][fF](?:[iI][nN][iI][tT][yY])?|[nN][aA][nN])"
)
_GO_TRUE = frozenset({"1", "t", "T", "TRUE", "true", "True"})
_GO_FALSE = frozenset({"0", "f", "F", "FALSE", "false", "False"})


def _to_int(v: Any) -> int:
    if isinstance(v, bool):
        raise CelEvalError("type conversion error from 'bool' to 'int'")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if math.isnan(v) or v <= INT64_MIN or v >= INT64_MAX:
            raise CelEvalError("integer overflow")
        return int(v)
    if isinstance(v, str):
        if not _GO_INT.fullmatch(v):
            raise CelEvalError(f'strconv.ParseInt: parsing "{v}": invalid syntax')
        parsed = int(v)
        if not INT64_MIN <= parsed <= INT64_MAX:
            raise CelEvalError(f'strconv.ParseInt: parsing "{v}": value out of range')
        return parsed
    raise CelEvalError(f"type conversion error from '{_type_name(v)}' to 'int'")


def _to_double(v: Any) -> float:
    if _is_num(v):
        return float(v)
    if isinstance(v, str):
        if not _GO_FLOAT.fullmatch(v):
            raise CelEvalError(f'strconv.ParseFloat: parsing "{v}": invalid syntax')
        return float(v)
    raise CelEvalError(f"type conversion error from '{_type_name(v)}' to 'double'")


def _to_string(v: Any) -> str:
    if isinstance(v, str):
        return v
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return format_double(v)
    raise CelEvalError(f"type conversion error from '{_type_name(v)}' to 'string'")


def _to_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    if isinstance(v, str):
        if v in _GO_TRUE:
            return True
        if v in _GO_FALSE:
            return False
        raise CelEvalError(f'strconv.ParseBool: parsing "{v}": invalid syntax')
    raise CelEvalError(f"type conversion error from '{_type_name(v)}' to 'bool'")


_GLOBAL_IMPLS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "int": _to_int,
    "double": _to_double,
    "string": _to_string,
    "bool": _to_bool,
    "dyn": lambda v: v,
    "matches": _matches,
}
_METHOD_IMPLS: dict[str, Callable[..., Any]] = {
    "size": _size,
    "startsWith": _string_method(str.startswith),
    "endsWith": _string_method(str.endswith),
    "contains": _string_method(lambda s, sub: sub in s),
    "matches": _matches,
}


# --- regular expressions -------------------------------------------------------------------------

_POSIX_CLASSES = {
    "alnum": "0-9A-Za-z",
    "alpha": "A-Za-z",
    "ascii": "\\x00-\\x7F",
    "blank": "\\t ",
    "cntrl": "\\x00-\\x1F\\x7F",
    "digit": "0-9",
    "graph": "!-~",
    "lower": "a-z",
    "print": " -~",
    "punct": "!-/:-@\\[-`{-~",
    "space": "\\t\\n\\v\\f\\r ",
    "upper": "A-Z",
    "word": "0-9A-Za-z_",
    "xdigit": "0-9A-Fa-f",
}
_MULTILINE_FLAG = re.compile(r"\(\?[a-zA-Z]*m")


def translate_re2(pattern: str) -> str:
    """``pattern`` (RE2, as Go and cel-go read it) in Python's syntax; ``ValueError`` for RE2
    features with no translation here (``\\p{..}`` classes, ``\\C``, ``\\Q..\\E``, the ``U`` flag).

    The differences that matter: RE2's ``$`` (without the ``m`` flag) and ``\\z`` match only at the
    very end, where Python's ``$`` also matches before a final newline; RE2 has POSIX classes
    (``[[:alpha:]]``) and ``(?<name>..)`` groups."""
    unsupported = ValueError(f"RE2 syntax without a Python equivalent here: {pattern!r}")
    multiline = _MULTILINE_FLAG.search(pattern) is not None
    out: list[str] = []
    i, n = 0, len(pattern)
    in_class = False
    while i < n:
        ch = pattern[i]
        if ch == "\\":
            nxt = pattern[i + 1 : i + 2]
            if nxt in ("p", "P", "C", "Q", "E") or ("1" <= nxt <= "9"):
                raise unsupported
            out.append("\\Z" if nxt == "z" else pattern[i : i + 2])
            i += 2
        elif in_class:
            posix = re.match(r"\[:(\^?)([a-z]+):\]", pattern[i:])
            if posix:
                if posix.group(1) or posix.group(2) not in _POSIX_CLASSES:
                    raise unsupported
                out.append(_POSIX_CLASSES[posix.group(2)])
                i += posix.end()
                continue
            in_class = ch != "]"
            out.append("\\[" if ch == "[" else ch)  # an escaped [ spares Python's nested-set warning
            i += 1
        elif ch == "[":
            in_class = True
            out.append(ch)
            i += 1
            if pattern[i : i + 1] == "^":
                out.append("^")
                i += 1
            if pattern[i : i + 1] == "]":  # a ] first in a class is a literal
                out.append("\\]")
                i += 1
        elif ch == "$" and not multiline:
            out.append("\\Z")
            i += 1
        elif pattern.startswith("(?", i) and re.match(r"\(\?[a-zA-Z-]*U", pattern[i:]):
            raise unsupported
        elif pattern.startswith("(?<", i) and pattern[i + 3 : i + 4] not in ("=", "!"):
            out.append("(?P<")
            i += 3
        else:
            out.append(ch)
            i += 1
    return "".join(out)


@functools.lru_cache(maxsize=512)
def _regex(pattern: str) -> re.Pattern[str]:
    try:
        # RE2's \d, \w, \s and \b are ASCII-only.
        return re.compile(translate_re2(pattern), re.ASCII)
    except (ValueError, re.error) as e:
        raise CelEvalError(f"error parsing regexp: {e}") from None


# --- Go's formatting of a double -----------------------------------------------------------------


def format_double(v: float) -> str:
    """A double as Go's ``%v`` and ``strconv.FormatFloat(v, 'g', -1, 64)`` print it (``1e+06``,
    ``0.5``), which is how cel-go's ``string()`` and Kubernetes' error messages show one."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if v == 0:
        return "-0" if math.copysign(1.0, v) < 0 else "0"
    sign, digit_tuple, exponent = Decimal(repr(v)).as_tuple()
    assert isinstance(exponent, int)
    digits = "".join(map(str, digit_tuple)).rstrip("0") or "0"
    point = len(digit_tuple) + exponent  # the value is 0.<digits> * 10**point
    sci = point - 1
    prefix = "-" if sign else ""
    if sci < -4 or sci >= 6:
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{prefix}{mantissa}e{'-' if sci < 0 else '+'}{abs(sci):02d}"
    if point <= 0:
        return f"{prefix}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return prefix + digits + "0" * (point - len(digits))
    return f"{prefix}{digits[:point]}.{digits[point:]}"
