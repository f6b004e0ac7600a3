"""One process at a time in a run directory.

`RunLock(run_dir)` holds an exclusive `flock` on `run_dir/.lock` for as long as it is open; the file
names the holder's process id. The kernel drops the lock when the process ends, however it ends (a
SIGKILL, a crash, a closed notebook kernel), so a lock left behind by a dead process is stale by
construction: the next run takes it over. A second process is refused at once with the holder's id,
before it writes anything (two trainers in one run directory would remove each other's temporary
checkpoint folders).
"""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path

from dimgpt.errors import BusyError, disk_error

try:
	import fcntl
except ImportError:  # Windows: no advisory locks; runs are then not protected from each other
	fcntl = None  # type: ignore[assignment]

LOCK_FILE = ".lock"


class RunLock:
	"""An exclusive lock on a run directory (created if needed), released by `release()` or at exit."""

	def __init__(self, run_dir: str | Path) -> None:
		self.run_dir = Path(run_dir)
		self.path = self.run_dir / LOCK_FILE
		self.stale_pid: int | None = None  # the process id a stale lock named, when one was taken over
		self.fd: int | None = None
		while self.fd is None:
			try:
				self.run_dir.mkdir(parents=True, exist_ok=True)
				fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
			except OSError as error:
				raise (disk_error(error, self.run_dir, "locking the run directory") or error) from None
			if fcntl is None:
				self.fd = fd
				return
			try:
				fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
			except OSError as error:
				holder = _read_pid(fd)
				os.close(fd)
				if error.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
					raise
				raise BusyError(
					f"run {self.run_dir} is in use by process {holder or '(unknown)'}: wait for it to finish, "
					f"stop it (a STOP file in {self.run_dir} saves and stops it), or use another run directory"
				) from None
			# The holder we waited on may have removed the file between our open and our lock: the lock
			# is ours only if the path still names the file we locked.
			try:
				same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
			except FileNotFoundError:
				same = False
			if same:
				self.fd = fd
			else:
				os.close(fd)
		previous = _read_pid(self.fd)
		if previous and previous != os.getpid():
			self.stale_pid = previous  # its process died without releasing: the kernel already did
		os.ftruncate(self.fd, 0)
		os.write(self.fd, f"{os.getpid()}\n".encode())

	def release(self) -> None:
		"""Remove the lock file and drop the lock (idempotent)."""
		if self.fd is None:
			return
		with contextlib.suppress(OSError):  # a read-only folder after all: the lock still drops below
			self.path.unlink(missing_ok=True)
		os.close(self.fd)  # closing drops the flock
		self.fd = None

	def __enter__(self) -> RunLock:
		return self

	def __exit__(self, *exc: object) -> None:
		self.release()

	def __del__(self) -> None:
		self.release()


def _read_pid(fd: int) -> int | None:
	try:
		text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
		return int(text) if text else None
	except (OSError, ValueError):
		return None
