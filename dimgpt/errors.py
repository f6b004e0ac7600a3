"""Errors a user can meet and fix, and the one table of exit codes every command uses.

Raise the subclass that says what kind of problem it is; its message is one line naming the file
or field and the fix. The command line prints `error: MESSAGE` and exits with the class's code
(`DIMGPT_DEBUG=1` shows the traceback instead). Any other exception is a bug: Python's traceback
and exit code 1.

Each class also derives from the built-in exception a caller would have caught before (a missing
file is still a `FileNotFoundError`, a bad value a `ValueError`), so library code keeps working.
"""

from __future__ import annotations

import errno
from enum import IntEnum


class ExitCode(IntEnum):
	"""The exit status of `python -m dimgpt COMMAND` (documented in the README's Troubleshooting)."""

	OK = 0  # done, or stopped by a STOP file (the checkpoint is saved)
	BUG = 1  # an unexpected error: a traceback (Python's own code for an uncaught exception)
	USAGE = 2  # a bad command-line option or value (argparse uses 2 as well)
	NOT_FOUND = 3  # a file or folder that does not exist
	BAD_FILE = 4  # a file that exists but is truncated, corrupt or not of the expected kind
	MISMATCH = 5  # files that are fine alone but do not go together (vocabulary vs model, data vs tokenizer)
	DISK = 6  # no space left, or a folder that cannot be written
	BUSY = 7  # the run directory is in use by another process
	INTERRUPTED = 130  # Ctrl-C: the checkpoint was saved, run the same command to resume
	TERMINATED = 143  # SIGTERM: the checkpoint was saved, run the same command to resume


class UserError(Exception):
	"""Base of the family: a problem with the user's files, options or machine, not a bug."""

	exit_code: ExitCode = ExitCode.USAGE

	def __str__(self) -> str:
		# One line, whatever the raise site wrote: the command line prints exactly this.
		return " ".join(str(self.args[0] if self.args else "").split("\n"))


class UsageError(UserError, ValueError):
	"""A command-line option, `--set` field or setting with a bad value."""

	exit_code = ExitCode.USAGE


class NotFoundError(UserError, FileNotFoundError):
	"""A file or folder the command needs does not exist."""

	exit_code = ExitCode.NOT_FOUND


class BadFileError(UserError, ValueError):
	"""A file exists but cannot be used: truncated, corrupt, unsafe or of the wrong kind."""

	exit_code = ExitCode.BAD_FILE


class MismatchError(UserError, ValueError):
	"""Files that are each fine but do not belong together (a vocabulary larger than the model, ...)."""

	exit_code = ExitCode.MISMATCH


class DiskError(UserError, OSError):
	"""No space left on the device, or a folder the command must write to is read-only."""

	exit_code = ExitCode.DISK


class BusyError(UserError, RuntimeError):
	"""The run directory is locked by another running process."""

	exit_code = ExitCode.BUSY


def disk_error(error: OSError, folder: object, doing: str) -> DiskError | None:
	"""The DiskError for an OSError that means "no space" or "cannot write here", else None."""
	if error.errno in (errno.ENOSPC, errno.EDQUOT):
		return DiskError(f"no space left on the device while {doing} in {folder}: free some disk space and run again")
	if error.errno == errno.EFBIG:
		return DiskError(
			f"a file grew past this system's file size limit while {doing} in {folder}: raise the limit "
			"(ulimit -f) or save elsewhere"
		)
	if error.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
		return DiskError(f"cannot write in {folder} while {doing} ({error.strerror}): choose a writable folder")
	return None
