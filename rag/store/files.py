"""File-system helpers of the embedded store: the writer lock, and checksummed cache snapshots
that are published atomically and cleaned up when a process was killed while writing one.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import time
import uuid
import zlib
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from rag.errors import CacheDirError, StoreBusyError

#: Name of the file naming the current cache snapshot (written atomically with os.replace).
CURRENT = "CURRENT"


def file_crc32(path: Path) -> int:
    """CRC-32 (zlib) of a file, read in 4 MiB blocks."""
    crc = 0
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            crc = zlib.crc32(block, crc)
    return crc


def pid_alive(pid: int) -> bool:
    """Whether a process with this id exists (on this machine)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FileLock:
    """An exclusive ``fcntl.flock`` on a file, shared by threads of one process through a count.

    The lock file holds the owner's pid, which the busy message names. The kernel releases the
    lock when its holder dies (also on SIGKILL), so a killed writer never blocks the next one.

    Args:
        path: The lock file (created if missing).
        wait_s: How long :meth:`acquire` waits for another process before giving up.
        what: What the lock protects, for messages.
    """

    def __init__(self, path: Path, wait_s: float = 10.0, what: str = "the store"):
        self.path = Path(path)
        self.wait_s = wait_s
        self.what = what
        self._fd: int | None = None
        self._depth = 0

    def acquire(self, wait_s: float | None = None, blocking: bool = True) -> bool:
        """Take the lock; False when ``blocking`` is off and another process holds it.

        Raises:
            StoreBusyError: still held by another process after ``wait_s`` seconds.
            CacheDirError: the lock file cannot be created (read-only directory).
        """
        if self._depth:
            self._depth += 1
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as err:
            raise CacheDirError(f"cannot create {self.path}: {err.strerror or err}",
                                hint="set RAG_HOME to a writable directory") from err
        deadline = time.monotonic() + (self.wait_s if wait_s is None else wait_s)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as err:
                if err.errno not in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    raise
                if not blocking or time.monotonic() >= deadline:
                    holder = _read_pid(fd)
                    os.close(fd)
                    if not blocking:
                        return False
                    raise StoreBusyError(
                        f"{self.what} is busy: another process{f' (pid {holder})' if holder else ''} "
                        f"is writing to it", hint="wait for it to finish, then run the command again") from None
                time.sleep(0.05)
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._fd = fd
        self._depth = 1
        return True

    def release(self) -> None:
        if not self._depth:
            return
        self._depth -= 1
        if self._depth == 0 and self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @contextmanager
    def held(self, wait_s: float | None = None) -> Iterator[None]:
        self.acquire(wait_s)
        try:
            yield
        finally:
            self.release()


def _read_pid(fd: int) -> int | None:
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        return int(os.read(fd, 32).decode() or 0) or None
    except (OSError, ValueError):
        return None


class SnapshotDir:
    """Cache snapshots under one folder: ``snap-*/`` folders of files plus a ``manifest.json``
    (size and CRC-32 of every file, and caller facts), and a ``CURRENT`` file naming the
    published one.

    A snapshot is written completely, then published by replacing ``CURRENT``; a process
    killed before that leaves an unpublished folder, removed by the next save or :meth:`cleanup`.
    """

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.lock = FileLock(self.folder / "lock", wait_s=0.0, what="the cache")

    def save(self, writers: dict[str, Callable[[Path], None]], facts: dict[str, Any]) -> bool:
        """Write every file with its writer (``name -> fn(path)``) and publish the snapshot;
        False (nothing written) when another process is saving.

        Raises:
            OSError: the folder cannot be written.
        """
        self.folder.mkdir(parents=True, exist_ok=True)
        if not self.lock.acquire(blocking=False):
            return False
        try:
            name = f"snap-{facts.get('generation', 0)}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            target = self.folder / name
            target.mkdir()
            files = {}
            for key, write in writers.items():
                path = target / key
                write(path)
                with open(path, "rb+") as fh:
                    os.fsync(fh.fileno())
                files[key] = {"bytes": path.stat().st_size, "crc32": file_crc32(path)}
            manifest = dict(facts, files=files)
            (target / "manifest.json").write_text(json.dumps(manifest, ensure_ascii=False, indent=1),
                                                  encoding="utf-8")
            tmp = self.folder / f".{CURRENT}.{os.getpid()}"
            tmp.write_text(name, encoding="utf-8")
            os.replace(tmp, self.folder / CURRENT)
            self._cleanup_locked(keep=name)
            return True
        finally:
            self.lock.release()

    def load(self, lazy: frozenset[str] = frozenset()) -> tuple[Path, dict[str, Any]]:
        """The published snapshot's folder and manifest, with every file's size checked and its
        CRC-32 verified, except ``lazy`` files (their contents are checked piece by piece on use).

        Raises:
            FileNotFoundError: no snapshot is published.
            ValueError: a file is missing, truncated or corrupt, or the manifest is unreadable.
        """
        name = (self.folder / CURRENT).read_text(encoding="utf-8").strip()
        target = self.folder / name
        try:
            manifest = json.loads((target / "manifest.json").read_text(encoding="utf-8"))
            for key, info in manifest["files"].items():
                path = target / key
                size = path.stat().st_size
                if size != info["bytes"]:
                    raise ValueError(f"{key} has {size} bytes, the manifest says {info['bytes']}")
                if key not in lazy and file_crc32(path) != info["crc32"]:
                    raise ValueError(f"{key} fails its checksum")
        except (OSError, KeyError, TypeError) as err:
            raise ValueError(f"unreadable cache snapshot {name}: {err}") from err
        except ValueError as err:
            raise ValueError(f"cache snapshot {name}: {err}") from err
        return target, manifest

    def cleanup(self) -> None:
        """Remove unpublished or superseded snapshots (when no other process is saving)."""
        if not self.folder.is_dir() or not self.lock.acquire(blocking=False):
            return
        try:
            current = (self.folder / CURRENT).read_text(encoding="utf-8").strip() \
                if (self.folder / CURRENT).is_file() else None
            self._cleanup_locked(keep=current)
        finally:
            self.lock.release()

    def _cleanup_locked(self, keep: str | None) -> None:
        for path in self.folder.iterdir():
            if path.name.startswith("snap-") and path.name != keep:
                shutil.rmtree(path, ignore_errors=True)
            elif path.name.startswith(f".{CURRENT}."):
                pid = path.name.rsplit(".", 1)[-1]
                if not pid.isdigit() or not pid_alive(int(pid)):
                    path.unlink(missing_ok=True)


def save_npy(array: np.ndarray) -> Callable[[Path], None]:
    """A :meth:`SnapshotDir.save` writer for one array (``.npy`` format, no pickles)."""
    def write(path: Path) -> None:
        with open(path, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
    return write


def load_npy(path: Path, mmap: bool = False) -> np.ndarray:
    """Read an array written by :func:`save_npy`; ``mmap`` maps it read-only instead of reading.

    Raises:
        ValueError: not a readable ``.npy`` file.
    """
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (OSError, EOFError) as err:
        raise ValueError(f"unreadable {path.name}: {err}") from err
