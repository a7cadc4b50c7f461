"""``cachehook serve``: options, refusals before start, loopback by default, clean stop."""

from __future__ import annotations

import importlib.util
import signal
import socket
from pathlib import Path

import pytest
from click.testing import CliRunner

from cachehook.cli import main
from cachehook.cli.serve import serve
from tests.server.conftest import SLASH, start_serve, write_tokens


def invoke(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(serve, list(args))
    code = result.exit_code
    if result.exception is not None and hasattr(result.exception, "exit_code"):
        code = result.exception.exit_code
    return code, result.output + str(result.exception or "")


def test_help_names_the_options() -> None:
    code, output = invoke("--help")
    assert code == 0
    for option in ("--host", "--port", "--storage", "--tokens", "--workers", "--max-body"):
        assert option in output
    assert "127.0.0.1" in output


def test_storage_and_tokens_are_required(tmp_path: Path) -> None:
    code, output = invoke("--tokens", str(tmp_path / "t.toml"))
    assert code == 2
    assert "--storage" in output


def test_a_missing_tokens_file_stops_before_serving(tmp_path: Path) -> None:
    assert main(["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tmp_path / "t")]) == 2


def test_a_malformed_tokens_file_stops_before_serving(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    tokens.write_text('[[token]]\nname = "x"\ntoken = "short"\nscopes = ["read"]\nteams = ["a"]\n')
    assert main(["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tokens)]) == 2
    assert "shorter than 16" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()


def test_max_body_beyond_max_size_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    args = ["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tokens)]
    assert main([*args, "--max-size", "1MiB", "--max-body", "2MiB"]) == 2
    assert "--max-body" in capsys.readouterr().err
    assert main([*args, "--max-body", "lots"]) == 2


def test_an_unusable_storage_directory_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    code = main(["serve", "--storage", str(blocker / "s"), "--tokens", str(tokens)])
    assert code == 2
    assert "cannot create the storage directory" in capsys.readouterr().err


def test_without_the_server_extra_it_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a)
    )
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    assert main(["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tokens)]) == 2
    assert "pip install '.[server]'" in capsys.readouterr().err


def _listening_addresses(port: int) -> set[str]:
    """Local addresses (hex, as the kernel shows them) listening on ``port``."""
    found = set()
    for table in (Path(SLASH, "proc", "net", "tcp"), Path(SLASH, "proc", "net", "tcp6")):
        try:
            lines = table.read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            address, _, hex_port = local.rpartition(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A = LISTEN
                found.add(address)
    return found


@pytest.mark.integration
@pytest.mark.parametrize(
    ("stop", "exit_code"), [(signal.SIGTERM, -signal.SIGTERM), (signal.SIGINT, 0)]
)
def test_it_binds_loopback_by_default_and_stops_gracefully(
    tmp_path: Path, stop: signal.Signals, exit_code: int
) -> None:
    server = start_serve(tmp_path / "serve", "--log-level", "info")
    try:
        assert _listening_addresses(server.port) == {"0100007F"}  # 127.0.0.1 only
        server.process.send_signal(stop)
        server.process.wait(10)
        # SIGTERM: a graceful shutdown, then the signal's own ending, as service managers expect
        assert server.process.returncode == exit_code
        log = server.log.read_text()
        assert "cachehook serve: http://127.0.0.1:" in log
        assert "Application shutdown complete" in log
        assert server.token() not in log
    finally:
        server.stop()


def test_a_port_in_use_is_refused_before_the_banner(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        args = ["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tokens)]
        assert main([*args, "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"port {port} on 127.0.0.1 is already in use" in err
    assert "pick another with --port N (or CACHEHOOK_SERVE_PORT)" in err
    assert "http://" not in err  # no banner


def test_an_object_store_needs_an_events_database_and_a_well_formed_url(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    assert main(["serve", "--storage", "s3://chk-bucket/x", "--tokens", str(tokens)]) == 2
    assert "needs --events-db" in capsys.readouterr().err
    db = ["--events-db", str(tmp_path / "e.sqlite3")]
    assert main(["serve", "--storage", "s3://No_Such", *db, "--tokens", str(tokens)]) == 2
    assert "the bucket must be" in capsys.readouterr().err


def test_an_unreachable_events_database_is_refused_without_its_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tokens = tmp_path / "tokens.toml"
    write_tokens(tokens)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        url = f"postgresql://chk:hunter2hunter2@127.0.0.1:{sock.getsockname()[1]}/db"
        args = ["serve", "--storage", str(tmp_path / "s"), "--tokens", str(tokens)]
        code = main([*args, "--events-db", url])
    assert code == 2
    err = capsys.readouterr().err
    assert "the event log postgresql://chk@127.0.0.1" in err
    assert "hunter2" not in err
