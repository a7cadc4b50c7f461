"""Patterns, headers and event bodies, checked without a server."""

from __future__ import annotations

import json

import pytest

from cachehook._hits import ArtifactMeta
from cachehook.server.validation import (
    HASH_RE,
    TEAM_RE,
    ApiError,
    parse_artifact_headers,
    parse_client_headers,
    parse_events,
    parse_hashes,
)

SESSION = "41f6c603-7ff5-4fa6-a2d3-962a1111e0d4"


@pytest.mark.parametrize("name", ["acme", "team_abc123", "my-team-url-slug", "A", "0"])
def test_team_names_that_pass(name: str) -> None:
    assert TEAM_RE.match(name)


@pytest.mark.parametrize(
    "name", ["", ".", "..", "a/b", "a\\b", "-a", "_a", "a.b", "a b", "a\n", "a" * 101, "é"]
)
def test_team_names_that_fail(name: str) -> None:
    assert not TEAM_RE.match(name)


@pytest.mark.parametrize(
    "value",
    [
        "86cc3cbba4671cb6",  # turbo
        "13488902816378295538.tar.gz",  # Nx with @vercel/remote-nx
        "12HKQaOmR5t5Uy6vdcQsNIiZgHGB",  # the example in Vercel's docs
        "a_b-c.d",
        "g",
        "a" * 256,
    ],
)
def test_artifact_ids_that_pass(value: str) -> None:
    assert HASH_RE.match(value)


@pytest.mark.parametrize(
    "value",
    ["", ".", "..", ".hidden", "ab/cd", "ab\\cd", "ab\n", "a b", "a%2F", "é", "a" * 257, "a:b"],
)
def test_artifact_ids_that_fail(value: str) -> None:
    assert not HASH_RE.match(value)


def test_events_are_parsed_with_defaults_and_rounding() -> None:
    body = [
        {"sessionId": SESSION.upper(), "source": "LOCAL", "event": "MISS", "hash": "12HKQaOmR5t5"},
        {
            "sessionId": SESSION,
            "source": "REMOTE",
            "event": "HIT",
            "hash": "86cc3cbba4671cb6",
            "duration": 400.6,
            "newField": "ignored",
        },
    ]
    first, second = parse_events(json.dumps(body).encode())
    assert (first.session_id, first.duration) == (SESSION, 0)
    assert (second.source, second.event, second.duration) == ("REMOTE", "HIT", 401)
    assert parse_events(b"[]") == []


def _event(session: object) -> bytes:
    return json.dumps(
        [{"sessionId": session, "source": "LOCAL", "event": "HIT", "hash": "a"}]
    ).encode()


@pytest.mark.parametrize("session", ["<id>", "x", "run 42 / ci", "s" * 128, "é-ü"])
def test_any_printable_session_id_is_accepted(session: str) -> None:
    (event,) = parse_events(_event(session))
    assert event.session_id == session


def test_a_refusal_names_the_field_and_has_the_spec_shape() -> None:
    with pytest.raises(ApiError) as caught:
        parse_events(_event(""))
    assert caught.value.status == 400
    assert caught.value.to_json() == {
        "error": {
            "code": "bad_request",
            "message": "[0].sessionId must be a string of 1-128 characters",
            "field": "[0].sessionId",
        }
    }


@pytest.mark.parametrize("session", ["s" * 129, "tab\there", "nul\x00", 42, None])
def test_bad_session_ids_are_refused(session: object) -> None:
    with pytest.raises(ApiError) as caught:
        parse_events(_event(session))
    assert caught.value.field == "[0].sessionId"


@pytest.mark.parametrize("depth", [33, 5000, 100_000])
def test_deep_json_is_a_400_not_a_crash(depth: int) -> None:
    body = b"[" * depth + b"]" * depth
    for parse in (parse_events, parse_hashes):
        with pytest.raises(ApiError) as caught:
            parse(body)
        assert caught.value.status == 400
        assert "nests deeper than 32" in caught.value.message


def test_json_nesting_up_to_the_limit_is_parsed() -> None:
    extra: object = "leaf"
    for _ in range(30):  # the array and the event are two levels more: 32 in all
        extra = [extra]
    body = json.dumps(
        [{"sessionId": "s", "source": "LOCAL", "event": "HIT", "hash": "a", "x": extra}]
    ).encode()
    assert len(parse_events(body)) == 1
    with pytest.raises(ApiError):
        parse_events(body.replace(b'"leaf"', b'["leaf"]'))


def test_client_headers() -> None:
    info = parse_client_headers(
        {"x-artifact-client-ci": "VERCEL", "x-artifact-client-interactive": "1"}
    )
    assert (info.ci, info.interactive) == ("VERCEL", 1)
    none = parse_client_headers({})
    assert (none.ci, none.interactive) == (None, None)
    for headers in (
        {"x-artifact-client-ci": "x" * 51},
        {"x-artifact-client-ci": "tab\there"},
        {"x-artifact-client-interactive": "-1"},
    ):
        with pytest.raises(ApiError):
            parse_client_headers(headers)


def test_artifact_headers() -> None:
    meta = parse_artifact_headers(
        {
            "x-artifact-duration": "1221",
            "x-artifact-tag": "dGFn",
            "x-artifact-dirty-hash": "ab" * 32,
        }
    )
    assert meta == ArtifactMeta(duration_ms=1221, tag="dGFn", dirty_hash="ab" * 32)
    assert parse_artifact_headers({}) == ArtifactMeta()
    with pytest.raises(ApiError) as caught:
        parse_artifact_headers({"x-artifact-duration": "١٢"})  # non-ASCII digits
    assert caught.value.field == "x-artifact-duration"


def test_hash_queries() -> None:
    assert parse_hashes(b'{"hashes": ["ab", "cd", "ab"]}') == ["ab", "cd"]
    for body, field in (
        (b"[]", "hashes"),
        (b'{"hashes": "ab"}', "hashes"),
        (b'{"hashes": ["ab", "../x"]}', "hashes[1]"),
        (json.dumps({"hashes": ["ab"] * 1001}).encode(), "hashes"),
        (b"{", "body"),
    ):
        with pytest.raises(ApiError) as caught:
            parse_hashes(body)
        assert caught.value.field == field
