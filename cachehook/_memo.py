"""The hit memo: a command repeated with nothing it looked at changed is replayed from stats.

Over 400 lines on purpose: the file format is written by the recording half and read by the
replay half, which must agree byte for byte, and the replay must import nothing else. The
recording half (the patches, the audit hook, the output tees, ``save``) is the seam to split
along if it grows.

A local hit still costs the full path: settings, the walk, the stat cache, the toolchain, the
hit record, each behind imports that dwarf the work (issue 11). Yet when a hit is repeated
with the same arguments, working directory and environment, and not one file or directory
that computing its key looked at has changed, its key, its result and what it printed are the
same again. The memo records exactly that, and the next identical invocation proves it with
one ``stat`` per path before anything else is imported (ccache's "direct mode" and git's index
work the same way).

**What is recorded** (:class:`Recorder`, around the full path of a hit): every path the key's
computation looked at and what it saw there: ``os.stat``, ``os.lstat``, ``os.access`` and
``os.readlink`` (patched for the duration), and every file opened and directory listed (an
audit hook, which sees pathlib, ``open``, ``os.scandir`` and the import system alike). A
directory is recorded by its own ``stat``: adding, removing or renaming an entry changes its
mtime, so a file that appears where a glob, ``.gitignore`` or ``PATH`` would find it is seen.
A path that was absent is recorded as absent. Each ``stat`` is kept whole (mode, inode,
device, size, mtime and ctime in nanoseconds). So is the source file of every cachehook module
loaded (most were imported before recording began), and anything under the cache directory
but cachehook's own entries there (a venv under ``~/.cache``, a project).

**When nothing is recorded** (a miss next time, never a false hit): the result was not a local
hit that restored nothing, or printed anything but its log and status line, or a remote cache
is configured (its usage events must be sent); a child process ran or a file outside the cache
was written while the key was computed; a path was seen with two different ``stat`` results;
or any path changed within the second before recording began (racy-git's rule, as in
:mod:`cachehook.statcache`: a same-size rewrite inside one timestamp tick would go unseen).
Lookups the patches cannot see (a ``DirEntry``'s cached type) are only trusted for what the
listed directory's own mtime covers; where the key depends on what a symlink resolves to, the
code asks ``os.stat`` (:func:`cachehook._reuse.is_dir`).
``CACHEHOOK_MEMO=0`` turns the memo off.

**The replay** (:func:`replay`, first thing in ``main``): the memo's name is an xxh3-128 of the
arguments, the working directory, the whole environment and which standard streams are
terminals, so any difference there is another memo. Every recorded path is ``stat``-ed again and
must give the same result; the hit records and artifacts the result came from must still be
in the store (same inode and size). Then the recorded output is written, the history lines
appended, the hit records touched (the store's LRU order), exactly as the full path would.
Anything unexpected (no memo, a bad version or digest, one changed path) returns None and the
full path runs. Imports: :mod:`os`, :mod:`sys`, :mod:`struct`, :mod:`time`, xxhash,
:mod:`cachehook.logs`.
"""

from __future__ import annotations

import _thread
import os
import struct
import sys
import time

import xxhash

from cachehook.logs import STDOUT, decode, encode_frames

TYPE_CHECKING = False  # not typing's: this module runs before anything else on a hit
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["HISTORY_LIMIT", "Capture", "Recorder", "abandon", "memo_dir", "memo_path", "replay"]

_VERSION = 1
_MAGIC = b"cachehook-memo %d " % _VERSION
_DIGEST_LENGTH = 32
_RACY_WINDOW_NS = 1_000_000_000
_MAX_MEMOS = 256
# (mode, inode, device, size, mtime_ns, ctime_ns); an absent path is all zeros (no file has
# mode 0).
_SIGNATURE = struct.Struct("<QQQQqq")
_ABSENT = bytes(_SIGNATURE.size)
_STORE_FILE = struct.Struct("<QQQB")  # inode, device, size, touch on replay
_SECTION = struct.Struct("<Q")
_ABSENT_ERRORS = (FileNotFoundError, NotADirectoryError)
_FOLLOW, _NO_FOLLOW = 0x46, 0x4C  # b"F": os.stat, b"L": os.lstat
_HISTORY_AT, _HISTORY_MS = b'"at":-1.0,', b'"ms":-1,'
HISTORY_LIMIT = 16 * 1024**2  # history.MAX_HISTORY_BYTES (importing history costs ~20 ms)
# Audit events after which no memo is written: the key's computation ran a program or
# changed the working directory (what a program reads cannot be recorded).
_UNRECORDABLE = frozenset(
    {
        "subprocess.Popen",
        "os.posix_spawn",
        "os.exec",
        "os.spawn",
        "os.system",
        "os.fork",
        "os.chdir",
    }
)
# Audit events that change a path (its first argument): allowed only inside the cache.
_WRITES = frozenset(
    {
        "os.chmod",
        "os.chown",
        "os.link",
        "os.mkdir",
        "os.remove",
        "os.rename",
        "os.rmdir",
        "os.symlink",
        "os.truncate",
        "os.utime",
        "shutil.rmtree",
    }
)
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND


# --------------------------------------------------------------------------- where memos live


def memo_dir(args: Sequence[str], environ: dict[str, str] | os._Environ[str]) -> str:
    """``<cache dir>/memo`` as the arguments and environment name the cache directory.

    ``cache-dir`` in ``pyproject.toml`` is not read here (that would need tomllib): the memo
    then lives in the default cache directory and names the real one inside.
    """
    cache_dir = None
    for index, arg in enumerate(args):
        if arg == "--":
            break
        name, has_value, value = arg.partition("=")
        if name == "--cache-dir":
            cache_dir = value if has_value else (args[index + 1] if index + 1 < len(args) else "")
    if cache_dir is None:
        cache_dir = environ.get("CACHEHOOK_CACHE_DIR")
    if not cache_dir:
        xdg = environ.get("XDG_CACHE_HOME")
        base = (
            xdg if xdg and os.path.isabs(xdg) else os.path.join(os.path.expanduser("~"), ".cache")
        )
        cache_dir = os.path.join(base, "cachehook")
    return os.path.join(os.path.abspath(os.path.expanduser(cache_dir)), "memo")


def memo_path(args: Sequence[str]) -> str | None:
    """The memo of this invocation: its arguments, cwd, environment and terminals.

    None when memos are off (``CACHEHOOK_MEMO=0``) or the working directory is gone.
    """
    environ = os.environ
    if environ.get("CACHEHOOK_MEMO", "1") == "0":
        return None
    try:
        cwd = os.getcwd()
    except OSError:
        return None
    hasher = xxhash.xxh3_128()
    parts = [b"%d" % _VERSION, os.fsencode(sys.executable), os.fsencode(cwd)]
    parts += [os.fsencode(arg) for arg in args]
    hasher.update(b"\0".join(parts) + b"\0\0")
    for name, value in sorted(environ.items()):
        hasher.update(b"%s=%s\0" % (os.fsencode(name), os.fsencode(value)))
    hasher.update(bytes(_is_terminal(fd) for fd in (0, 1, 2)))
    return os.path.join(memo_dir(args, environ), hasher.hexdigest())


def _is_terminal(fd: int) -> bool:
    try:
        return os.isatty(fd)
    except OSError:
        return False


# --------------------------------------------------------------------------- the replay


def replay(args: Sequence[str]) -> int | None:
    """Replay this invocation from its memo and return its exit code, or None to run it."""
    started = time.perf_counter()
    path = memo_path(args)
    if path is None or sys.stdout is None or sys.stderr is None:
        return None  # no memo, or a closed standard stream the full path reports on
    try:
        with open(path, "rb") as file:
            memo = _Memo.parse(file.read())
    except OSError:
        return None
    if memo is None or not memo.holds():
        return None
    _touch(path)  # used now: the newest memos are kept (_MAX_MEMOS)
    stdout, stderr = sys.stdout.buffer, sys.stderr.buffer
    for stream, chunk in memo.output:
        target = stdout if stream == STDOUT else stderr
        target.write(chunk)
        target.flush()
    if memo.history:
        _append_history(memo.history_path, memo.history, started)
    for store_path, (_, _, _, touch) in zip(memo.store_paths, memo.store_files, strict=True):
        if touch:
            _touch(store_path)
    return memo.exit_code


def _touch(path: str | bytes) -> None:
    # Not contextlib.suppress: importing contextlib costs more than a whole 1,000-path replay.
    try:  # noqa: SIM105
        os.utime(path)
    except OSError:
        pass


_SECTIONS = 11


class _Memo:
    """A memo as read back: what to check, then what to replay."""

    __slots__ = (
        "exit_code",
        "history",
        "history_path",
        "kinds",
        "output",
        "paths",
        "real_answers",
        "real_paths",
        "signatures",
        "store_files",
        "store_paths",
    )

    def __init__(self, sections: list[bytes]) -> None:
        self.paths = _split(sections[0])
        self.kinds, self.signatures = sections[1], sections[2]
        self.real_paths, self.real_answers = _split(sections[3]), _split(sections[4])
        self.store_paths = _split(sections[5])
        self.store_files = list(_STORE_FILE.iter_unpack(sections[6]))
        self.output = list(decode(sections[7]))  # checked whole before a byte is written
        self.history, self.history_path = sections[8], sections[9]
        self.exit_code = int(sections[10])

    @classmethod
    def parse(cls, data: bytes) -> _Memo | None:
        """The memo ``data`` holds, or None if anything about it is wrong."""
        start = len(_MAGIC) + _DIGEST_LENGTH + 1
        if not data.startswith(_MAGIC) or data[start - 1 : start] != b"\n":
            return None
        body = memoryview(data)[start:]
        if xxhash.xxh3_128_hexdigest(body).encode() != data[len(_MAGIC) : start - 1]:
            return None
        sections: list[bytes] = []
        offset = 0
        try:
            for _ in range(_SECTIONS):
                (size,) = _SECTION.unpack_from(body, offset)
                offset += _SECTION.size
                sections.append(bytes(body[offset : offset + size]))
                offset += size
            memo = cls(sections)
        except (struct.error, ValueError):
            return None
        consistent = (
            offset == len(body)
            and len(memo.kinds) == len(memo.paths)
            and len(memo.signatures) == len(memo.paths) * _SIGNATURE.size
            and len(memo.real_answers) == len(memo.real_paths)
            and len(memo.store_files) == len(memo.store_paths)
        )
        return memo if consistent else None

    def holds(self) -> bool:
        """Whether every path still looks as it did, and the store still has the result."""
        pack, size, signatures = _SIGNATURE.pack, _SIGNATURE.size, self.signatures
        stat, lstat, offset = os.stat, os.lstat, 0
        for path, kind in zip(self.paths, self.kinds, strict=True):  # the replay's hot loop
            try:
                st = stat(path) if kind == _FOLLOW else lstat(path)
            except _ABSENT_ERRORS:
                now = _ABSENT
            except OSError:
                return False
            else:
                now = pack(
                    st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns
                )
            if now != signatures[offset : offset + size]:
                return False
            offset += size
        realpath = os.path.realpath
        for path, answer in zip(self.real_paths, self.real_answers, strict=True):
            if realpath(path) != answer:
                return False
        for path, (inode, device, length, _) in zip(
            self.store_paths, self.store_files, strict=True
        ):
            try:
                st = stat(path)
            except OSError:
                return False
            if (st.st_ino, st.st_dev, st.st_size) != (inode, device, length):
                return False
        return True


def _split(section: bytes) -> list[bytes]:
    return section.split(b"\0") if section else []


def _append_history(path: bytes, lines: bytes, started: float) -> None:
    at = b"%.3f" % time.time()
    ms = b"%d" % round((time.perf_counter() - started) * 1000)
    text = lines.replace(_HISTORY_AT, b'"at":' + at + b",").replace(
        _HISTORY_MS, b'"ms":' + ms + b","
    )
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o600)
    except OSError:
        return
    try:
        os.write(fd, text)
        size = os.fstat(fd).st_size
    except OSError:
        return
    finally:
        os.close(fd)
    if size > HISTORY_LIMIT:
        from pathlib import Path

        from cachehook.history import _compact  # only when the history must shrink

        _compact(Path(os.fsdecode(path)))


# --------------------------------------------------------------------------- the recording

_ACTIVE: list[Recorder] = []  # the recorder the audit hook reports to (at most one)
_HOOKED = False
_PATCHED = ("stat", "lstat", "access", "readlink")


def _audit(event: str, args: tuple[Any, ...]) -> None:
    if not _ACTIVE:
        return
    recorder = _ACTIVE[0]
    if _thread.get_ident() in recorder.inside_realpath:
        return
    if event == "open":
        path, mode, flags = args
        writes = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
            isinstance(flags, int) and flags & _WRITE_FLAGS
        )
        if writes:
            recorder.wrote(path)
        else:
            recorder.look(path, follow=True)
    elif event in ("os.listdir", "os.scandir"):
        recorder.look(args[0] if args else None, follow=True)
    elif event in _WRITES:
        recorder.wrote(args[0] if args else None)
    elif event in _UNRECORDABLE:
        recorder.taint(f"{event} ran while the key was computed")


def abandon(reason: str) -> None:
    """Stop the recording under way, if any, and let it write no memo, for ``reason``.

    A restoring hit is never memoised, so the restore (``_restore``) ends the recording before it
    writes: otherwise every ``lstat`` it makes is recorded for nothing (issue 11).
    """
    for recorder in list(_ACTIVE):
        recorder.taint(reason)
        recorder.stop()


class Recorder:
    """Records what the full path of one invocation looks at.

    One at a time: :meth:`start` before anything computes the key, :meth:`stop` once the
    result is known, then :meth:`save`. Other threads' lookups are recorded too, which can
    only add paths (a miss, never a false hit).

    ``os.path.realpath`` is recorded by its answer, not by the ``lstat`` of every directory
    on the way (``/home/me`` changes whenever a dotfile is written; what ``realpath`` says
    about it does not).
    """

    def __init__(self, args: Sequence[str]) -> None:
        self.path = memo_path(args)
        self.seen: dict[tuple[str, bool], bytes] = {}
        self.realpaths: dict[str, str] = {}
        self.written: list[str] = []
        self.tainted: str | None = None if self.path is not None else "memos are off"
        self.inside_realpath: set[int] = set()  # threads in a realpath: record its answer only
        self._directories: dict[int, tuple[int, int, str]] = {}  # fd -> inode, device, path
        self._saved: dict[str, Callable[..., Any]] = {}
        self.started_ns = time.time_ns()

    # -- what the patched functions and the audit hook report

    def taint(self, reason: str) -> None:
        """No memo this time, for ``reason``."""
        if self.tainted is None:
            self.tainted = reason

    def _absolute(self, path: Any, dir_fd: int | None = None) -> str | None:
        if path is None:
            path = "."
        if isinstance(path, int):
            return None  # a descriptor: the path it was opened by is recorded
        try:
            text = os.fsdecode(os.fspath(path))
        except TypeError:
            self.taint(f"a path of type {type(path).__name__}")
            return None
        if os.path.isabs(text):
            return text
        if dir_fd is not None:
            base = self._directory_of(dir_fd)
            return None if base is None else os.path.join(base, text)
        return os.path.join(os.getcwd(), text)

    def _directory_of(self, fd: int) -> str | None:
        """The path a directory descriptor was opened by (Linux's ``/proc/self/fd``), asked
        once per descriptor and directory: the stat cache passes one for every input."""
        try:
            st = os.fstat(fd)
            known = self._directories.get(fd)
            if known is not None and known[:2] == (st.st_ino, st.st_dev):
                return known[2]
            base = str(self._saved["readlink"](f"/proc/self/fd/{fd}"))
        except OSError:
            self.taint("a path relative to a directory descriptor")
            return None
        self._directories[fd] = (st.st_ino, st.st_dev, base)
        return base

    def look(self, path: Any, *, follow: bool, dir_fd: int | None = None) -> None:
        """Record what ``path`` is now (for a file opened or a directory listed)."""
        absolute = self._absolute(path, dir_fd)
        if absolute is None or (absolute, follow) in self.seen:
            return
        stat = self._saved.get("stat" if follow else "lstat") or (os.stat if follow else os.lstat)
        try:
            st = stat(absolute)
        except _ABSENT_ERRORS:
            self._saw(absolute, follow, _ABSENT)
        except OSError as exc:
            self.taint(f"{absolute}: {exc.strerror}")
        else:
            self._saw(absolute, follow, _signature(st))

    def _saw(self, absolute: str, follow: bool, signature: bytes) -> None:
        earlier = self.seen.setdefault((absolute, follow), signature)
        if earlier != signature:
            self.taint(f"{absolute} changed while the key was computed")

    def wrote(self, path: Any) -> None:
        """Note a path written (allowed only inside the cache, checked by :meth:`save`)."""
        absolute = self._absolute(path)
        if absolute is not None:
            self.written.append(absolute)

    # -- the patches

    def start(self) -> Recorder:
        """Begin recording (patch ``os``, and install the audit hook once per process)."""
        global _HOOKED
        if self.tainted is not None:
            return self
        if _ACTIVE:
            self.taint("another recording is under way")
            return self
        if not _HOOKED:
            sys.addaudithook(_audit)
            _HOOKED = True
        self.started_ns = time.time_ns()
        for name in _PATCHED:
            self._saved[name] = getattr(os, name)
        self._saved["realpath"] = os.path.realpath
        os.stat = self._stat
        os.lstat = self._lstat
        os.access = self._access
        os.readlink = self._readlink
        os.path.realpath = self._realpath  # type: ignore[assignment]
        _ACTIVE.append(self)
        # The code that computes keys is part of the key: upgrading cachehook is a change.
        self.look(__file__, follow=True)
        return self

    def stop(self) -> None:
        """End recording; safe to call twice."""
        if self in _ACTIVE:
            _ACTIVE.remove(self)
            for name in _PATCHED:
                setattr(os, name, self._saved[name])
            os.path.realpath = self._saved["realpath"]

    def _recording(self) -> bool:
        return _thread.get_ident() not in self.inside_realpath

    def _stat(
        self, path: Any, *, dir_fd: int | None = None, follow_symlinks: bool = True
    ) -> os.stat_result:
        return self._observed("stat", path, dir_fd, follow=follow_symlinks)

    def _lstat(self, path: Any, *, dir_fd: int | None = None) -> os.stat_result:
        return self._observed("lstat", path, dir_fd, follow=False)

    def _observed(
        self, name: str, path: Any, dir_fd: int | None, *, follow: bool
    ) -> os.stat_result:
        kwargs: dict[str, Any] = {} if dir_fd is None else {"dir_fd": dir_fd}
        if name == "stat" and not follow:
            kwargs["follow_symlinks"] = False
        if not self._recording():
            found: os.stat_result = self._saved[name](path, **kwargs)
            return found
        try:
            st: os.stat_result = self._saved[name](path, **kwargs)
        except _ABSENT_ERRORS:
            absolute = self._absolute(path, dir_fd)
            if absolute is not None:
                self._saw(absolute, follow, _ABSENT)
            raise
        except OSError:
            self.taint(f"cannot stat {path!r}")
            raise
        absolute = self._absolute(path, dir_fd)
        if absolute is not None:
            self._saw(absolute, follow, _signature(st))
        return st

    def _access(self, path: Any, mode: int, **kwargs: Any) -> bool:
        if not self._recording():
            pass
        elif isinstance(kwargs.get("dir_fd"), int) or kwargs.get("effective_ids"):
            self.taint("os.access with a directory descriptor or effective ids")
        else:
            self.look(path, follow=bool(kwargs.get("follow_symlinks", True)))
        allowed: bool = self._saved["access"](path, mode, **kwargs)
        return allowed

    def _readlink(self, path: Any, *, dir_fd: int | None = None) -> Any:
        if self._recording():
            self.look(path, follow=False, dir_fd=dir_fd)
        kwargs: dict[str, Any] = {} if dir_fd is None else {"dir_fd": dir_fd}
        return self._saved["readlink"](path, **kwargs)

    def _realpath(self, path: Any, *, strict: bool = False) -> Any:
        thread = _thread.get_ident()
        if thread in self.inside_realpath:
            return self._saved["realpath"](path, strict=strict)
        self.inside_realpath.add(thread)
        try:
            answer = self._saved["realpath"](path, strict=strict)
        finally:
            self.inside_realpath.discard(thread)
        absolute = self._absolute(path)
        if absolute is not None and not strict:
            earlier = self.realpaths.setdefault(absolute, os.fsdecode(answer))
            if earlier != os.fsdecode(answer):
                self.taint(f"{absolute} resolved two ways while the key was computed")
        elif absolute is not None:
            self.taint("a strict realpath")  # its errors depend on more than its answer
        return answer

    # -- the memo

    def save(
        self,
        *,
        cache_dir: str,
        store_files: Sequence[tuple[str, bool]],
        output: bytes,
        history: bytes,
        history_path: str,
        exit_code: int,
    ) -> str | None:
        """Write the memo, or return why not (see the module docstring).

        Args:
            cache_dir: the cache directory: what cachehook keeps in it is not recorded
                (:data:`_OWN_ENTRIES`); anything else under it is, as any path.
            store_files: the hit records and artifacts the result came from, each with
                whether a replay touches it (the LRU order).
            output: what the invocation printed, as ``cachehook.logs`` frames.
            history: the history lines it appended, with ``at`` -1.0 and ``ms`` -1.
            history_path: the history file they go to.
            exit_code: its exit code.
        """
        self.stop()
        # The code that computes keys is part of the key, and most of it was imported before
        # recording began (an edit in an editable checkout; a .pyc is what an import opens).
        for name, module in list(sys.modules.items()):
            if name == "cachehook" or name.startswith("cachehook."):
                source = getattr(module, "__file__", None)
                if source:
                    self.look(source, follow=True)
        inside = (cache_dir.rstrip(os.sep) + os.sep, os.path.dirname(self.path or "") + os.sep)
        if self.tainted is None:
            for path in self.written:
                if not path.startswith(inside):
                    self.taint(f"{path} was written while the key was computed")
                    break
        if self.tainted is not None or self.path is None:
            return self.tainted
        # Racy against when recording began: a path changed after it was looked at, within
        # the tick of its recorded ctime, would keep its stat (racy git's rule).
        horizon = self.started_ns - _RACY_WINDOW_NS
        kept = [(path, follow, sig) for (path, follow), sig in self.seen.items()]
        kept = [item for item in kept if not _owned(item[0], inside)]
        for path, _, sig in kept:
            if sig != _ABSENT:
                _, _, _, _, mtime, ctime = _SIGNATURE.unpack(sig)
                if mtime >= horizon or ctime >= horizon:
                    return f"{path} changed within a second of the recording"
        files: list[bytes] = []
        for path, touch in store_files:
            try:
                st = os.stat(path)
            except OSError:
                return f"{path} is gone"
            files.append(_STORE_FILE.pack(st.st_ino, st.st_dev, st.st_size, touch))
        real = sorted(self.realpaths.items())
        sections = [
            b"\0".join(os.fsencode(path) for path, _, _ in kept),
            bytes(_FOLLOW if follow else _NO_FOLLOW for _, follow, _ in kept),
            b"".join(sig for _, _, sig in kept),
            b"\0".join(os.fsencode(path) for path, _ in real),
            b"\0".join(os.fsencode(answer) for _, answer in real),
            b"\0".join(os.fsencode(path) for path, _ in store_files),
            b"".join(files),
            output,
            history,
            os.fsencode(history_path),
            b"%d" % exit_code,
        ]
        return _write(self.path, sections)


# What cachehook keeps in its cache directory (and the memo directory): looking at these is
# not recorded (the hit records and artifacts are checked as store files). Anything else under
# the cache directory is recorded like any path: ``CACHEHOOK_CACHE_DIR=~/.cache`` also holds
# poetry's venvs, and a cache directory may be a project's parent.
_OWN_ENTRIES = frozenset(
    {"store", "stat", "tmp", "memo", "events", "runs", "crashes", "toolchain.json", "history.jsonl"}
)


def _owned(path: str, inside: tuple[str, str]) -> bool:
    cache, memos = inside
    if path.startswith(memos):
        return True
    if not path.startswith(cache):
        return False
    return path[len(cache) :].partition(os.sep)[0] in _OWN_ENTRIES


def _write(path: str, sections: list[bytes]) -> str | None:
    body = b"".join(_SECTION.pack(len(section)) + section for section in sections)
    data = _MAGIC + xxhash.xxh3_128_hexdigest(body).encode() + b"\n" + body
    temp = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.replace(temp, path)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    _forget_oldest(os.path.dirname(path))
    return None


def _forget_oldest(directory: str) -> None:
    """Keep the ``_MAX_MEMOS`` memos used last (one per argv, cwd and environment: a shell's
    changing ``OLDPWD`` alone makes new ones)."""
    used: list[tuple[int, str]] = []
    try:
        with os.scandir(directory) as entries:
            for entry in entries:
                if not entry.name.endswith(".tmp"):  # another process's, being written
                    used.append((entry.stat().st_mtime_ns, entry.path))
    except OSError:
        return
    for _, path in sorted(used)[: max(0, len(used) - _MAX_MEMOS)]:
        try:  # noqa: SIM105 - see _touch
            os.remove(path)
        except OSError:
            pass


# --------------------------------------------------------------------------- what was printed

_MAX_OUTPUT = 1 << 20  # a run that printed more is not memoised (the memo would copy it)


class Capture:
    """Tees ``sys.stdout`` and ``sys.stderr`` (text and ``.buffer``) into ``cachehook.logs``
    frames while it is installed, so that a replay prints exactly what the full path printed,
    in the same order."""

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.size = 0
        self._lock = _thread.allocate_lock()
        self._saved: tuple[Any, Any] | None = None

    def start(self) -> Capture:
        """Install the tees."""
        out, err = sys.stdout, sys.stderr
        out.flush()
        err.flush()
        self._saved = (out, err)
        sys.stdout = _TeeText(out, _Tee(self, 1, out.buffer))
        sys.stderr = _TeeText(err, _Tee(self, 2, err.buffer))
        return self

    def stop(self) -> None:
        """Put the real streams back; safe to call twice."""
        if self._saved is not None:
            sys.stdout, sys.stderr = self._saved
            self._saved = None

    def output(self) -> bytes | None:
        """Everything printed, as frames; None if it was too much to keep."""
        return None if self.size > _MAX_OUTPUT else b"".join(self.frames)

    def _add(self, stream: int, data: bytes) -> None:
        with self._lock:
            self.size += len(data)
            if self.size <= _MAX_OUTPUT:
                self.frames.append(encode_frames(((stream, data),)))


class _Tee:
    """A binary stream that writes through and records."""

    def __init__(self, capture: Capture, stream: int, target: Any) -> None:
        self._capture, self._stream, self._target = capture, stream, target

    def write(self, data: bytes) -> int:
        written: int = self._target.write(data)
        self._capture._add(self._stream, bytes(data))
        return written

    def flush(self) -> None:
        self._target.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)


class _TeeText:
    """The text face of a :class:`_Tee`, as ``sys.stdout`` is of its ``buffer``."""

    def __init__(self, original: Any, buffer: _Tee) -> None:
        self._original, self.buffer = original, buffer

    def write(self, text: str) -> int:
        self.buffer.write(text.encode(self._original.encoding, self._original.errors))
        return len(text)

    def flush(self) -> None:
        self.buffer.flush()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._original, name)


def _signature(st: os.stat_result) -> bytes:
    return _SIGNATURE.pack(
        st.st_mode, st.st_ino, st.st_dev, st.st_size, st.st_mtime_ns, st.st_ctime_ns
    )
