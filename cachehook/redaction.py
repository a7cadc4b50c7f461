"""The remote cache's secrets: kept out of the wrapped command, the task key and stored logs.

The secrets are the token and the signature key, in the variables that give them
(``CACHEHOOK_TOKEN``, ``CACHEHOOK_REMOTE_CACHE_SIGNATURE_KEY`` and their ``TURBO_`` fallbacks).
A wrapped command does not see the ``CACHEHOOK_`` ones, nor a ``TURBO_`` one whose value is the
secret in use, unless the task lists it in ``pass-env``; ``--env``/``env`` refuses them by name
and leaves them out of a prefix (issue 10). A value shorter than ``MIN_SECRET_LENGTH`` is not
searched for in text: a one-letter token would mangle every message.
"""

from __future__ import annotations

import bisect
from typing import TYPE_CHECKING

from cachehook.errors import ConfigError

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

__all__ = [
    "MIN_SECRET_LENGTH",
    "REDACTED",
    "SECRET_ENV_NAMES",
    "child_environ",
    "leave_out_secrets",
    "redact_log",
    "refuse_secret_env",
    "scrub",
    "secret_values",
]

MIN_SECRET_LENGTH = 8
REDACTED = "<redacted>"
_OWN = ("CACHEHOOK_TOKEN", "CACHEHOOK_REMOTE_CACHE_SIGNATURE_KEY")
_FALLBACKS = ("TURBO_TOKEN", "TURBO_REMOTE_CACHE_SIGNATURE_KEY")
SECRET_ENV_NAMES = (*_OWN, *_FALLBACKS)


def secret_values(environ: Mapping[str, str]) -> tuple[str, ...]:
    """The secrets ``environ`` holds that are long enough to look for, longest first."""
    values = {environ.get(name, "") for name in SECRET_ENV_NAMES}
    return tuple(sorted((v for v in values if len(v) >= MIN_SECRET_LENGTH), key=len, reverse=True))


def _forms(secret: str) -> Iterable[str]:
    # As the text may show it: whole, trimmed, escaped inside a repr, percent-encoded.
    from urllib.parse import quote

    for form in (secret, secret.strip(), repr(secret)[1:-1], quote(secret, safe="")):
        if len(form) >= MIN_SECRET_LENGTH:
            yield form


def scrub(text: str, secrets: Iterable[str | None], *, placeholder: str = REDACTED) -> str:
    """``text`` with every form of each secret (of a sensible length) replaced."""
    for secret in secrets:
        if secret and len(secret.strip()) >= MIN_SECRET_LENGTH:
            for form in _forms(secret):
                text = text.replace(form, placeholder)
    return text


def refuse_secret_env(names: Sequence[str], *, what: str = "--env") -> None:
    """Refuse a literal secret variable among the ``--env`` names (its digest would be shown).

    Raises:
        ConfigError: a name is one of ``SECRET_ENV_NAMES``.
    """
    for name in names:
        if name in SECRET_ENV_NAMES:
            msg = (
                f"{what} {name}: it holds a remote cache secret, and --dry-run and the stored "
                "manifest show a digest of every env value in the key; leave it out (change "
                "--salt to disown results made with another one)"
            )
            raise ConfigError(msg)


def leave_out_secrets(
    env: Mapping[str, str | None], names: Sequence[str]
) -> tuple[dict[str, str | None], list[str]]:
    """``env`` without the secret variables a prefix in ``names`` took; and those left out."""
    literal = set(names)
    kept = {k: v for k, v in env.items() if k not in SECRET_ENV_NAMES or k in literal}
    return kept, sorted(set(env) - set(kept))


def child_environ(
    environ: Mapping[str, str], *, in_use: Iterable[str | None], pass_env: Sequence[str] = ()
) -> dict[str, str] | None:
    """The environment for a wrapped command; None when it may have ``environ`` unchanged.

    Args:
        environ: cachehook's own environment.
        in_use: the secrets the remote session uses (a ``TURBO_`` variable holding one is
            dropped; one holding anything else is the command's own business).
        pass_env: variables to pass all the same.
    """
    used = {value for value in in_use if value}
    drop = {name for name in _OWN if name in environ}
    drop.update(name for name in _FALLBACKS if environ.get(name) in used)
    drop.difference_update(pass_env)
    if not drop:
        return None
    return {name: value for name, value in environ.items() if name not in drop}


def redact_log(log: bytes, secrets: Iterable[str]) -> bytes:
    """A recorded log (``logs`` frames) with each secret replaced in both streams.

    A secret split across two chunks of one stream is found too: each stream is searched as
    one text and the frames are cut again around the replacements.
    """
    from cachehook.logs import STDERR, STDOUT, decode, encode_frames

    needles = [s.encode() for s in secrets if len(s) >= MIN_SECRET_LENGTH]
    if not needles or not log:
        return log
    frames = list(decode(log))
    out: list[bytes] = [chunk for _, chunk in frames]
    for stream in (STDOUT, STDERR):
        indexes = [i for i, (s, _) in enumerate(frames) if s == stream]
        joined = b"".join(frames[i][1] for i in indexes)
        hits = _find_all(joined, needles)
        if hits:
            _cut(joined, hits, indexes, frames, out)
    return encode_frames(
        (frames[i][0], chunk) for i, chunk in enumerate(out) if chunk or not frames[i][1]
    )


def _find_all(text: bytes, needles: Sequence[bytes]) -> list[tuple[int, int]]:
    """Non-overlapping (start, end) of the needles in ``text``, leftmost first."""
    hits: list[tuple[int, int]] = []
    position = 0
    while True:
        found = [(text.find(n, position), -len(n)) for n in needles]
        found = [(start, size) for start, size in found if start >= 0]
        if not found:
            return hits
        start, size = min(found)
        hits.append((start, start - size))
        position = start - size


def _cut(
    joined: bytes,
    hits: list[tuple[int, int]],
    indexes: list[int],
    frames: list[tuple[int, bytes]],
    out: list[bytes],
) -> None:
    starts = [start for start, _ in hits]
    placeholder = REDACTED.encode()
    offset = 0
    position = 0  # the next byte of ``joined`` not yet written out
    for index in indexes:
        end = offset + len(frames[index][1])
        piece = bytearray()
        while position < end:
            hit = bisect.bisect_right(starts, position) - 1
            if hit >= 0 and hits[hit][0] <= position < hits[hit][1]:
                if position == hits[hit][0]:
                    piece += placeholder
                position = hits[hit][1]
                continue
            following = starts[hit + 1] if hit + 1 < len(starts) else len(joined)
            stop = min(following, end)
            piece += joined[position:stop]
            position = stop
        out[index] = bytes(piece)
        offset = end
