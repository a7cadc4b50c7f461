from __future__ import annotations

import io

import pytest

from cachehook.logs import STDERR, STDOUT, LogRecorder, decode, replay


def test_replay_keeps_order_and_streams() -> None:
    recorder = LogRecorder()
    recorder.add(STDOUT, b"one\n")
    recorder.add(STDERR, b"two\n")
    recorder.add(STDOUT, b"three\n")
    out, err = io.BytesIO(), io.BytesIO()
    replay(recorder.getvalue(), stdout=out, stderr=err)
    assert out.getvalue() == b"one\nthree\n"
    assert err.getvalue() == b"two\n"
    assert list(decode(recorder.getvalue())) == [
        (STDOUT, b"one\n"),
        (STDERR, b"two\n"),
        (STDOUT, b"three\n"),
    ]


@pytest.mark.parametrize("data", [b"\x01\x00", b"\x01\x00\x00\x00\x09abc", b"\x07\x00\x00\x00\x00"])
def test_malformed_logs_raise(data: bytes) -> None:
    with pytest.raises(ValueError, match="log"):
        list(decode(data))
