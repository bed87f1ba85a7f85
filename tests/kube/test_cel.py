"""The CEL evaluator: each construct it supports, with cel-go's results and error texts, and a clear
refusal of what it does not support."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube_test_server import cel
from kube_test_server.cel import CelEvalError, CelSyntaxError, UnsupportedRule

INT64_MAX = 2**63 - 1
INT64_MIN = -(2**63)

SPEC = {"minReplicas": 1, "maxReplicas": 4, "name": "web-1", "labels": {"app": "web"}, "ports": [80, 443]}


def run(expr: str, **bindings: Any) -> Any:
    return cel.compile(expr).evaluate(bindings)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # literals
        ("42", 42),
        ("-42", -42),
        ("0x1F", 31),
        ("-9223372036854775808", INT64_MIN),
        ("9223372036854775807", INT64_MAX),
        ("1.5", 1.5),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("2.5e-1", 0.25),
        ("true", True),
        ("false", False),
        ("null", None),
        ("'single'", "single"),
        ('"double"', "double"),
        ("'''tri\nple'''", "tri\nple"),
        ('"""a "quoted" b"""', 'a "quoted" b'),
        (r'"tab\there\nnewline"', "tab\there\nnewline"),
        (r'"\\ \" \' \` \?"', "\\ \" ' ` ?"),
        (r'"\a\b\f\r\v"', "\a\b\f\r\v"),
        (r'"\x41\u00e9\U0001F600\101"', "A\u00e9\U0001f600A"),
        (r"r'\d+\n'", "\\d+\\n"),
        (r'R"\x41"', "\\x41"),
        ("[1, 'a', true, null]", [1, "a", True, None]),
        ("[1, 2,]", [1, 2]),
        ("[]", []),
        ("{'a': 1, 'b': [2]}", {"a": 1, "b": [2]}),
        ("{}", {}),
        ("// a comment\n1 // another\n + 1", 2),
        # arithmetic: int64, truncating division, Go's remainder sign
        ("1 + 2 * 3", 7),
        ("(1 + 2) * 3", 9),
        ("10 - 2 - 3", 5),
        ("7 / 2", 3),
        ("-7 / 2", -3),
        ("7 / -2", -3),
        ("7 % 3", 1),
        ("-7 % 3", -1),
        ("7 % -3", 1),
        ("1.5 + 2.25", 3.75),
        ("7.0 / 2.0", 3.5),
        ("1.0 / 0.0", float("inf")),
        ("-1.0 / 0.0", float("-inf")),
        ("-(3)", -3),
        ("--3", 3),
        ("-(1.5)", -1.5),
        ("'ab' + 'cd'", "abcd"),
        ("[1] + [2, 3]", [1, 2, 3]),
        # comparison, numbers compared across int and double
        ("1 == 1", True),
        ("1 != 2", True),
        ("1 == 1.0", True),
        ("1 < 1.5", True),
        ("2 >= 2.0", True),
        ("3.5 > 3", True),
        ("'a' < 'b'", True),
        ("'b' <= 'a'", False),
        ("false < true", True),
        ("[1, 2] == [1, 2]", True),
        ("[1, 2] == [2, 1]", False),
        ("{'a': 1} == {'a': 1.0}", True),
        ("null == null", True),
        ("1 == 'a'", False),
        ("null != 0", True),
        ("true == 1", False),
        # logic and the ternary
        ("true && false", False),
        ("true || false", True),
        ("!true", False),
        ("!!true", True),
        ("true ? 'yes' : 'no'", "yes"),
        ("false ? 'yes' : 1 > 0 ? 'nested' : 'no'", "nested"),
        ("1 < 2 && 2 < 3 || false", True),
        # in
        ("2 in [1, 2, 3]", True),
        ("2.0 in [1, 2, 3]", True),
        ("4 in [1, 2, 3]", False),
        ("'a' in {'a': 1}", True),
        ("'b' in {'a': 1}", False),
        # functions
        ("size('héllo')", 5),
        ("'héllo'.size()", 5),
        ("size([1, 2])", 2),
        ("{'a': 1}.size()", 1),
        ("'kube'.startsWith('ku')", True),
        ("'kube'.endsWith('be')", True),
        ("'kube'.contains('ub')", True),
        ("'kube'.contains('x')", False),
        ("'web-1'.matches('^[a-z]+-[0-9]$')", True),
        ("'web-1'.matches('[0-9]')", True),
        ("'Web'.matches('^[a-z]+$')", False),
        ("matches('abc', 'b')", True),
        ("'٣'.matches('\\\\d')", False),
        ("'ab'.matches('[[:alpha:]]+')", True),
        ("'abc\\n'.matches('^[a-z]+$')", False),  # RE2's $ is the very end, not before a final newline
        ("'a\\nb'.matches('(?m)^a$')", True),
        ("'a]'.matches('^[]a]+$')", True),
        ("'x'.matches('(?<n>x)')", True),
        ("int(3.9)", 3),
        ("int(-3.9)", -3),
        ("int('-42')", -42),
        ("int('+7')", 7),
        ("double(2)", 2.0),
        ("double('1e3')", 1000.0),
        ("double('-Inf')", float("-inf")),
        ("string(42)", "42"),
        ("string(1.5)", "1.5"),
        ("string(1e6)", "1e+06"),
        ("string(100000.0)", "100000"),
        ("string(0.0001)", "0.0001"),
        ("string(0.00001)", "1e-05"),
        ("string(true)", "true"),
        ("string('s')", "s"),
        ("bool('true')", True),
        ("bool('F')", False),
        ("dyn(1) + 1", 2),
        # macros over lists and map keys
        ("[1, 2, 3].all(x, x > 0)", True),
        ("[1, 2, 3].all(x, x > 1)", False),
        ("[].all(x, false)", True),
        ("[1, 2, 3].exists(x, x == 2)", True),
        ("[].exists(x, true)", False),
        ("[1, 2, 3].exists_one(x, x > 2)", True),
        ("[1, 2, 3].exists_one(x, x > 1)", False),
        ("[1, 2, 3].map(x, x * 10)", [10, 20, 30]),
        ("[1, 2, 3].map(x, x > 1, x * 10)", [20, 30]),
        ("[1, 2, 3].filter(x, x % 2 == 1)", [1, 3]),
        ("{'a': 1, 'b': 2}.all(k, k.size() == 1)", True),
        ("{'a': 1, 'b': 2}.map(k, k + k)", ["aa", "bb"]),
        ("{'a': 1, 'b': 2}.filter(k, k == 'b')", ["b"]),
        ("[[1, 2], [3]].all(l, l.all(x, x > 0))", True),
        ("[1, 2].map(x, [3].map(y, x * y))", [[3], [6]]),
        ("[1, 2].exists(x, x == 2) && [1].all(x, x == 1)", True),
    ],
)
def test_expression_values(expr: str, expected: Any) -> None:
    result = run(expr)
    assert result == expected
    assert type(result) is type(expected)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("self.minReplicas <= self.maxReplicas", True),
        ("self.maxReplicas - self.minReplicas == 3", True),
        ("self.labels.app == 'web'", True),
        ("self.labels['app']", "web"),
        ("self['labels']['app']", "web"),
        ("self.ports[1]", 443),
        ("self.ports[1.0]", 443),
        ("has(self.name)", True),
        ("has(self.missing)", False),
        ("has(self.labels.app)", True),
        ("!has(self.missing) || self.missing > 0", True),
        ("self.ports.all(p, p > 0 && p < 65536)", True),
        ("self.name.size() <= 52 && self.name.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')", True),
        ("self.labels.exists(k, k == 'app')", True),
        ("'app' in self.labels", True),
        ("443 in self.ports", True),
        ("self.minReplicas > 0 ? self.maxReplicas / self.minReplicas : 0", 4),
        # shadowing: the macro variable hides self inside the macro
        ("[1].all(self, self == 1)", True),
    ],
)
def test_expressions_over_self(expr: str, expected: Any) -> None:
    assert run(expr, self=SPEC) == expected


@pytest.mark.parametrize(
    ("expr", "bindings", "expected"),
    [
        # Kubernetes escapes property names that are not CEL identifiers.
        ("self.foo__dash__bar", {"foo-bar": 1}, 1),
        ("self.a__dot__b", {"a.b": 2}, 2),
        ("self.x__slash__y", {"x/y": 3}, 3),
        ("self.a__underscores__b", {"a__b": 4}, 4),
        ("self.__namespace__", {"namespace": 5}, 5),
        ("self.__if__", {"if": 6}, 6),
        ("has(self.foo__dash__bar)", {"foo-bar": 1}, True),
        ("has(self.foo__dash__bar)", {"foo_bar": 1}, False),
    ],
)
def test_escaped_property_names(expr: str, bindings: dict[str, Any], expected: Any) -> None:
    assert run(expr, self=bindings) == expected


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        # CEL's && and || are commutative and absorb an error when the other side decides
        ("false && self.missing", False),
        ("self.missing && false", False),
        ("true || self.missing", True),
        ("self.missing || true", True),
        ("false && 1 / 0 == 0", False),
        ("1 / 0 == 0 || true", True),
        ("false && 'not a bool'", False),
        ("'not a bool' || true", True),
        ("[0, -1].all(x, 1 / x > 0)", False),  # the false element decides, the error does not
        ("[0, 1].exists(x, 1 / x == 1)", True),
        ("true ? 1 : self.missing", 1),
    ],
)
def test_errors_absorbed_by_the_deciding_side(expr: str, expected: Any) -> None:
    assert run(expr, self={}) == expected


@pytest.mark.parametrize(
    ("expr", "message"),
    [
        ("self.missing", "no such key: missing"),
        ("self.spec.minReplicas", "no such key: spec"),
        ("self.labels['nope']", "no such key: nope"),
        ("{'a': 1}.b", "no such key: b"),
        ("self.ports[2]", "index '2' out of range in list size '2'"),
        ("self.ports[-1]", "index '-1' out of range in list size '2'"),
        ("self.ports['a']", "unsupported index type 'string' in list"),
        ("9223372036854775807 + 1", "integer overflow"),
        ("-9223372036854775808 - 1", "integer overflow"),
        ("9223372036854775807 * 2", "integer overflow"),
        ("-9223372036854775808 / -1", "integer overflow"),
        ("-9223372036854775808 % -1", "integer overflow"),
        ("-(-9223372036854775808)", "integer overflow"),
        ("1 / 0", "division by zero"),
        ("1 % 0", "modulus by zero"),
        ("1 + 1.0", "no such overload"),
        ("1 + 'a'", "no such overload"),
        ("1.5 % 1.0", "no such overload"),
        ("'a' < 1", "no such overload"),
        ("[1] < [2]", "no such overload"),
        ("!1", "no such overload"),
        ("-'a'", "no such overload"),
        ("1 ? 2 : 3", "no such overload"),
        ("true && 'x'", "no such overload"),
        ("1 in 'abc'", "no such overload"),
        ("self.name.startsWith(1)", "no such overload"),
        ("size(1)", "no such overload"),
        ("self.minReplicas.x", "no such overload"),
        ("has(self.name.x)", "no such overload"),
        ("self.minReplicas.all(x, true)", "no such overload"),
        ("[1, 2].all(x, x)", "no such overload"),
        ("[1, 2].filter(x, 1)", "no such overload"),
        ("[0, 1].exists_one(x, 1 / x == 1)", "division by zero"),
        ("[0].map(x, 1 / x)", "division by zero"),
        ("[1, 0].all(x, 1 / x > 0)", "division by zero"),
        ("int(1e19)", "integer overflow"),
        ("int(-9.3e18)", "integer overflow"),
        ("int('abc')", 'strconv.ParseInt: parsing "abc": invalid syntax'),
        (
            "int('99999999999999999999')",
            'strconv.ParseInt: parsing "99999999999999999999": value out of range',
        ),
        ("int(true)", "type conversion error from 'bool' to 'int'"),
        ("double('x')", 'strconv.ParseFloat: parsing "x": invalid syntax'),
        ("string(null)", "type conversion error from 'null_type' to 'string'"),
        ("bool('yes')", 'strconv.ParseBool: parsing "yes": invalid syntax'),
        ("{'a': 1, 'a': 2}", "Failed with repeated key: a"),
        ("'x'.matches(self.name + '[')", "error parsing regexp"),
    ],
)
def test_evaluation_errors(expr: str, message: str) -> None:
    with pytest.raises(CelEvalError) as caught:
        run(expr, self=SPEC)
    assert caught.value.message.startswith(message)


@pytest.mark.parametrize(
    ("expr", "error", "message", "column"),
    [
        # what kube-apiserver refuses too
        ("1 +", CelSyntaxError, "Syntax error: unexpected end of input", 4),
        ("(1", CelSyntaxError, "Syntax error: expected ')', got end of input", 3),
        ("1 = 2", CelSyntaxError, "Syntax error: token recognition error at: '='", 3),
        ("'abc", CelSyntaxError, "Syntax error: unterminated string literal", 1),
        ("'a\nb'", CelSyntaxError, "Syntax error: newline in string literal", 3),
        ("'\\q'", CelSyntaxError, "Syntax error: invalid escape sequence '\\q'", 2),
        ("'\\uD800'", CelSyntaxError, "Syntax error: invalid unicode code point", 2),
        ("9223372036854775808", CelSyntaxError, "Syntax error: invalid int literal", 1),
        ("x > 1", CelSyntaxError, "undeclared reference to 'x'", 1),
        ("self.all(x, y)", CelSyntaxError, "undeclared reference to 'y'", 13),
        ("if", CelSyntaxError, "Syntax error: reserved identifier: if", 1),
        ("self.while", CelSyntaxError, "Syntax error: reserved identifier: while", 6),
        ("has(self)", CelSyntaxError, "invalid argument to has() macro", 1),
        ("size(1, 2)", CelSyntaxError, "found no matching overload for 'size' applied to 2 arguments", 1),
        (
            "'a'.startsWith()",
            CelSyntaxError,
            "found no matching overload for 'startsWith' applied to 0 arguments",
            5,
        ),
        ("self.all(x)", CelSyntaxError, "found no matching overload for 'all' applied to 1 arguments", 6),
        ("self.map(1, 2)", CelSyntaxError, "argument must be a simple name", 10),
        (
            "self.name.matches('[')",
            CelSyntaxError,
            "error parsing regexp: unterminated character set at position 0",
            19,
        ),
        # what kube-apiserver accepts but this evaluator does not implement
        ("self.x.?y", UnsupportedRule, "optional field selection '.?' is not supported", 7),
        ("self[?'x']", UnsupportedRule, "optional index '[?' is not supported", 5),
        ("b'bytes'", UnsupportedRule, "bytes literals are not supported", 1),
        ("1u", UnsupportedRule, "unsigned integer literals are not supported", 1),
        ("Msg{f: 1}", UnsupportedRule, "message construction is not supported", 4),
        ("self.name.lowerAscii() == 'a'", UnsupportedRule, "function 'lowerAscii' is not supported", 11),
        ("quantity('1Gi')", UnsupportedRule, "function 'quantity' is not supported", 1),
        ("duration('1s') > duration('0s')", UnsupportedRule, "function 'duration' is not supported", 1),
        ("self.all(k, v, v > 0)", UnsupportedRule, "two-variable comprehension all() is not supported", 6),
        (
            r"'a'.matches('\\pL')",
            UnsupportedRule,
            r"RE2 syntax without a Python equivalent here: '\\pL'",
            13,
        ),
    ],
)
def test_compile_errors(expr: str, error: type[cel.CelError], message: str, column: int) -> None:
    with pytest.raises(error) as caught:
        cel.compile(expr)
    assert type(caught.value) is error
    assert caught.value.message == message
    assert str(caught.value) == f"<input>:1:{column}: {message}"


def test_error_position_counts_lines() -> None:
    with pytest.raises(UnsupportedRule) as caught:
        cel.compile("self.a &&\n  self.b.?c")
    assert caught.value.position == 18
    assert str(caught.value).startswith("<input>:2:9: ")


@pytest.mark.parametrize(
    ("expr", "references", "transition"),
    [
        ("self.a > 0", {"self"}, False),
        ("self.a == oldSelf.a", {"self", "oldSelf"}, True),
        ("oldSelf", {"oldSelf"}, True),
        ("1 == 1", set(), False),
        ("[1].all(oldSelf, oldSelf > 0)", set(), False),  # the macro variable, not the binding
    ],
)
def test_program_references(expr: str, references: set[str], transition: bool) -> None:
    program = cel.compile(expr)
    assert program.references == references
    assert program.uses_old_self is transition
    assert program.source == expr


def test_custom_variables() -> None:
    program = cel.compile("object.spec.x + 1", variables=("object",))
    assert program.evaluate({"object": {"spec": {"x": 1}}}) == 2
    with pytest.raises(CelSyntaxError, match="undeclared reference to 'self'"):
        cel.compile("self", variables=("object",))


def test_missing_binding_is_an_error() -> None:
    with pytest.raises(CelEvalError, match="no such attribute: oldSelf"):
        cel.compile("oldSelf == self").evaluate({"self": 1})


def test_evaluation_does_not_change_bindings() -> None:
    bindings = {"self": {"l": [1, 2], "m": {"a": 1}}}
    snapshot = json.dumps(bindings)
    assert run("self.l + [3]", **bindings) == [1, 2, 3]
    assert run("self.l.map(x, x * 2)", **bindings) == [2, 4]
    assert json.dumps(bindings) == snapshot


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0.0, "0"),
        (-0.0, "-0"),
        (1.0, "1"),
        (1.5, "1.5"),
        (-2.25, "-2.25"),
        (100000.0, "100000"),
        (1e6, "1e+06"),
        (1234567.0, "1.234567e+06"),
        (0.0001, "0.0001"),
        (0.00001, "1e-05"),
        (1e21, "1e+21"),
        (1.5e-300, "1.5e-300"),
        (float("nan"), "NaN"),
        (float("inf"), "+Inf"),
        (float("-inf"), "-Inf"),
    ],
)
def test_format_double_matches_go(value: float, text: str) -> None:
    assert cel.format_double(value) == text


int64s = st.integers(min_value=INT64_MIN, max_value=INT64_MAX)


@given(int64s, int64s.filter(lambda b: b != 0))
def test_division_and_remainder_agree(a: int, b: int) -> None:
    """Go's truncated division: (a / b) * b + a % b == a; only MIN / -1 overflows."""
    if (a, b) == (INT64_MIN, -1):
        with pytest.raises(CelEvalError, match="integer overflow"):
            run(f"{a} / {b}")
        return
    quotient = run(f"{a} / {b}")
    remainder = run(f"{a} % {b}")
    assert quotient * b + remainder == a
    assert abs(remainder) < abs(b)
    assert remainder == 0 or (remainder < 0) == (a < 0)


@given(int64s, int64s)
def test_addition_is_checked_int64(a: int, b: int) -> None:
    expr = f"{a} + {b}"
    if INT64_MIN <= a + b <= INT64_MAX:
        assert run(expr) == a + b
    else:
        with pytest.raises(CelEvalError, match="integer overflow"):
            run(expr)


@given(st.text(st.characters(codec="utf-8")))
def test_string_literals_round_trip(text: str) -> None:
    # JSON's escapes are all CEL escapes too, so a JSON string is a CEL string literal.
    literal = json.dumps(text, ensure_ascii=False)
    assert run(literal) == text
    assert run(f"size({literal})") == len(text)
