"""One writer per output folder: an advisory `flock` on ``DIR/.cai.lock``, held for a whole run.

Two processes appending to one ``records.jsonl`` would each skip only the ids *they* saw, so both
write every record and the folder ends with two sets. The lock makes the second process stop at
once with one line naming the holder's pid (written into the lock file). The kernel drops the
lock when its holder dies, so a killed run never wedges the folder: the stale pid in the file is
just overwritten by the next holder.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import time
from pathlib import Path
from types import TracebackType

from cai.errors import fail, file_error

LOCK_FILE = ".cai.lock"


class FolderLock:
    """An exclusive, non-blocking lock on one folder (created if missing); `close` releases it."""

    def __init__(self, directory: str | Path, *, what: str = "--out"):
        self._fd: int | None = None
        self.dir = Path(directory)
        self.path = self.dir / LOCK_FILE
        if self.path.is_symlink():  # O_NOFOLLOW below would say ELOOP; say what is wrong instead
            raise file_error(self.path, what, "is a symbolic link; cai does not write through links (remove it)")
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as e:
            raise file_error(self.dir, what, f"cannot use this folder: {e.strerror or e}") from None
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
            os.close(fd)
            # Truncating a hard-linked file would truncate its other names too.
            raise file_error(self.path, what, "is not a plain file of its own (a device, or hard-linked); remove it")
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise file_error(self.path, what, f"cannot lock: {e.strerror or e}") from None
            raise fail(
                str(self.dir),
                None,
                what,
                f"another cai process (pid {holder_pid(self.path)}) is writing to this folder; "
                "wait for it to finish or use another folder",
            ) from None
        self._fd = fd
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        except OSError:
            pass  # the pid is a courtesy for the message above; the lock itself is held

    def close(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def __del__(self) -> None:
        self.close()


def holder_pid(path: Path) -> str:
    """The pid the holder wrote (it writes just after locking: give it a moment)."""
    for _ in range(20):
        with contextlib.suppress(OSError):
            text = path.read_text().strip()
            if text:
                return text
        time.sleep(0.01)
    return "unknown"
