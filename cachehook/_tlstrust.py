"""The root that verified an https remote last time, so that the next hit loads that one root
instead of parsing a whole CA bundle.

httpx's default context (``_direct.tls_context``) loads ``SSL_CERT_FILE`` or certifi's bundle:
OpenSSL parses every one of its ~150 roots, ~50 ms, more than the rest of a remote hit. A host
is verified by one of them. ``RootMemory`` keeps, per (bundle file, host, port), the PEM block
of the root that ended the chain OpenSSL verified with the whole bundle (the verified chain's
last certificate, from ``get_verified_chain``), in ``<cache dir>/tls/roots.json`` (owner-only).
The next connection loads only that block (``hinted_context``): the same context as the whole
bundle's (``ssl.create_default_context``, so the same verify mode, flags, hostname check;
ALPN as ``_direct`` sets it), with fewer roots, so it can only refuse more. When it refuses,
``_direct`` does the handshake again with the whole bundle, and what that refuses is refused
with today's error; what it accepts is remembered.

The memory is a hint, not trust (a cache directory may come from elsewhere, e.g. a CI cache):
a remembered block is loaded only when it occurs verbatim, at the start of a line and ending one,
in the bundle file as it is now (read whole, a substring test, no parsing), the file's size and
mtime are those it had when the block was remembered, and the file has no ``TRUSTED
CERTIFICATE`` or ``X509 CRL`` blocks (whose extra data could restrict a root). So a tampered
memory cannot add a root, and a root removed from the bundle is no longer loaded.
``SSL_CERT_DIR`` (OpenSSL reads only the root it needs from a hashed directory) is left as it
is, and so is every connection where the verified chain cannot be read (it needs
``_ssl._SSLSocket.get_verified_chain``, in CPython 3.10 and later).
"""

from __future__ import annotations

import binascii
import contextlib
import itertools
import json
import os
import re
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import ssl
    from collections.abc import Mapping
    from pathlib import Path

__all__ = ["Bundle", "RootMemory", "bundle_path", "verified_root", "verifying_context"]

_BEGIN = "-----BEGIN CERTIFICATE-----"
_END = "-----END CERTIFICATE-----"
# Blocks whose data can restrict what a root verifies: with any of them, no hint is used.
_RESTRICTING = ("-----BEGIN TRUSTED CERTIFICATE-----", "-----BEGIN X509 CRL-----")
_BLOCK = re.compile(
    r"^-----BEGIN CERTIFICATE-----\r?\n([A-Za-z0-9+/=\r\n]*?)^-----END CERTIFICATE-----", re.M
)
_VERSION = 1
_MAX_ENTRIES = 64
_MAX_FILE = 1 << 20
_SERIAL = itertools.count()  # two threads of one process never share a temporary name


def verifying_context(
    *, cafile: str | None = None, capath: str | None = None, cadata: str | None = None
) -> ssl.SSLContext:
    """``ssl.create_default_context`` with these roots, and ALPN ``http/1.1`` (as httpcore sets
    it for HTTP/1.1): the one place both the whole bundle's context and a hint's are made."""
    import ssl

    context = ssl.create_default_context(cafile=cafile, capath=capath, cadata=cadata)
    context.set_alpn_protocols(["http/1.1"])
    return context


def bundle_path(environ: Mapping[str, str]) -> str | None:
    """The file httpx's default context loads (``SSL_CERT_FILE``, else certifi's bundle), or
    None for ``SSL_CERT_DIR``, which it prefers to certifi's."""
    if environ.get("SSL_CERT_FILE"):
        return environ["SSL_CERT_FILE"]
    if environ.get("SSL_CERT_DIR"):
        return None
    import certifi

    return certifi.where()


class Bundle(NamedTuple):
    """A CA bundle file as read now."""

    path: str
    size: int
    mtime_ns: int
    text: str

    @classmethod
    def read(cls, path: str) -> Bundle | None:
        try:
            with open(path, "rb") as file:
                stat = os.fstat(file.fileno())
                data = file.read()
        except OSError:
            return None
        return cls(path, stat.st_size, stat.st_mtime_ns, data.decode("latin-1"))

    def holds(self, block: str) -> bool:
        """Whether ``block`` is one certificate block of this file, verbatim, on lines of its own
        (OpenSSL reads a block only from a line that starts with ``-----BEGIN``)."""
        if not (block.startswith(_BEGIN) and block.endswith(_END) and block.count("-----") == 4):
            return False
        if any(marker in self.text for marker in _RESTRICTING):
            return False
        start = 0
        while (found := self.text.find(block, start)) >= 0:
            after = self.text[found + len(block) : found + len(block) + 2]
            is_line = after in ("", "\r\n") or after.startswith("\n")
            if is_line and (found == 0 or self.text[found - 1] == "\n"):
                return True
            start = found + 1
        return False

    def block_of(self, der: bytes) -> str | None:
        """The block of this file that holds the certificate ``der``, as it is written."""
        import ssl

        written = ssl.DER_cert_to_PEM_cert(der).strip()
        if self.holds(written):  # certifi's bundle: 64 columns, LF
            return written
        for found in _BLOCK.finditer(self.text):
            try:
                if binascii.a2b_base64(found.group(1)) == der and self.holds(found.group()):
                    return found.group()
            except binascii.Error:
                continue
        return None


def verified_root(sock: ssl.SSLSocket) -> bytes | None:
    """The last certificate (DER) of the chain this connection was verified with: the root from
    the trust store that ended it. None where the interpreter cannot tell."""
    try:
        sslobj = getattr(sock, "_sslobj", None)  # the public method is 3.13's only
        chain = getattr(sslobj, "get_verified_chain", lambda: None)()
        if not chain:
            return None
        root = chain[-1].public_bytes(2)  # _ssl.ENCODING_DER
    except (AttributeError, TypeError, ValueError, OSError):
        return None
    return root if isinstance(root, bytes) else None


class RootMemory:
    """Per (bundle, host, port), the root that verified that host last time (see the module
    docstring), kept in ``directory``."""

    def __init__(self, directory: Path, bundle: str) -> None:
        self._file = os.path.join(directory, "roots.json")
        self._bundle = bundle

    def hinted_context(self, host: str, port: int) -> ssl.SSLContext | None:
        """A context that trusts only the root remembered for ``host:port``, when the bundle still
        holds it verbatim; else None."""
        remembered = self._entries().get(self._key(host, port))
        if not isinstance(remembered, dict):
            return None
        block = remembered.get("root")
        bundle = Bundle.read(self._bundle)
        if not isinstance(block, str) or bundle is None:
            return None
        if [remembered.get("size"), remembered.get("mtime_ns")] != [bundle.size, bundle.mtime_ns]:
            return None
        if not bundle.holds(block):
            return None
        import ssl

        try:
            return verifying_context(cadata=block)
        except (ssl.SSLError, ValueError):
            return None

    def remember(self, sock: ssl.SSLSocket, host: str, port: int) -> None:
        """After a handshake verified with the whole bundle: keep the root that ended its chain."""
        der = verified_root(sock)
        bundle = Bundle.read(self._bundle) if der is not None else None
        block = bundle.block_of(der) if bundle is not None and der is not None else None
        if bundle is None or block is None:
            return
        entries = self._entries()
        entries.pop(self._key(host, port), None)
        entries[self._key(host, port)] = {
            "size": bundle.size,
            "mtime_ns": bundle.mtime_ns,
            "root": block,
        }
        while len(entries) > _MAX_ENTRIES:
            del entries[next(iter(entries))]
        self._save(entries)

    def _key(self, host: str, port: int) -> str:
        return f"{self._bundle}\n{host}:{port}"

    def _entries(self) -> dict[str, object]:
        try:
            with open(self._file, "rb") as file:
                data = file.read(_MAX_FILE + 1)
            found = json.loads(data) if len(data) <= _MAX_FILE else None
        except (OSError, ValueError):
            return {}
        if not isinstance(found, dict) or found.get("version") != _VERSION:
            return {}
        entries = found.get("roots")
        return entries if isinstance(entries, dict) else {}

    def _save(self, entries: dict[str, object]) -> None:
        data = json.dumps({"version": _VERSION, "roots": entries}, indent=1).encode()
        tmp = f"{self._file}.{os.getpid()}.{next(_SERIAL)}.tmp"
        try:
            os.makedirs(os.path.dirname(self._file), mode=0o700, exist_ok=True)
            descriptor = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with open(descriptor, "wb") as file:
                file.write(data)
            os.replace(tmp, self._file)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
