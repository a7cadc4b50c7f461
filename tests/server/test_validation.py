"""Patterns, headers and event bodies, checked without a server."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.parametrize("value", ["", "g", "..", "ab/cd", "ab\n", "a" * 257, "0x12"])
def test_hashes_that_fail(value: str) -> None:
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


def test_a_refusal_names_the_field_and_has_the_spec_shape() -> None:
    with pytest.raises(ApiError) as caught:
        parse_events(b'[{"sessionId":"x","source":"LOCAL","event":"HIT","hash":"a"}]')
    assert caught.value.status == 400
    assert caught.value.to_json() == {
        "error": {
            "code": "bad_request",
            "message": "[0].sessionId must be a UUID",
            "field": "[0].sessionId",
        }
    }


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
    assert meta == {"duration": 1221, "tag": "dGFn", "dirty_hash": "ab" * 32}
    assert parse_artifact_headers({}) == {"duration": 0}
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
