"""Label and field selectors, parsed, matched and printed the way kube-apiserver does it.

Pure: no I/O, no clock. The shapes, and why they are these:

* :class:`LabelSelector` is a frozen value: its requirements are kept sorted by key (stably), as the real
  parser sorts them, so ``str(sel)`` is the canonical text the real server prints (``status.selector`` of a
  ``/scale`` subresource) and ``LabelSelector.parse(str(sel)) == sel``.

  - :meth:`LabelSelector.parse` reads the ``?labelSelector=`` syntax and raises :class:`ApiError` 400, because
    a bad query string is always the client's bad request.
  - :meth:`LabelSelector.from_dict` reads a ``metav1.LabelSelector`` found in an object and raises
    :class:`InvalidSelector` (a ``ValueError``): whether that is a 422 (validating a Deployment) or a 500 (a
    stored object that should never have been admitted) is for the caller to say.

* :class:`FieldSelector` remembers the resource it was parsed for, because both which fields exist and how a
  field's value is read from an object depend on it (``spec.hostNetwork`` reads ``false`` when absent,
  ``status.successful`` reads ``status.succeeded``, an event's ``source`` falls back to
  ``reportingComponent``).

* :class:`Selection` is both together, as a list or watch request carries them.

* Membership: :class:`LabelSelector`, :class:`FieldSelector` and :class:`Selection` all have
  ``matches_object(obj)`` (the :class:`ObjectMatcher` protocol). :func:`changed_membership` takes whole
  objects, not label maps, so that one signature serves a field selector too; :func:`watch_event_type` turns
  the pair into the event a filtered watch must send.

Where this knowingly differs from the real server is said at the place it happens (look for "Differs").
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Final, Literal, Protocol

from kube_test_server.errors import ApiError, go_quote

__all__ = [
    "DNS1035_LABEL",
    "DNS1123_LABEL",
    "DNS1123_SUBDOMAIN",
    "FieldSelector",
    "FieldTerm",
    "InvalidSelector",
    "LabelSelector",
    "NameFormat",
    "ObjectMatcher",
    "Operator",
    "Requirement",
    "Selection",
    "WatchEventType",
    "changed_membership",
    "escape_field_value",
    "label_key_errors",
    "label_value_errors",
    "to_string",
    "watch_event_type",
]


class InvalidSelector(ValueError):
    """A selector that cannot be built; the message is the real server's wording."""


# --- Go-compatible message helpers -------------------------------------------------------------------------


def _go_value(value: str | Sequence[str] | None) -> str:
    """How ``field.Invalid`` prints its bad value: ``%q`` for a string, ``%#v`` for a ``[]string``."""
    if isinstance(value, str):
        return go_quote(value)
    if value is None:
        return "[]string(nil)"
    return "[]string{" + ", ".join(go_quote(v) for v in value) + "}"


def _invalid(path: str, value: str | Sequence[str] | None, detail: str) -> str:
    return f"{path}: Invalid value: {_go_value(value)}: {detail}"


def _aggregate(messages: Sequence[str]) -> str:
    """``utilerrors.NewAggregate(...).Error()``: one message bare, several de-duplicated inside brackets."""
    unique = list(dict.fromkeys(messages))
    return unique[0] if len(unique) == 1 else "[" + ", ".join(unique) + "]"


def _regex_error(message: str, regex: str, *examples: str) -> str:
    # Go builds "'a',  or 'b', " with a doubled space; kubectl users grep for these exact strings.
    if not examples:
        return f"{message} (regex used for validation is '{regex}')"
    listed = " or ".join(f"'{e}', " for e in examples)
    return f"{message} (e.g. {listed}regex used for validation is '{regex}')"


def _max_len_error(length: int) -> str:
    return f"must be no more than {length} bytes"


# --- names, label keys and values (k8s.io/apimachinery/pkg/api/validate/content) ----------------------------

_NAME_FMT: Final = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_NAME_RE: Final = re.compile(_NAME_FMT)
_NAME_MSG: Final = (
    "must consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_NAME_MAX: Final = 63
_VALUE_FMT: Final = f"({_NAME_FMT})?"
_VALUE_RE: Final = re.compile(_VALUE_FMT)
_VALUE_MSG: Final = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', "
    "and must start and end with an alphanumeric character"
)
_VALUE_MAX: Final = 63


@dataclass(frozen=True)
class NameFormat:
    """A DNS name format of the ``content`` package (``IsDNS1123Label`` and friends): its pattern, the longest
    name it allows, and the message for a name that does not match, worded as the real server words it."""

    regex: re.Pattern[str]
    max_length: int
    message: str

    def matches(self, name: str) -> bool:
        return self.regex.fullmatch(name) is not None


def _name_format(regex: str, max_length: int, message: str, *examples: str) -> NameFormat:
    return NameFormat(re.compile(regex), max_length, _regex_error(message, regex, *examples))


_DNS_LABEL_FMT: Final = "[a-z0-9]([-a-z0-9]*[a-z0-9])?"
DNS1123_LABEL: Final = _name_format(
    _DNS_LABEL_FMT,
    63,
    "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
    "and must start and end with an alphanumeric character",
    "my-name",
    "123-abc",
)
DNS1123_SUBDOMAIN: Final = _name_format(
    _DNS_LABEL_FMT + r"(\." + _DNS_LABEL_FMT + ")*",
    253,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
    "and must start and end with an alphanumeric character",
    "example.com",
)
DNS1035_LABEL: Final = _name_format(
    "[a-z]([-a-z0-9]*[a-z0-9])?",
    63,
    "a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an alphabetic "
    "character, and end with an alphanumeric character",
    "my-name",
    "abc-123",
)


def _byte_len(text: str) -> int:
    # Go measures strings in bytes; a multi-byte character counts for more than one.
    return len(text.encode())


def label_key_errors(key: str) -> list[str]:
    """What is wrong with a label key (``content.IsLabelKey``); empty when it is valid.

    Also what ``metadata.labels`` keys are held to, so object validation can share it.
    """
    errors: list[str] = []
    parts = key.split("/")
    if len(parts) == 1:
        name = parts[0]
    elif len(parts) == 2:
        prefix, name = parts
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            if _byte_len(prefix) > DNS1123_SUBDOMAIN.max_length:
                errors.append("prefix part " + _max_len_error(DNS1123_SUBDOMAIN.max_length))
            if not DNS1123_SUBDOMAIN.matches(prefix):
                errors.append("prefix part " + DNS1123_SUBDOMAIN.message)
    else:
        return [
            "a valid label key "
            + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc")
            + " with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')"
        ]
    if not name:
        errors.append("name part must be non-empty")
    elif _byte_len(name) > _NAME_MAX:
        errors.append("name part " + _max_len_error(_NAME_MAX))
    if not _NAME_RE.fullmatch(name):
        errors.append("name part " + _regex_error(_NAME_MSG, _NAME_FMT, "MyName", "my.name", "123-abc"))
    return errors


def label_value_errors(value: str) -> list[str]:
    """What is wrong with a label value (``content.IsLabelValue``); empty when it is valid."""
    errors: list[str] = []
    if _byte_len(value) > _VALUE_MAX:
        errors.append(_max_len_error(_VALUE_MAX))
    if not _VALUE_RE.fullmatch(value):
        errors.append(_regex_error(_VALUE_MSG, _VALUE_FMT, "MyValue", "my_value", "12345"))
    return errors


_INT64_RE: Final = re.compile(r"[+-]?[0-9]+")
_INT64_MIN: Final = -(2**63)
_INT64_MAX: Final = 2**63 - 1


def _parse_int64(text: str) -> int | None:
    """Go's ``strconv.ParseInt(text, 10, 64)``: Python's ``int()`` would also take ``1_000`` and `` 7 ``."""
    if not _INT64_RE.fullmatch(text):
        return None
    number = int(text)
    return number if _INT64_MIN <= number <= _INT64_MAX else None


# --- label selectors ---------------------------------------------------------------------------------------


class Operator(StrEnum):
    """A requirement's operator; the values are the real ``selection.Operator`` strings."""

    IN = "in"
    NOT_IN = "notin"
    EQUALS = "="
    DOUBLE_EQUALS = "=="
    NOT_EQUALS = "!="
    EXISTS = "exists"
    DOES_NOT_EXIST = "!"
    GREATER_THAN = "gt"
    LESS_THAN = "lt"


_POSITIVE: Final = frozenset({Operator.IN, Operator.EQUALS, Operator.DOUBLE_EQUALS})
_NEGATIVE: Final = frozenset({Operator.NOT_IN, Operator.NOT_EQUALS})
_EXACT: Final = frozenset({Operator.EQUALS, Operator.DOUBLE_EQUALS, Operator.NOT_EQUALS})
_SET: Final = frozenset({Operator.IN, Operator.NOT_IN})
_UNARY: Final = frozenset({Operator.EXISTS, Operator.DOES_NOT_EXIST})
_NUMERIC: Final = frozenset({Operator.GREATER_THAN, Operator.LESS_THAN})


@dataclass(frozen=True)
class Requirement:
    """One ``key <operator> values`` term, built unchecked: ``LabelSelector.parse`` and ``from_dict`` check.

    ``values`` is kept sorted and without duplicates, as the real parser's string set keeps them, so that
    two requirements that print alike compare alike.
    """

    key: str
    operator: Operator
    values: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "values", tuple(sorted(set(self.values))))

    def matches(self, labels: Mapping[str, str]) -> bool:
        op = self.operator
        if op in _POSITIVE:
            return self.key in labels and labels[self.key] in self.values
        if op in _NEGATIVE:
            return self.key not in labels or labels[self.key] not in self.values
        if op is Operator.EXISTS:
            return self.key in labels
        if op is Operator.DOES_NOT_EXIST:
            return self.key not in labels
        # Gt/Lt: a label that is absent or not an integer never matches, as in the real server.
        if self.key not in labels or len(self.values) != 1:
            return False
        have, want = _parse_int64(labels[self.key]), _parse_int64(self.values[0])
        if have is None or want is None:
            return False
        return have > want if op is Operator.GREATER_THAN else have < want

    def __str__(self) -> str:
        op = self.operator
        if op is Operator.EXISTS:
            return self.key
        if op is Operator.DOES_NOT_EXIST:
            return "!" + self.key
        joined = ",".join(self.values)
        if op in _SET:
            return f"{self.key} {op.value} ({joined})"
        symbol = {Operator.GREATER_THAN: ">", Operator.LESS_THAN: "<"}.get(op, op.value)
        return f"{self.key}{symbol}{joined}"


def _new_requirement(key: str, op: Operator, values: Sequence[str] | None) -> Requirement:
    """``labels.NewRequirement`` with no field path; ``values`` None stands for Go's nil slice."""
    errors: list[str] = []
    if key_errors := label_key_errors(key):
        errors.append(_invalid("key", key, "; ".join(key_errors)))
    vals = list(values or ())
    if op in _SET and not vals:
        errors.append(_invalid("values", values, "for 'in', 'notin' operators, values set can't be empty"))
    elif op in _EXACT and len(vals) != 1:
        errors.append(_invalid("values", values, "exact-match compatibility requires one single value"))
    elif op in _UNARY and vals:
        errors.append(_invalid("values", values, "values set must be empty for exists and does not exist"))
    elif op in _NUMERIC:
        if len(vals) != 1:
            errors.append(
                _invalid("values", values, "for 'Gt', 'Lt' operators, exactly one value is required")
            )
        for i, value in enumerate(vals):
            if _parse_int64(value) is None:
                errors.append(
                    _invalid(f"values[{i}]", value, "for 'Gt', 'Lt' operators, the value must be an integer")
                )
    for i, value in enumerate(vals):
        if value_errors := label_value_errors(value):
            errors.append(_invalid(f"values[{i}][{key}]", value, "; ".join(value_errors)))
    if errors:
        raise InvalidSelector(_aggregate(errors))
    return Requirement(key, op, tuple(vals))


class _Tok(Enum):
    ERROR = "error"
    END = "end of string"
    CLOSE = ")"
    COMMA = ","
    NOT = "!"
    DOUBLE_EQUALS = "=="
    EQUALS = "="
    GREATER = ">"
    IDENT = "identifier"
    IN = "in"
    LESS = "<"
    NOT_EQUALS = "!="
    NOT_IN = "notin"
    OPEN = "("


_LITERAL_TOKENS: Final = {
    ")": _Tok.CLOSE,
    ",": _Tok.COMMA,
    "!": _Tok.NOT,
    "==": _Tok.DOUBLE_EQUALS,
    "=": _Tok.EQUALS,
    ">": _Tok.GREATER,
    "in": _Tok.IN,
    "<": _Tok.LESS,
    "!=": _Tok.NOT_EQUALS,
    "notin": _Tok.NOT_IN,
    "(": _Tok.OPEN,
}
_WHITESPACE: Final = frozenset(" \t\r\n")
_SPECIAL: Final = frozenset("=!(),><")
_EOF: Final = "\0"  # Go's lexer reads a zero byte at the end; a literal NUL therefore acts the same way


class _Lexer:
    """A port of ``labels.Lexer``: its quirks decide which error a malformed selector gets."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def read(self) -> str:
        if self.pos < len(self.text):
            self.pos += 1
            return self.text[self.pos - 1]
        return _EOF

    def unread(self) -> None:
        self.pos -= 1

    def lex(self) -> tuple[_Tok, str]:
        ch = self.read()
        while ch in _WHITESPACE:
            ch = self.read()
        if ch == _EOF:
            return _Tok.END, ""
        self.unread()
        return self._special() if ch in _SPECIAL else self._word()

    def _word(self) -> tuple[_Tok, str]:
        chars: list[str] = []
        while (ch := self.read()) != _EOF:
            if ch in _SPECIAL or ch in _WHITESPACE:
                self.unread()
                break
            chars.append(ch)
        word = "".join(chars)
        return _LITERAL_TOKENS.get(word, _Tok.IDENT), word

    def _special(self) -> tuple[_Tok, str]:
        # Longest run of symbols that is still a token: "!=" is one token, "=(" is "=" then "(".
        found: tuple[_Tok, str] | None = None
        run = ""
        while (ch := self.read()) != _EOF:
            if ch not in _SPECIAL:
                self.unread()
                break
            run += ch
            if run in _LITERAL_TOKENS:
                found = (_LITERAL_TOKENS[run], run)
            elif found is not None:
                self.unread()
                break
        return found if found is not None else (_Tok.ERROR, f"error expected: keyword found '{run}'")


_BINARY_OPERATORS: Final = "in, notin, =, ==, !=, gt, lt"
_OPERATOR_FOR_TOKEN: Final = {
    _Tok.IN: Operator.IN,
    _Tok.NOT_IN: Operator.NOT_IN,
    _Tok.EQUALS: Operator.EQUALS,
    _Tok.DOUBLE_EQUALS: Operator.DOUBLE_EQUALS,
    _Tok.NOT_EQUALS: Operator.NOT_EQUALS,
    _Tok.GREATER: Operator.GREATER_THAN,
    _Tok.LESS: Operator.LESS_THAN,
}


class _Parser:
    """A port of ``labels.Parser`` (recursive descent over the scanned tokens), messages included."""

    def __init__(self, text: str) -> None:
        lexer = _Lexer(text)
        self.items: list[tuple[_Tok, str]] = []
        while True:
            item = lexer.lex()
            self.items.append(item)
            if item[0] is _Tok.END:
                break
        self.position = 0

    def _at(self, index: int, values: bool) -> tuple[_Tok, str]:
        tok, literal = self.items[min(index, len(self.items) - 1)]
        # "in" and "notin" are operators only where an operator is expected; elsewhere they are words.
        if values and tok in (_Tok.IN, _Tok.NOT_IN):
            tok = _Tok.IDENT
        return tok, literal

    def lookahead(self, values: bool = True) -> tuple[_Tok, str]:
        return self._at(self.position, values)

    def consume(self, values: bool = True) -> tuple[_Tok, str]:
        self.position += 1
        return self._at(self.position - 1, values)

    def parse(self) -> list[Requirement]:
        requirements: list[Requirement] = []
        while True:
            tok, literal = self.lookahead()
            if tok is _Tok.END:
                return requirements
            if tok not in (_Tok.IDENT, _Tok.NOT):
                raise InvalidSelector(f"found '{literal}', expected: !, identifier, or 'end of string'")
            try:
                requirements.append(self.requirement())
            except InvalidSelector as err:
                raise InvalidSelector(f"unable to parse requirement: {err}") from None
            tok, literal = self.consume()
            if tok is _Tok.END:
                return requirements
            if tok is not _Tok.COMMA:
                raise InvalidSelector(f"found '{literal}', expected: ',' or 'end of string'")
            after, after_literal = self.lookahead()
            if after not in (_Tok.IDENT, _Tok.NOT):
                raise InvalidSelector(f"found '{after_literal}', expected: identifier after ','")

    def requirement(self) -> Requirement:
        negated = False
        tok, key = self.consume()
        if tok is _Tok.NOT:
            negated = True
            tok, key = self.consume()
        if tok is not _Tok.IDENT:
            raise InvalidSelector(f"found '{key}', expected: identifier")
        if key_errors := label_key_errors(key):
            # The real parser validates the key with a nil field path, which Go prints as "<nil>".
            raise InvalidSelector(_invalid("<nil>", key, "; ".join(key_errors)))
        if negated:
            return _new_requirement(key, Operator.DOES_NOT_EXIST, [])
        if self.lookahead()[0] in (_Tok.END, _Tok.COMMA):
            return _new_requirement(key, Operator.EXISTS, [])
        tok, literal = self.consume(values=False)
        op = _OPERATOR_FOR_TOKEN.get(tok)
        if op is None:
            raise InvalidSelector(f"found '{literal}', expected: {_BINARY_OPERATORS}")
        values = self.value_set() if op in _SET else self.exact_value()
        return _new_requirement(key, op, sorted(values))

    def value_set(self) -> set[str]:
        tok, literal = self.consume()
        if tok is not _Tok.OPEN:
            raise InvalidSelector(f"found '{literal}' expected: '('")
        tok, literal = self.lookahead()
        if tok is _Tok.CLOSE:
            self.consume()
            return {""}
        if tok not in (_Tok.IDENT, _Tok.COMMA):
            raise InvalidSelector(f"found '{literal}', expected: ',', ')' or identifier")
        values = self.identifiers()
        self.consume()  # the ")" that identifiers() stopped at
        return values

    def identifiers(self) -> set[str]:
        # Empty items count as the empty value: "(,a)", "(a,)" and "(a,,b)" all hold "".
        values: set[str] = set()
        while True:
            tok, literal = self.consume()
            if tok is _Tok.IDENT:
                values.add(literal)
                after, after_literal = self.lookahead()
                if after is _Tok.CLOSE:
                    return values
                if after is not _Tok.COMMA:
                    raise InvalidSelector(f"found '{after_literal}', expected: ',' or ')'")
            elif tok is _Tok.COMMA:
                if not values:
                    values.add("")
                after = self.lookahead()[0]
                if after is _Tok.CLOSE:
                    values.add("")
                    return values
                if after is _Tok.COMMA:
                    self.consume()
                    values.add("")
            else:
                raise InvalidSelector(f"found '{literal}', expected: ',', or identifier")

    def exact_value(self) -> set[str]:
        if self.lookahead()[0] in (_Tok.END, _Tok.COMMA):
            return {""}
        tok, literal = self.consume()
        if tok is not _Tok.IDENT:
            raise InvalidSelector(f"found '{literal}', expected: identifier")
        return {literal}


_EXPRESSION_OPERATORS: Final = {
    "In": Operator.IN,
    "NotIn": Operator.NOT_IN,
    "Exists": Operator.EXISTS,
    "DoesNotExist": Operator.DOES_NOT_EXIST,
}


@dataclass(frozen=True)
class LabelSelector:
    """A label selector: every requirement must hold. No requirements selects everything.

    ``selects_nothing`` is the real ``labels.Nothing()``: what a *nil* ``metav1.LabelSelector`` means. It
    prints as ``""`` just like the real one, so it is the one selector that does not survive ``parse(str())``.
    """

    requirements: tuple[Requirement, ...] = ()
    selects_nothing: bool = False

    def __post_init__(self) -> None:
        # Stable sort by key only, like the real ByKey sort: same-key requirements keep their given order.
        ordered = () if self.selects_nothing else tuple(sorted(self.requirements, key=lambda r: r.key))
        object.__setattr__(self, "requirements", ordered)

    @classmethod
    def everything(cls) -> LabelSelector:
        return cls()

    @classmethod
    def nothing(cls) -> LabelSelector:
        return cls(selects_nothing=True)

    @classmethod
    def parse(cls, text: str) -> LabelSelector:
        """The ``?labelSelector=`` syntax; an error is ``ApiError`` 400 worded as the real server words it."""
        try:
            return cls(tuple(_Parser(text).parse()))
        except InvalidSelector as err:
            raise ApiError.bad_request(str(err)) from None

    @classmethod
    def from_dict(cls, selector: Mapping[str, Any] | None) -> LabelSelector:
        """A ``metav1.LabelSelector`` object, read as the real ``LabelSelectorAsSelector`` reads it.

        ``None`` selects nothing and ``{}`` everything, as in the real server: a workload or Service that
        names no selector at all must not adopt every pod in its namespace, while an explicitly empty
        selector is the documented way to ask for all of them. Raises :class:`InvalidSelector`.
        """
        if selector is None:
            return cls.nothing()
        raw: object = selector  # decoded JSON: the annotation is a hope, not a guarantee
        if not isinstance(raw, Mapping):
            raise InvalidSelector(f"a label selector must be an object, not {type(raw).__name__}")
        match_labels = raw.get("matchLabels") or {}
        expressions = raw.get("matchExpressions") or []
        if not isinstance(match_labels, Mapping):
            raise InvalidSelector("matchLabels: must be an object of strings")
        if not isinstance(expressions, list):
            raise InvalidSelector("matchExpressions: must be a list")
        requirements: list[Requirement] = []
        # Go walks the map in random order; sorted keys make the first error reported a stable one.
        for key in sorted(match_labels):
            value = match_labels[key]
            if not isinstance(key, str) or not isinstance(value, str):
                raise InvalidSelector(f"matchLabels: {key!r}: keys and values must be strings")
            requirements.append(_new_requirement(key, Operator.EQUALS, [value]))
        for index, expression in enumerate(expressions):
            requirements.append(_expression_requirement(index, expression))
        return cls(tuple(requirements))

    @property
    def empty(self) -> bool:
        """True when this selects everything (the real ``Selector.Empty()``)."""
        return not self.selects_nothing and not self.requirements

    def matches(self, labels: Mapping[str, str] | None) -> bool:
        if self.selects_nothing:
            return False
        present = labels or {}
        return all(r.matches(present) for r in self.requirements)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        metadata = obj.get("metadata") or {}
        return self.matches(metadata.get("labels") or {})

    def __str__(self) -> str:
        return ",".join(str(r) for r in self.requirements)


def _expression_requirement(index: int, expression: Any) -> Requirement:
    where = f"matchExpressions[{index}]"
    if not isinstance(expression, Mapping):
        raise InvalidSelector(f"{where}: must be an object")
    key, operator, values = expression.get("key"), expression.get("operator"), expression.get("values")
    if not isinstance(key, str):
        raise InvalidSelector(f"{where}.key: must be a string")
    if not isinstance(operator, str):
        raise InvalidSelector(f"{where}.operator: must be a string")
    if values is not None and (not isinstance(values, list) or not all(isinstance(v, str) for v in values)):
        raise InvalidSelector(f"{where}.values: must be a list of strings")
    op = _EXPRESSION_OPERATORS.get(operator)
    if op is None:
        raise InvalidSelector(f"{go_quote(operator)} is not a valid label selector operator")
    # The real code copies values with append([]string(nil), ...), so an empty list reaches it as nil.
    return _new_requirement(key, op, values or None)


def to_string(selector: Mapping[str, Any] | None) -> str:
    """A ``metav1.LabelSelector`` as the text the real server puts in a Scale's ``status.selector``.

    ``app=x,tier in (a,b)``; ``None`` and ``{}`` both give ``""``. Raises :class:`InvalidSelector`.
    """
    return str(LabelSelector.from_dict(selector))


# --- field selectors ---------------------------------------------------------------------------------------


def escape_field_value(value: str) -> str:
    """``fields.EscapeValue``: a backslash, comma or equals sign in a value is escaped with a backslash."""
    return value.replace("\\", "\\\\").replace(",", "\\,").replace("=", "\\=")


def _unescape_field_value(text: str) -> str:
    out: list[str] = []
    escaped = False
    for ch in text:
        if escaped:
            if ch not in "\\,=":
                raise InvalidSelector(f"invalid field selector: invalid escape sequence: \\{ch}")
            out.append(ch)
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch in ",=":
            # The real error prints the rune with %v, which in Go is its code point: "61" for "=".
            raise InvalidSelector(f"invalid field selector: unescaped character in value: {ord(ch)}")
        else:
            out.append(ch)
    if escaped:
        raise InvalidSelector("invalid field selector: invalid escape sequence: \\")
    return "".join(out)


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not escaped; the backslashes stay for the value's own unescaping."""
    if not text:
        return []
    terms: list[str] = []
    start = 0
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == ",":
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return terms


def _split_term(term: str) -> tuple[str, str, str] | None:
    # The first operator found splits the term, trying "!=" before "==" before "=" at each position.
    for i in range(len(term)):
        for op in ("!=", "==", "="):
            if term.startswith(op, i):
                return term[:i], op, term[i + len(op) :]
    return None


@dataclass(frozen=True)
class FieldTerm:
    """``field=value``, or ``field!=value`` when ``negated``; ``==`` reads as ``=``, as in the real parser."""

    field: str
    value: str
    negated: bool = False

    def matches(self, values: Mapping[str, str]) -> bool:
        return (values.get(self.field, "") == self.value) != self.negated

    def __str__(self) -> str:
        return f"{self.field}{'!=' if self.negated else '='}{escape_field_value(self.value)}"


def _dig(obj: Any, *path: str) -> Any:
    for step in path:
        if not isinstance(obj, Mapping):
            return None
        obj = obj.get(step)
    return obj


def _scalar(value: Any) -> str:
    """A field's value as the real field set holds it: missing is "", booleans are "true"/"false"."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, str):
        return value
    return ""


def _bool_field(value: Any) -> str:
    # A Go bool field is never absent: a missing one reads as false.
    return "true" if value is True else "false"


def _count_field(value: Any) -> str:
    # A Go int32 field is never absent: a missing one reads as 0.
    return str(value) if isinstance(value, int) and not isinstance(value, bool) else "0"


def _pod_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    pod_ips = _dig(obj, "status", "podIPs")
    # The real set reads podIPs[0]; a v1 object that only has podIP converts to that same list.
    if isinstance(pod_ips, list) and pod_ips and isinstance(pod_ips[0], Mapping):
        pod_ip = _scalar(pod_ips[0].get("ip"))
    else:
        pod_ip = _scalar(_dig(obj, "status", "podIP"))
    return {
        "spec.nodeName": _scalar(_dig(obj, "spec", "nodeName")),
        "spec.restartPolicy": _scalar(_dig(obj, "spec", "restartPolicy")),
        "spec.schedulerName": _scalar(_dig(obj, "spec", "schedulerName")),
        "spec.serviceAccountName": _scalar(_dig(obj, "spec", "serviceAccountName")),
        "spec.hostNetwork": _bool_field(_dig(obj, "spec", "hostNetwork")),
        "status.phase": _scalar(_dig(obj, "status", "phase")),
        "status.podIP": pod_ip,
        "status.nominatedNodeName": _scalar(_dig(obj, "status", "nominatedNodeName")),
    }


def _event_fields(obj: Mapping[str, Any]) -> dict[str, str]:
    involved = ("kind", "namespace", "name", "uid", "apiVersion", "resourceVersion", "fieldPath")
    fields = {f"involvedObject.{k}": _scalar(_dig(obj, "involvedObject", k)) for k in involved}
    reporting = _scalar(obj.get("reportingComponent"))
    fields.update(
        {
            "reason": _scalar(obj.get("reason")),
            "reportingComponent": reporting,
            # An event written through events.k8s.io has no source; the real set falls back to the reporter.
            "source": _scalar(_dig(obj, "source", "component")) or reporting,
            "type": _scalar(obj.get("type")),
        }
    )
    return fields


@dataclass(frozen=True)
class _BuiltinFields:
    """A built-in resource's field-label conversion function and its selectable field set."""

    labels: frozenset[str]
    values: Callable[[Mapping[str, Any]], dict[str, str]]
    reject: Callable[[str], str] = lambda label: f"field label not supported: {label}"
    aliases: Mapping[str, str] | None = None


_META: Final = frozenset({"metadata.name", "metadata.namespace"})

# Only resources whose API group registers its own field-label conversion are here (pkg/apis/*/v1); every
# other built-in, Deployments and ReplicaSets included, gets the default: metadata.name and .namespace only.
_BUILTIN: Final[dict[tuple[str, str], _BuiltinFields]] = {
    ("", "pods"): _BuiltinFields(
        _META
        | {
            "spec.nodeName",
            "spec.restartPolicy",
            "spec.schedulerName",
            "spec.serviceAccountName",
            "spec.hostNetwork",
            "status.phase",
            "status.podIP",
            "status.podIPs",
            "status.nominatedNodeName",
        },
        _pod_fields,
        aliases={"spec.host": "spec.nodeName"},  # what pre-1.0 clients sent
    ),
    ("", "events"): _BuiltinFields(
        _META
        | {
            "involvedObject.kind",
            "involvedObject.namespace",
            "involvedObject.name",
            "involvedObject.uid",
            "involvedObject.apiVersion",
            "involvedObject.resourceVersion",
            "involvedObject.fieldPath",
            "reason",
            "reportingComponent",
            "source",
            "type",
        },
        _event_fields,
    ),
    # Cluster-scoped: the real conversion functions do not even accept metadata.namespace.
    ("", "nodes"): _BuiltinFields(
        frozenset({"metadata.name", "spec.unschedulable"}),
        lambda obj: {"spec.unschedulable": _bool_field(_dig(obj, "spec", "unschedulable"))},
    ),
    ("", "namespaces"): _BuiltinFields(
        frozenset({"metadata.name", "status.phase"}),
        lambda obj: {"status.phase": _scalar(_dig(obj, "status", "phase"))},
    ),
    ("", "secrets"): _BuiltinFields(_META | {"type"}, lambda obj: {"type": _scalar(obj.get("type"))}),
    ("", "services"): _BuiltinFields(
        _META | {"spec.clusterIP", "spec.type"},
        lambda obj: {
            "spec.clusterIP": _scalar(_dig(obj, "spec", "clusterIP")),
            "spec.type": _scalar(_dig(obj, "spec", "type")),
        },
    ),
    ("", "replicationcontrollers"): _BuiltinFields(
        _META | {"status.replicas"},
        lambda obj: {"status.replicas": _count_field(_dig(obj, "status", "replicas"))},
    ),
    ("batch", "jobs"): _BuiltinFields(
        _META | {"status.successful"},
        lambda obj: {"status.successful": _count_field(_dig(obj, "status", "succeeded"))},
        reject=lambda label: f"field label {go_quote(label)} not supported for Job",
    ),
}

_JSON_PATH_STEP: Final = re.compile(r"\.([^.\[\]]+)|\[\s*'([^']*)'\s*\]|\[\s*\"([^\"]*)\"\s*\]")


# field_values parses these for every object a list or watch event tests, from a CRD's few paths.
@functools.lru_cache(maxsize=256)
def _json_path_steps(json_path: str) -> tuple[str, ...] | None:
    """``.spec.color`` or ``.spec['a.b']`` as keys to walk; None for anything fancier (it then reads "")."""
    steps: list[str] = []
    pos = 0
    while pos < len(json_path):
        found = _JSON_PATH_STEP.match(json_path, pos)
        if found is None:
            return None
        steps.append(next(g for g in found.groups() if g is not None))
        pos = found.end()
    return tuple(steps) if steps else None


def _selectable_label(json_path: str) -> str:
    # A CRD's selectableFields name ".spec.color"; a field selector says "spec.color".
    return json_path.removeprefix(".")


@dataclass(frozen=True)
class FieldSelector:
    """A field selector for one resource: every term must hold. No terms selects everything.

    ``selectable`` holds a custom resource's ``selectableFields`` JSON paths (``.spec.color``). Terms are kept
    sorted by their printed form, so ``str()`` is canonical and ``parse(str(sel), ...) == sel``.
    """

    terms: tuple[FieldTerm, ...] = ()
    resource: str = ""
    group: str = ""
    custom: bool = False
    selectable: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "terms", tuple(sorted(self.terms, key=str)))
        normalized = {"." + _selectable_label(p) for p in self.selectable}
        object.__setattr__(self, "selectable", tuple(sorted(normalized)))

    @classmethod
    def everything(cls) -> FieldSelector:
        return cls()

    @classmethod
    def parse(
        cls,
        text: str,
        resource: str,
        extra: Iterable[str] | None = None,
        *,
        group: str = "",
        custom: bool = False,
        cluster_scoped: bool = False,
    ) -> FieldSelector:
        """The ``?fieldSelector=`` syntax for ``resource`` (plural, lower case) in API ``group``.

        ``custom`` marks a custom resource; passing ``extra`` (its CRD's ``selectableFields`` JSON paths)
        implies it. ``cluster_scoped`` matters for custom resources only: the real server then refuses
        ``metadata.namespace``. Errors are ``ApiError`` 400 worded as the real server words them.

        Differs: whitespace is not trimmed (neither does the real parser): ``metadata.name = a`` asks about a
        field called ``"metadata.name "``, which no resource has.
        """
        custom = custom or extra is not None
        selectable = tuple(extra or ())
        try:
            terms = _parse_terms(text)
            allowed = {_selectable_label(p) for p in selectable}
            converted = tuple(
                FieldTerm(
                    _convert_label(t.field, resource, group, custom, cluster_scoped, allowed),
                    t.value,
                    t.negated,
                )
                for t in terms
            )
        except InvalidSelector as err:
            raise ApiError.bad_request(str(err)) from None
        return cls(converted, resource, group, custom, selectable)

    @property
    def empty(self) -> bool:
        return not self.terms

    def field_values(self, obj: Mapping[str, Any]) -> dict[str, str]:
        """The object's selectable fields, as the real server's ``GetAttrs`` would give them."""
        values = {
            "metadata.name": _scalar(_dig(obj, "metadata", "name")),
            "metadata.namespace": _scalar(_dig(obj, "metadata", "namespace")),
        }
        if self.custom:
            for json_path in self.selectable:
                steps = _json_path_steps(json_path)
                values[_selectable_label(json_path)] = _scalar(_dig(obj, *steps)) if steps else ""
        elif (builtin := _BUILTIN.get((self.group, self.resource))) is not None:
            values.update(builtin.values(obj))
        return values

    def matches(self, obj: Mapping[str, Any]) -> bool:
        if not self.terms:
            return True
        values = self.field_values(obj)
        return all(t.matches(values) for t in self.terms)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches(obj)

    def __str__(self) -> str:
        return ",".join(str(t) for t in self.terms)


def _parse_terms(text: str) -> list[FieldTerm]:
    terms: list[FieldTerm] = []
    # The real parser sorts the raw terms first, so with several bad terms the same one is reported.
    for part in sorted(_split_terms(text)):
        if not part:
            continue
        split = _split_term(part)
        if split is None:
            raise InvalidSelector(f"invalid selector: '{text}'; can't understand '{part}'")
        lhs, op, rhs = split
        terms.append(FieldTerm(lhs, _unescape_field_value(rhs), negated=op == "!="))
    return terms


def _convert_label(
    label: str, resource: str, group: str, custom: bool, cluster_scoped: bool, selectable: set[str]
) -> str:
    """The real ``ConvertFieldLabel``: the label to match on, or the error naming the label."""
    if custom:
        if (
            label == "metadata.name"
            or (label == "metadata.namespace" and not cluster_scoped)
            or label in selectable
        ):
            return label
        raise InvalidSelector(f"field label not supported: {label}")
    builtin = _BUILTIN.get((group, resource))
    if builtin is None:
        if label in _META:
            return label
        raise InvalidSelector(
            f'{go_quote(label)} is not a known field selector: only "metadata.name", "metadata.namespace"'
        )
    if builtin.aliases and label in builtin.aliases:
        return builtin.aliases[label]
    if label in builtin.labels:
        return label
    raise InvalidSelector(builtin.reject(label))


# --- both, and watch membership ----------------------------------------------------------------------------


class ObjectMatcher(Protocol):
    """Anything that decides whether a whole object is selected."""

    def matches_object(self, obj: Mapping[str, Any]) -> bool: ...


@dataclass(frozen=True)
class Selection:
    """A list or watch request's label and field selectors together; an object must satisfy both."""

    label_selector: LabelSelector = LabelSelector()
    field_selector: FieldSelector = FieldSelector()

    @classmethod
    def from_query(
        cls,
        label_selector: str | None,
        field_selector: str | None,
        resource: str,
        extra: Iterable[str] | None = None,
        *,
        group: str = "",
        custom: bool = False,
        cluster_scoped: bool = False,
    ) -> Selection:
        """From the two query parameters (absent ones select everything); raises ``ApiError`` 400."""
        return cls(
            LabelSelector.parse(label_selector or ""),
            FieldSelector.parse(
                field_selector or "",
                resource,
                extra,
                group=group,
                custom=custom,
                cluster_scoped=cluster_scoped,
            ),
        )

    @property
    def empty(self) -> bool:
        return self.label_selector.empty and self.field_selector.empty

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return self.label_selector.matches_object(obj) and self.field_selector.matches(obj)

    def matches_object(self, obj: Mapping[str, Any]) -> bool:
        return self.matches(obj)


def changed_membership(
    selector: ObjectMatcher, old_obj: Mapping[str, Any] | None, new_obj: Mapping[str, Any] | None
) -> tuple[bool, bool]:
    """``(was_in, is_in)``: whether the object was selected before the change and is after it.

    ``old_obj`` None is a create, ``new_obj`` None a delete (neither side is then "in").
    """
    was_in = old_obj is not None and selector.matches_object(old_obj)
    is_in = new_obj is not None and selector.matches_object(new_obj)
    return was_in, is_in


WatchEventType = Literal["ADDED", "MODIFIED", "DELETED"]


def watch_event_type(
    selector: ObjectMatcher, old_obj: Mapping[str, Any] | None, new_obj: Mapping[str, Any] | None
) -> WatchEventType | None:
    """The event a watch filtered by ``selector`` gets for a change, or None when it gets nothing.

    As the real watch cache does it: entering the selection is ADDED, staying in is MODIFIED, leaving it
    (or being deleted while in it) is DELETED. On leaving, the real server sends the *previous* object's
    content with the new resourceVersion; building that object is the caller's part.
    """
    was_in, is_in = changed_membership(selector, old_obj, new_obj)
    if is_in:
        return "MODIFIED" if was_in else "ADDED"
    return "DELETED" if was_in else None
