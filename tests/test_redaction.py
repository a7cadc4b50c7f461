"""The remote cache's secrets stay out of messages, the child's environment, the key and logs."""

from __future__ import annotations

import os
import socket
import sys
from typing import TYPE_CHECKING

import pytest

from cachehook.config import RemoteSettings, load_settings
from cachehook.errors import ConfigError, RemoteError
from cachehook.logs import STDERR, STDOUT, LogRecorder, decode
from cachehook.redaction import REDACTED, child_environ, redact_log, scrub
from cachehook.remote import RemoteCache
from cachehook.runner import Runner, TaskSpec

if TYPE_CHECKING:
    from pathlib import Path

TOKEN = "tok-SECRET-5d2e8a"


def test_scrub_finds_every_form_and_leaves_short_tokens_alone() -> None:
    text = f"raw {TOKEN} repr {TOKEN!r}\\r' quoted tok-SECRET-5d2e8a%0A"
    assert TOKEN not in scrub(text, [TOKEN + "\n"])
    assert "tok-SECRET" not in scrub(repr(TOKEN + "\r\n"), [TOKEN + "\r\n"])
    assert scrub("the remote cache answered", ["e"]) == "the remote cache answered"


def test_a_header_error_never_prints_a_token_with_a_newline() -> None:
    """httpx's own "Illegal header value b'Bearer ...\\n'" error used to carry it whole."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        remote = RemoteSettings(api=f"http://127.0.0.1:{port}", token=TOKEN + "\n", timeout=5)
        with RemoteCache(remote) as cache, pytest.raises(RemoteError) as caught:
            cache.exists("ab" * 16)
    shown = str(caught.value)
    assert "Illegal header value" in shown or "header" in shown.lower()
    assert "tok-SECRET" not in shown


def test_the_token_is_not_passed_to_the_command_unless_listed() -> None:
    environ = {"CACHEHOOK_TOKEN": TOKEN, "TURBO_TOKEN": "turbo-own-token", "PATH": "/bin"}
    child = child_environ(environ, in_use=[TOKEN])
    assert child == {"TURBO_TOKEN": "turbo-own-token", "PATH": "/bin"}
    in_use = child_environ({"TURBO_TOKEN": TOKEN, "PATH": "/bin"}, in_use=[TOKEN])
    assert in_use == {"PATH": "/bin"}, "TURBO_TOKEN holding the token in use is dropped"
    kept = child_environ(environ, in_use=[TOKEN], pass_env=["CACHEHOOK_TOKEN"])
    assert kept is None, "everything passes: the environment is left as it is"


def test_a_log_is_redacted_across_chunk_boundaries() -> None:
    recorder = LogRecorder()
    recorder.add(STDOUT, b"token=" + TOKEN[:5].encode())
    recorder.add(STDERR, b"between")
    recorder.add(STDOUT, TOKEN[5:].encode() + b" and again " + TOKEN.encode() + b"!")
    log = redact_log(recorder.getvalue(), [TOKEN])
    stdout = b"".join(chunk for stream, chunk in decode(log) if stream == STDOUT)
    stderr = b"".join(chunk for stream, chunk in decode(log) if stream == STDERR)
    assert stdout == f"token={REDACTED} and again {REDACTED}!".encode()
    assert stderr == b"between"


_PRINT_ENV = "import os; print(os.environ.get('CACHEHOOK_TOKEN', 'absent'))"


def _runner(root: Path, monkeypatch: pytest.MonkeyPatch, notices: list[str]) -> Runner:
    monkeypatch.setenv("CACHEHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("CACHEHOOK_API", "http://127.0.0.1:9")
    settings = load_settings(cwd=root, environ=dict(os.environ))
    return Runner(settings, on_notice=notices.append, detach_events=True)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    (tmp_path / "pyproject.toml").write_text("")
    (tmp_path / "in.txt").write_text("x")
    return tmp_path


def test_the_command_does_not_see_the_token_and_its_log_is_redacted(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notices: list[str] = []
    runner = _runner(root, monkeypatch, notices)
    try:
        command = (sys.executable, "-c", _PRINT_ENV)
        spec = TaskSpec(command=command, inputs=("in.txt",), cwd=root)
        result = runner.run(runner.prepare(spec), execute=None)
        assert b"absent" in result.log
        passing = TaskSpec(
            command=(*command, "passed"),
            inputs=("in.txt",),
            cwd=root,
            pass_env=("CACHEHOOK_TOKEN",),
        )
        result = runner.run(runner.prepare(passing))
        assert TOKEN.encode() not in result.log
        assert REDACTED.encode() in result.log
        store = runner.store
        assert store is not None
        meta = store.get_meta(result.key)
        assert meta is not None
        assert TOKEN.encode() not in (store.get_log(result.key, meta) or b"")
    finally:
        if runner._usage is not None:
            runner._usage.detached.clear()  # no flusher left behind
        runner.close()


def test_env_refuses_the_secrets_by_name_and_leaves_them_out_of_a_prefix(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notices: list[str] = []
    runner = _runner(root, monkeypatch, notices)
    try:
        for name in ("CACHEHOOK_TOKEN", "TURBO_REMOTE_CACHE_SIGNATURE_KEY"):
            spec = TaskSpec(command=("true",), inputs=("in.txt",), env=(name,), cwd=root)
            with pytest.raises(ConfigError, match=f"--env {name}: it holds a remote cache secret"):
                runner.prepare(spec)
        monkeypatch.setenv("CACHEHOOK_COLOUR", "blue")
        spec = TaskSpec(command=("true",), inputs=("in.txt",), env=("CACHEHOOK*",), cwd=root)
        prepared = runner.prepare(spec)
        names = [name for name, _ in prepared.manifest.env]
        assert "CACHEHOOK_COLOUR" in names
        assert "CACHEHOOK_TOKEN" not in names
        assert any("leaves out CACHEHOOK_TOKEN" in n for n in notices)
    finally:
        runner.close()
