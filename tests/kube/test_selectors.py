"""Label and field selectors: parsing, matching, printing and errors, table by table, plus round-trip properties."""
# ruff: noqa: E501  (the tables read best one row per line)

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from kube_test_server.errors import ApiError
from kube_test_server.selectors import (
    FieldSelector,
    InvalidSelector,
    LabelSelector,
    ObjectMatcher,
    Operator,
    Requirement,
    Selection,
    changed_membership,
    label_key_errors,
    label_value_errors,
    to_string,
    watch_event_type,
)

# The real server's fixed wording, shared by several rows below.
NAME_RULE = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric "
    "character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is "
    "'([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
)
VALUE_RULE = (
    "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must "
    "start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used "
    "for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
)
PREFIX_RULE = (
    "prefix part a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or "
    "'.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for "
    "validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')"
)
OPERATORS = "in, notin, =, ==, !=, gt, lt"
LONG = "a" * 64
LONG_AND_BAD = "-" + "a" * 63


def bad_request(call: Any, *args: Any, **kwargs: Any) -> ApiError:
    with pytest.raises(ApiError) as caught:
        call(*args, **kwargs)
    assert caught.value.code == 400
    assert caught.value.reason == "BadRequest"
    assert caught.value.status()["message"] == caught.value.message
    return caught.value


# --- label selectors: parsing and the canonical text ----------------------------------------------------------

CANONICAL: list[tuple[str, str]] = [
    # query text, str() of the parsed selector
    ("", ""),
    ("   ", ""),
    ("app=web", "app=web"),
    ("app==web", "app==web"),
    ("app!=web", "app!=web"),
    ("tier in (a,b)", "tier in (a,b)"),
    ("tier notin (a,b)", "tier notin (a,b)"),
    ("app", "app"),
    ("!app", "!app"),
    ("x>5", "x>5"),
    ("  app = web ,\ttier in ( b , a ) ,\n! gone ", "app=web,!gone,tier in (a,b)"),
    ("tier in (b,a,b)", "tier in (a,b)"),
    ("b=1,a=2,c", "a=2,b=1,c"),
    (
        "app.kubernetes.io/name=gpuscale,app.kubernetes.io/component in (gateway,pod)",
        "app.kubernetes.io/component in (gateway,pod),app.kubernetes.io/name=gpuscale",
    ),
    ("example.com/A_b-c.d=V_1-2.3", "example.com/A_b-c.d=V_1-2.3"),
    ("k=", "k="),
    ("k!=", "k!="),
    ("k in ()", "k in ()"),
    ("k in (,a)", "k in (,a)"),
    ("k in (a,)", "k in (,a)"),
    ("k in (a,,b)", "k in (,a,b)"),
    ("in in (in,notin)", "in in (in,notin)"),
    ("notin=in", "notin=in"),
    ("k=v,k!=w", "k=v,k!=w"),  # same key: order kept, as the real (stable for short lists) sort keeps it
]


@pytest.mark.parametrize(("text", "canonical"), CANONICAL)
def test_label_selector_canonical_text_and_round_trip(text: str, canonical: str) -> None:
    selector = LabelSelector.parse(text)
    assert str(selector) == canonical
    again = LabelSelector.parse(str(selector))
    assert again == selector
    assert str(again) == canonical


def test_parsed_requirements_are_sorted_by_key_with_sorted_values() -> None:
    selector = LabelSelector.parse("z notin (b,a), a in (y,x), m")
    assert selector.requirements == (
        Requirement("a", Operator.IN, ("x", "y")),
        Requirement("m", Operator.EXISTS),
        Requirement("z", Operator.NOT_IN, ("a", "b")),
    )


# --- label selectors: matching --------------------------------------------------------------------------------

MATCHES: list[tuple[str, dict[str, str] | None, bool]] = [
    # selector, labels, selected?
    ("", {}, True),
    ("", None, True),
    ("", {"any": "thing"}, True),
    ("app=web", {"app": "web"}, True),
    ("app=web", {"app": "db"}, False),
    ("app=web", {}, False),
    ("app==web", {"app": "web", "x": "y"}, True),
    ("app==web", {"app": "Web"}, False),
    ("app!=web", {"app": "db"}, True),
    ("app!=web", {"app": "web"}, False),
    ("app!=web", {}, True),  # a missing label is "not equal"
    ("tier in (a,b)", {"tier": "b"}, True),
    ("tier in (a,b)", {"tier": "c"}, False),
    ("tier in (a,b)", {}, False),
    ("tier notin (a,b)", {"tier": "c"}, True),
    ("tier notin (a,b)", {"tier": "a"}, False),
    ("tier notin (a,b)", {}, True),
    ("app", {"app": ""}, True),
    ("app", {"other": "x"}, False),
    ("!app", {"other": "x"}, True),
    ("!app", {"app": ""}, False),
    ("k=", {"k": ""}, True),
    ("k=", {}, False),
    ("k in (,a)", {"k": ""}, True),
    ("k in (,a)", {"k": "a"}, True),
    ("x>5", {"x": "6"}, True),
    ("x>5", {"x": "5"}, False),
    ("x>5", {"x": "-7"}, False),
    ("x>5", {"x": "six"}, False),  # not an integer: never matches
    ("x>5", {"x": "1_000"}, False),  # Go's ParseInt takes no underscores
    ("x>5", {}, False),
    ("x<5", {"x": "4"}, True),
    ("x<5", {"x": "-9223372036854775808"}, True),
    ("x<5", {"x": "-9223372036854775809"}, False),  # outside int64: not an integer to Go
    ("x<5", {"x": "5"}, False),
    ("app=web,tier in (a,b),!gone", {"app": "web", "tier": "a"}, True),
    ("app=web,tier in (a,b),!gone", {"app": "web", "tier": "a", "gone": "x"}, False),
    ("k=v,k!=v", {"k": "v"}, False),
    ("app.kubernetes.io/name=gpuscale", {"app.kubernetes.io/name": "gpuscale"}, True),
    ("app.kubernetes.io/name=gpuscale", {"name": "gpuscale"}, False),
]


@pytest.mark.parametrize(("text", "labels", "expected"), MATCHES)
def test_label_selector_matches(text: str, labels: dict[str, str] | None, expected: bool) -> None:
    selector = LabelSelector.parse(text)
    assert selector.matches(labels) is expected
    obj: dict[str, Any] = {"metadata": {"name": "o"} | ({"labels": labels} if labels is not None else {})}
    assert selector.matches_object(obj) is expected


def test_empty_and_nothing() -> None:
    assert LabelSelector.parse("").empty
    assert LabelSelector.everything() == LabelSelector.parse("")
    assert not LabelSelector.parse("a").empty
    nothing = LabelSelector.nothing()
    assert not nothing.empty
    assert not nothing.matches({})
    assert not nothing.matches_object({"metadata": {"labels": {"a": "b"}}})
    assert str(nothing) == ""


# --- label selectors: errors ----------------------------------------------------------------------------------

INVALID: list[tuple[str, str]] = [
    # query text, the real server's message
    ("a b", f"unable to parse requirement: found 'b', expected: {OPERATORS}"),
    ("a!b", f"unable to parse requirement: found '!', expected: {OPERATORS}"),
    ("a=b=c", "found '=', expected: ',' or 'end of string'"),
    ("a=b c", "found 'c', expected: ',' or 'end of string'"),
    ("!a=b", "found '=', expected: ',' or 'end of string'"),
    ("a,,b", "found ',', expected: identifier after ','"),
    ("a,", "found '', expected: identifier after ','"),
    ("=a", "found '=', expected: !, identifier, or 'end of string'"),
    (",a", "found ',', expected: !, identifier, or 'end of string'"),
    ("!", "unable to parse requirement: found '', expected: identifier"),
    ("a=(b)", "unable to parse requirement: found '(', expected: identifier"),
    ("a in b", "unable to parse requirement: found 'b' expected: '('"),
    ("a in", "unable to parse requirement: found '' expected: '('"),
    ("a in (", "unable to parse requirement: found '', expected: ',', ')' or identifier"),
    ("a in (b", "unable to parse requirement: found '', expected: ',' or ')'"),
    ("a in (b c)", "unable to parse requirement: found 'c', expected: ',' or ')'"),
    ("a in (b,=)", "unable to parse requirement: found '=', expected: ',', or identifier"),
    ("-a=b", f'unable to parse requirement: <nil>: Invalid value: "-a": name part {NAME_RULE}'),
    ("a-=b", f'unable to parse requirement: <nil>: Invalid value: "a-": name part {NAME_RULE}'),
    (
        f"{LONG}=b",
        f'unable to parse requirement: <nil>: Invalid value: "{LONG}": name part must be no more than 63 bytes',
    ),
    ("/a", 'unable to parse requirement: <nil>: Invalid value: "/a": prefix part must be non-empty'),
    (
        "a/",
        f'unable to parse requirement: <nil>: Invalid value: "a/": name part must be non-empty; name part {NAME_RULE}',
    ),
    ("Example.com/a", f'unable to parse requirement: <nil>: Invalid value: "Example.com/a": {PREFIX_RULE}'),
    (
        "a/b/c",
        f"unable to parse requirement: <nil>: Invalid value: \"a/b/c\": a valid label key {NAME_RULE} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
    ),
    ("a=-b", f'unable to parse requirement: values[0][a]: Invalid value: "-b": {VALUE_RULE}'),
    ("a in (ok,b_)", f'unable to parse requirement: values[0][a]: Invalid value: "b_": {VALUE_RULE}'),
    (
        f"a={LONG}",
        f'unable to parse requirement: values[0][a]: Invalid value: "{LONG}": must be no more than 63 bytes',
    ),
    (
        "x>abc",
        "unable to parse requirement: values[0]: Invalid value: \"abc\": for 'Gt', 'Lt' operators, the value must be an integer",
    ),
    (
        "x>",
        "unable to parse requirement: values[0]: Invalid value: \"\": for 'Gt', 'Lt' operators, the value must be an integer",
    ),
    ("x<-5", f'unable to parse requirement: values[0][x]: Invalid value: "-5": {VALUE_RULE}'),
    (
        "x>-a",
        "unable to parse requirement: [values[0]: Invalid value: \"-a\": for 'Gt', 'Lt' operators, the value "
        f'must be an integer, values[0][x]: Invalid value: "-a": {VALUE_RULE}]',
    ),
    # A gt bound beyond int64 is not an integer.
    (
        "x>99999999999999999999",
        'unable to parse requirement: values[0]: Invalid value: "99999999999999999999": '
        "for 'Gt', 'Lt' operators, the value must be an integer",
    ),
    # Several rules broken by one value are joined with semicolons.
    (
        f"a={LONG_AND_BAD}",
        f'unable to parse requirement: values[0][a]: Invalid value: "{LONG_AND_BAD}": '
        f"must be no more than 63 bytes; {VALUE_RULE}",
    ),
]


@pytest.mark.parametrize(("text", "message"), INVALID)
def test_label_selector_errors_are_400_with_the_real_wording(text: str, message: str) -> None:
    err = bad_request(LabelSelector.parse, text)
    assert err.message == message


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("a", True),
        ("A.b-c_d", True),
        ("a.b/c", True),
        ("x" * 63, True),
        ("x" * 64, False),
        ("", False),
        ("a b", False),
        ("a/b/c", False),
        ("UPPER.example/x", False),
        (("p" * 63 + ".") * 4 + "p/x", False),
    ],
)
def test_label_key_errors(key: str, ok: bool) -> None:
    assert (label_key_errors(key) == []) is ok


@pytest.mark.parametrize(
    ("value", "ok"),
    [
        ("", True),
        ("a", True),
        ("a.b_c-d", True),
        ("v" * 63, True),
        ("v" * 64, False),
        ("-a", False),
        ("a b", False),
        ("é", False),
    ],
)
def test_label_value_errors(value: str, ok: bool) -> None:
    assert (label_value_errors(value) == []) is ok


# --- metav1.LabelSelector objects -----------------------------------------------------------------------------

FROM_DICT: list[tuple[dict[str, Any] | None, str, dict[str, str], bool]] = [
    # selector object, to_string(), labels, selected?
    (None, "", {}, False),
    (None, "", {"app": "x"}, False),
    ({}, "", {}, True),
    ({"matchLabels": {}, "matchExpressions": []}, "", {"app": "x"}, True),
    ({"matchLabels": None, "matchExpressions": None}, "", {"app": "x"}, True),
    ({"matchLabels": {"tier": "db", "app": "x"}}, "app=x,tier=db", {"app": "x", "tier": "db"}, True),
    ({"matchLabels": {"app": "x"}}, "app=x", {"app": "y"}, False),
    (
        {
            "matchLabels": {"app": "x"},
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["b", "a"]}],
        },
        "app=x,tier in (a,b)",
        {"app": "x", "tier": "a"},
        True,
    ),
    (
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
        "tier notin (a)",
        {},
        True,
    ),
    (
        {"matchExpressions": [{"key": "tier", "operator": "NotIn", "values": ["a"]}]},
        "tier notin (a)",
        {"tier": "a"},
        False,
    ),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists"}]}, "gpu", {"gpu": ""}, True),
    ({"matchExpressions": [{"key": "gpu", "operator": "Exists", "values": []}]}, "gpu", {}, False),
    ({"matchExpressions": [{"key": "gpu", "operator": "DoesNotExist"}]}, "!gpu", {}, True),
    (
        {"matchExpressions": [{"key": "b", "operator": "Exists"}, {"key": "a", "operator": "DoesNotExist"}]},
        "!a,b",
        {"b": "1"},
        True,
    ),
]


@pytest.mark.parametrize(("obj", "text", "labels", "expected"), FROM_DICT)
def test_label_selector_from_dict(
    obj: dict[str, Any] | None, text: str, labels: dict[str, str], expected: bool
) -> None:
    selector = LabelSelector.from_dict(obj)
    assert to_string(obj) == text
    assert str(selector) == text
    assert selector.matches(labels) is expected
    if obj is not None:  # a nil selector prints as "" like everything, and cannot round-trip
        assert LabelSelector.parse(text) == selector


FROM_DICT_INVALID: list[tuple[Any, str]] = [
    (
        {"matchExpressions": [{"key": "a", "operator": "Foo", "values": ["x"]}]},
        '"Foo" is not a valid label selector operator',
    ),
    (
        {"matchExpressions": [{"key": "a", "operator": "in", "values": ["x"]}]},
        '"in" is not a valid label selector operator',
    ),
    (
        {"matchExpressions": [{"key": "a", "operator": "In"}]},
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
    ),
    (
        {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": []}]},
        "values: Invalid value: []string(nil): for 'in', 'notin' operators, values set can't be empty",
    ),
    (
        {"matchExpressions": [{"key": "a", "operator": "Exists", "values": ["x"]}]},
        'values: Invalid value: []string{"x"}: values set must be empty for exists and does not exist',
    ),
    (
        {"matchExpressions": [{"key": "-a", "operator": "Exists"}]},
        f'key: Invalid value: "-a": name part {NAME_RULE}',
    ),
    ({"matchLabels": {"-a": "x"}}, f'key: Invalid value: "-a": name part {NAME_RULE}'),
    ({"matchLabels": {"app": "-x"}}, f'values[0][app]: Invalid value: "-x": {VALUE_RULE}'),
    (
        {"matchLabels": {"-a": "-x"}},
        f'[key: Invalid value: "-a": name part {NAME_RULE}, values[0][-a]: Invalid value: "-x": {VALUE_RULE}]',
    ),
    ({"matchLabels": {"app": 3}}, "matchLabels: 'app': keys and values must be strings"),
    ({"matchLabels": ["app"]}, "matchLabels: must be an object of strings"),
    ({"matchExpressions": {"key": "a"}}, "matchExpressions: must be a list"),
    ({"matchExpressions": ["a"]}, "matchExpressions[0]: must be an object"),
    ({"matchExpressions": [{"operator": "Exists"}]}, "matchExpressions[0].key: must be a string"),
    (
        {"matchExpressions": [{"key": "a", "operator": "In", "values": "x"}]},
        "matchExpressions[0].values: must be a list of strings",
    ),
    ("app=x", "a label selector must be an object, not str"),
]


@pytest.mark.parametrize(("obj", "message"), FROM_DICT_INVALID)
def test_label_selector_from_dict_errors(obj: Any, message: str) -> None:
    with pytest.raises(InvalidSelector) as caught:
        LabelSelector.from_dict(obj)
    assert isinstance(caught.value, ValueError)
    assert str(caught.value) == message
    with pytest.raises(InvalidSelector):
        to_string(obj)


# --- label selectors: properties ------------------------------------------------------------------------------

KEYS = st.sampled_from(["a", "b", "app", "in", "notin", "app.kubernetes.io/name", "example.com/x_y"])
VALUES = st.sampled_from(["", "x", "y", "in", "notin", "A-1.b_2", "0", "5", "10"])
NUMBERS = st.integers(-3, 12).map(str)
NUMERIC_VALUES = st.sampled_from(["0", "5", "10", "007"])


@st.composite
def requirements(draw: st.DrawFn) -> Requirement:
    op = draw(st.sampled_from(list(Operator)))
    key = draw(KEYS)
    if op in (Operator.EXISTS, Operator.DOES_NOT_EXIST):
        return Requirement(key, op)
    if op in (Operator.IN, Operator.NOT_IN):
        return Requirement(key, op, tuple(draw(st.lists(VALUES, min_size=1, max_size=3))))
    if op in (Operator.GREATER_THAN, Operator.LESS_THAN):
        return Requirement(key, op, (draw(NUMERIC_VALUES),))
    return Requirement(key, op, (draw(VALUES),))


SELECTORS = st.lists(requirements(), max_size=5).map(lambda rs: LabelSelector(tuple(rs)))
LABELS = st.dictionaries(KEYS, st.one_of(VALUES, NUMBERS), max_size=5)


@given(SELECTORS, LABELS)
def test_printed_selector_parses_back_to_the_same_selection(
    selector: LabelSelector, labels: dict[str, str]
) -> None:
    again = LabelSelector.parse(str(selector))
    assert again == selector
    assert again.matches(labels) == selector.matches(labels)


@given(SELECTORS, st.text(alphabet=" \t", max_size=2))
def test_whitespace_around_tokens_changes_nothing(selector: LabelSelector, pad: str) -> None:
    text = str(selector)
    for token in (",", "(", ")", "!=", "==", ">", "<"):
        text = text.replace(token, f"{pad}{token}{pad}")
    assert LabelSelector.parse(f"{pad}{text}{pad}") == selector


# --- field selectors ------------------------------------------------------------------------------------------

POD: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "web-1", "namespace": "prod", "labels": {"app": "web"}},
    "spec": {
        "nodeName": "node-a",
        "restartPolicy": "Always",
        "schedulerName": "default-scheduler",
        "serviceAccountName": "runner",
    },
    "status": {"phase": "Running", "podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.7"}, {"ip": "fd00::7"}]},
}
HOST_POD: dict[str, Any] = {
    "metadata": {"name": "h", "namespace": "kube-system"},
    "spec": {"hostNetwork": True},
    "status": {"podIP": "192.168.1.2"},
}
EVENT: dict[str, Any] = {
    "metadata": {"name": "web-1.17", "namespace": "prod"},
    "involvedObject": {
        "kind": "Pod",
        "namespace": "prod",
        "name": "web-1",
        "uid": "u-1",
        "apiVersion": "v1",
        "resourceVersion": "42",
        "fieldPath": "spec.containers{app}",
    },
    "reason": "Scheduled",
    "type": "Normal",
    "source": {"component": "kubelet"},
    "reportingComponent": "",
}
NEW_EVENT: dict[str, Any] = {
    "metadata": {"name": "e", "namespace": "prod"},
    "reason": "ScalingReplicaSet",
    "type": "Warning",
    "reportingComponent": "gpuscale-operator",
}
NODE: dict[str, Any] = {"metadata": {"name": "node-a"}, "spec": {}}
CORDONED: dict[str, Any] = {"metadata": {"name": "node-b"}, "spec": {"unschedulable": True}}
JOB: dict[str, Any] = {"metadata": {"name": "j", "namespace": "prod"}, "status": {"succeeded": 2}}
FRESH_JOB: dict[str, Any] = {"metadata": {"name": "j0", "namespace": "prod"}, "status": {}}
SECRET: dict[str, Any] = {"metadata": {"name": "tls", "namespace": "prod"}, "type": "kubernetes.io/tls"}
SERVICE: dict[str, Any] = {
    "metadata": {"name": "svc", "namespace": "prod"},
    "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10"},
}
NAMESPACE: dict[str, Any] = {"metadata": {"name": "prod"}, "status": {"phase": "Active"}}
RC: dict[str, Any] = {"metadata": {"name": "rc", "namespace": "prod"}, "status": {"replicas": 3}}
DEPLOYMENT: dict[str, Any] = {"metadata": {"name": "d", "namespace": "prod"}, "spec": {"replicas": 2}}
WIDGET: dict[str, Any] = {
    "metadata": {"name": "w", "namespace": "prod"},
    "spec": {"color": "red", "size": 3, "enabled": True, "a.b": "dotted"},
}
BARE_WIDGET: dict[str, Any] = {"metadata": {"name": "w2", "namespace": "prod"}, "spec": {}}
WIDGET_FIELDS = (".spec.color", ".spec.size", "spec.enabled", ".spec['a.b']")

FIELD_MATCHES: list[tuple[str, str, str, dict[str, Any], bool]] = [
    # resource, group, selector, object, selected?
    ("pods", "", "", POD, True),
    ("pods", "", ",", POD, True),
    ("pods", "", "metadata.name=web-1", POD, True),
    ("pods", "", "metadata.name==web-1", POD, True),
    ("pods", "", "metadata.name!=web-1", POD, False),
    ("pods", "", "metadata.name=web-1,metadata.namespace=prod", POD, True),
    ("pods", "", "metadata.name=web-1,metadata.namespace=dev", POD, False),
    ("pods", "", "spec.nodeName=node-a", POD, True),
    ("pods", "", "spec.host=node-a", POD, True),
    ("pods", "", "spec.nodeName=", HOST_POD, True),  # missing reads as ""
    ("pods", "", "spec.nodeName!=", HOST_POD, False),
    (
        "pods",
        "",
        "spec.restartPolicy=Always,spec.schedulerName=default-scheduler,spec.serviceAccountName=runner",
        POD,
        True,
    ),
    ("pods", "", "status.phase=Running", POD, True),
    ("pods", "", "status.phase!=Running", POD, False),
    ("pods", "", "status.phase!=Succeeded,status.phase!=Failed", POD, True),
    ("pods", "", "status.podIP=10.0.0.7", POD, True),  # podIPs[0] wins, as in the real field set
    ("pods", "", "status.podIP=192.168.1.2", HOST_POD, True),  # no podIPs: podIP
    ("pods", "", "status.podIPs=10.0.0.7", POD, False),  # accepted, but never in the real field set
    ("pods", "", "status.nominatedNodeName=", POD, True),
    ("pods", "", "spec.hostNetwork=false", POD, True),  # absent bool reads "false", not ""
    ("pods", "", "spec.hostNetwork=", POD, False),
    ("pods", "", "spec.hostNetwork=true", HOST_POD, True),
    ("pods", "", "spec.hostNetwork!=true", HOST_POD, False),
    (
        "events",
        "",
        "involvedObject.kind=Pod,involvedObject.name=web-1,involvedObject.namespace=prod",
        EVENT,
        True,
    ),
    (
        "events",
        "",
        "involvedObject.uid=u-1,involvedObject.apiVersion=v1,involvedObject.resourceVersion=42",
        EVENT,
        True,
    ),
    ("events", "", "involvedObject.fieldPath=spec.containers{app}", EVENT, True),
    ("events", "", "involvedObject.kind!=Pod", EVENT, False),
    ("events", "", "reason=Scheduled,type=Normal", EVENT, True),
    ("events", "", "type!=Normal", EVENT, False),
    ("events", "", "type!=Normal", NEW_EVENT, True),
    ("events", "", "source=kubelet", EVENT, True),
    ("events", "", "source=gpuscale-operator", NEW_EVENT, True),  # no source: the reporting component
    ("events", "", "reportingComponent=gpuscale-operator", NEW_EVENT, True),
    ("events", "", "involvedObject.name=", NEW_EVENT, True),
    ("nodes", "", "spec.unschedulable=false", NODE, True),
    ("nodes", "", "spec.unschedulable=true", CORDONED, True),
    ("nodes", "", "spec.unschedulable!=true,metadata.name=node-a", NODE, True),
    ("namespaces", "", "status.phase=Active,metadata.name=prod", NAMESPACE, True),
    ("secrets", "", "type=kubernetes.io/tls", SECRET, True),
    ("secrets", "", "type!=kubernetes.io/tls", SECRET, False),
    ("services", "", "spec.type=ClusterIP,spec.clusterIP=10.96.0.10", SERVICE, True),
    ("replicationcontrollers", "", "status.replicas=3", RC, True),
    ("jobs", "batch", "status.successful=2", JOB, True),
    ("jobs", "batch", "status.successful=0", FRESH_JOB, True),  # absent count reads "0"
    ("deployments", "apps", "metadata.namespace=prod,metadata.name!=other", DEPLOYMENT, True),
    ("configmaps", "", "metadata.name=d", DEPLOYMENT, True),
]


@pytest.mark.parametrize(("resource", "group", "text", "obj", "expected"), FIELD_MATCHES)
def test_field_selector_matches_builtins(
    resource: str, group: str, text: str, obj: dict[str, Any], expected: bool
) -> None:
    selector = FieldSelector.parse(text, resource, group=group)
    assert selector.matches(obj) is expected
    assert selector.matches_object(obj) is expected
    assert FieldSelector.parse(str(selector), resource, group=group) == selector


CR_MATCHES: list[tuple[str, dict[str, Any], bool]] = [
    # selector on a widget CR with WIDGET_FIELDS selectable, object, selected?
    ("metadata.name=w", WIDGET, True),
    ("metadata.namespace=prod", WIDGET, True),
    ("spec.color=red", WIDGET, True),
    ("spec.color!=red", WIDGET, False),
    ("spec.color=", BARE_WIDGET, True),  # missing reads as ""
    ("spec.color!=red", BARE_WIDGET, True),
    ("spec.size=3", WIDGET, True),  # integers read in decimal
    ("spec.enabled=true", WIDGET, True),  # booleans read "true"/"false"
    ("spec.enabled=", BARE_WIDGET, True),  # a CR's missing boolean stays "", unlike a built-in's
    ("spec['a.b']=dotted", WIDGET, True),
    ("spec.color=red,spec.size!=4,metadata.name=w", WIDGET, True),
]


@pytest.mark.parametrize(("text", "obj", "expected"), CR_MATCHES)
def test_field_selector_matches_custom_resources(text: str, obj: dict[str, Any], expected: bool) -> None:
    selector = FieldSelector.parse(text, "widgets", WIDGET_FIELDS, group="example.com")
    assert selector.matches(obj) is expected
    assert FieldSelector.parse(str(selector), "widgets", WIDGET_FIELDS, group="example.com") == selector


FIELD_CANONICAL: list[tuple[str, str, str]] = [
    # resource, selector, str()
    ("pods", "", ""),
    ("pods", "metadata.namespace=b,metadata.name=a", "metadata.name=a,metadata.namespace=b"),
    ("pods", "metadata.name==a", "metadata.name=a"),
    ("pods", "spec.host=n", "spec.nodeName=n"),
    ("pods", "status.phase!=Running,,", "status.phase!=Running"),
    ("configmaps", r"metadata.name=a\,b\=c\\d", r"metadata.name=a\,b\=c\\d"),
]


@pytest.mark.parametrize(("resource", "text", "canonical"), FIELD_CANONICAL)
def test_field_selector_canonical_text(resource: str, text: str, canonical: str) -> None:
    selector = FieldSelector.parse(text, resource)
    assert str(selector) == canonical
    assert FieldSelector.parse(canonical, resource) == selector


def test_escaped_values_are_matched_unescaped() -> None:
    selector = FieldSelector.parse(r"metadata.name=a\,b\=c\\d", "configmaps")
    assert selector.terms[0].value == "a,b=c\\d"
    assert selector.matches({"metadata": {"name": "a,b=c\\d"}})
    assert not selector.matches({"metadata": {"name": r"a\,b\=c\\d"}})


def test_empty_field_selector_selects_everything() -> None:
    assert FieldSelector.parse("", "pods").empty
    assert FieldSelector.everything().matches({})
    assert not FieldSelector.parse("metadata.name=x", "pods").empty


def test_field_values_are_what_the_real_get_attrs_gives() -> None:
    values = FieldSelector.parse("", "pods").field_values(POD)
    assert values["spec.hostNetwork"] == "false"
    assert values["status.podIP"] == "10.0.0.7"
    assert "status.podIPs" not in values
    custom = FieldSelector.parse("", "widgets", WIDGET_FIELDS)
    assert custom.field_values(WIDGET) == {
        "metadata.name": "w",
        "metadata.namespace": "prod",
        "spec.color": "red",
        "spec.size": "3",
        "spec.enabled": "true",
        "spec['a.b']": "dotted",
    }


DEFAULT_ONLY = '"{}" is not a known field selector: only "metadata.name", "metadata.namespace"'
FIELD_INVALID: list[tuple[str, dict[str, Any], str, str]] = [
    # resource, parse options, selector, the real server's message
    ("pods", {}, "spec.containers=x", "field label not supported: spec.containers"),
    (
        "pods",
        {},
        "metadata.name = a",
        "field label not supported: metadata.name ",
    ),  # no trimming, as upstream
    ("pods", {}, "=a", "field label not supported: "),
    ("events", {}, "involvedObject.labels=x", "field label not supported: involvedObject.labels"),
    ("nodes", {}, "metadata.namespace=x", "field label not supported: metadata.namespace"),
    ("namespaces", {}, "metadata.namespace=x", "field label not supported: metadata.namespace"),
    ("secrets", {}, "data=x", "field label not supported: data"),
    ("jobs", {"group": "batch"}, "status.active=1", 'field label "status.active" not supported for Job'),
    ("deployments", {"group": "apps"}, "spec.replicas=1", DEFAULT_ONLY.format("spec.replicas")),
    ("replicasets", {"group": "apps"}, "status.replicas=1", DEFAULT_ONLY.format("status.replicas")),
    ("configmaps", {}, "data.x=1", DEFAULT_ONLY.format("data.x")),
    ("events", {"group": "events.k8s.io"}, "reason=x", DEFAULT_ONLY.format("reason")),
    ("widgets", {"custom": True}, "spec.color=red", "field label not supported: spec.color"),
    ("widgets", {"extra": [".spec.size"]}, "spec.color=red", "field label not supported: spec.color"),
    (
        "widgets",
        {"extra": [], "cluster_scoped": True},
        "metadata.namespace=x",
        "field label not supported: metadata.namespace",
    ),
    ("pods", {}, "metadata.name", "invalid selector: 'metadata.name'; can't understand 'metadata.name'"),
    (
        "pods",
        {},
        "metadata.name=a,bogus",
        "invalid selector: 'metadata.name=a,bogus'; can't understand 'bogus'",
    ),
    ("pods", {}, "metadata.name=a=b", "invalid field selector: unescaped character in value: 61"),
    ("pods", {}, "metadata.name=a\\x", "invalid field selector: invalid escape sequence: \\x"),
    ("pods", {}, "metadata.name=a\\", "invalid field selector: invalid escape sequence: \\"),
    (
        "pods",
        {},
        "metadata.name in (a)",
        "invalid selector: 'metadata.name in (a)'; can't understand 'metadata.name in (a)'",
    ),
    # Terms are sorted before they are checked, so with two bad ones the first in order is named.
    ("pods", {}, "zzz=1,aaa=1", "field label not supported: aaa"),
]


@pytest.mark.parametrize(("resource", "options", "text", "message"), FIELD_INVALID)
def test_field_selector_errors_are_400_with_the_real_wording(
    resource: str, options: dict[str, Any], text: str, message: str
) -> None:
    err = bad_request(FieldSelector.parse, text, resource, **options)
    assert err.message == message


def test_custom_resource_namespace_field_depends_on_scope() -> None:
    namespaced = FieldSelector.parse("metadata.namespace=prod", "widgets", custom=True)
    assert namespaced.matches(WIDGET)
    assert not namespaced.matches({"metadata": {"name": "w", "namespace": "dev"}})
    bad_request(FieldSelector.parse, "metadata.namespace=prod", "widgets", custom=True, cluster_scoped=True)


# --- selections and watch membership --------------------------------------------------------------------------


def test_selection_needs_both_selectors() -> None:
    selection = Selection.from_query("app=web", "status.phase=Running", "pods")
    assert selection.matches(POD)
    assert not selection.matches(POD | {"status": {"phase": "Pending"}})
    assert not selection.matches(POD | {"metadata": {"name": "web-1", "labels": {"app": "db"}}})
    everything = Selection.from_query(None, None, "pods")
    assert everything.empty
    assert everything.matches({})
    assert not selection.empty
    assert str(selection.label_selector) == "app=web"
    assert str(selection.field_selector) == "status.phase=Running"


def test_selection_reports_either_bad_selector() -> None:
    assert bad_request(Selection.from_query, "a b", None, "pods").message.startswith(
        "unable to parse requirement"
    )
    assert bad_request(Selection.from_query, None, "x=1", "pods").message == "field label not supported: x"


def pod(labels: dict[str, str], phase: str = "Running") -> dict[str, Any]:
    return {"metadata": {"name": "p", "namespace": "prod", "labels": labels}, "status": {"phase": phase}}


BY_LABEL = LabelSelector.parse("app=web")
BY_FIELD = FieldSelector.parse("status.phase=Running", "pods")
BY_BOTH = Selection(BY_LABEL, BY_FIELD)

MEMBERSHIP: list[
    tuple[str, ObjectMatcher, dict[str, Any] | None, dict[str, Any] | None, tuple[bool, bool], str | None]
] = [
    # case, selector, old object, new object, (was_in, is_in), event a filtered watch gets
    (
        "label: stays in",
        BY_LABEL,
        pod({"app": "web"}),
        pod({"app": "web", "x": "1"}),
        (True, True),
        "MODIFIED",
    ),
    ("label: enters", BY_LABEL, pod({"app": "db"}), pod({"app": "web"}), (False, True), "ADDED"),
    ("label: leaves", BY_LABEL, pod({"app": "web"}), pod({"app": "db"}), (True, False), "DELETED"),
    ("label: stays out", BY_LABEL, pod({"app": "db"}), pod({}), (False, False), None),
    ("label: created in", BY_LABEL, None, pod({"app": "web"}), (False, True), "ADDED"),
    ("label: created out", BY_LABEL, None, pod({"app": "db"}), (False, False), None),
    ("label: deleted while in", BY_LABEL, pod({"app": "web"}), None, (True, False), "DELETED"),
    ("label: deleted while out", BY_LABEL, pod({"app": "db"}), None, (False, False), None),
    ("field: starts running", BY_FIELD, pod({}, "Pending"), pod({}, "Running"), (False, True), "ADDED"),
    ("field: finishes", BY_FIELD, pod({}, "Running"), pod({}, "Succeeded"), (True, False), "DELETED"),
    (
        "field: keeps running",
        BY_FIELD,
        pod({}, "Running"),
        pod({"a": "b"}, "Running"),
        (True, True),
        "MODIFIED",
    ),
    (
        "both: label enters, phase leaves",
        BY_BOTH,
        pod({"app": "db"}, "Running"),
        pod({"app": "web"}, "Failed"),
        (False, False),
        None,
    ),
    (
        "both: the last one to hold",
        BY_BOTH,
        pod({"app": "web"}, "Pending"),
        pod({"app": "web"}, "Running"),
        (False, True),
        "ADDED",
    ),
    (
        "nothing: never in",
        LabelSelector.nothing(),
        pod({"app": "web"}),
        pod({"app": "web"}),
        (False, False),
        None,
    ),
]


@pytest.mark.parametrize(
    ("case", "selector", "old", "new", "membership", "event"), MEMBERSHIP, ids=[row[0] for row in MEMBERSHIP]
)
def test_membership_and_watch_event(
    case: str,
    selector: ObjectMatcher,
    old: dict[str, Any] | None,
    new: dict[str, Any] | None,
    membership: tuple[bool, bool],
    event: str | None,
) -> None:
    assert changed_membership(selector, old, new) == membership, case
    assert watch_event_type(selector, old, new) == event, case
