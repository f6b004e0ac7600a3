"""The run-directory lock: one process at a time, released on any exit, stale after a SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dimgpt.errors import BusyError, DiskError, ExitCode
from dimgpt.training.lock import LOCK_FILE, RunLock

ROOT = Path(__file__).resolve().parents[1]


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path: Path) -> None:
	with RunLock(tmp_path / "run"):
		with pytest.raises(BusyError, match=rf"run .*run is in use by process {os.getpid()}: .*STOP") as error:
			RunLock(tmp_path / "run")
		assert error.value.exit_code == ExitCode.BUSY
	assert not (tmp_path / "run" / LOCK_FILE).exists()  # released and removed
	RunLock(tmp_path / "run").release()  # free again


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(tmp_path: Path) -> None:
	code = f"from dimgpt.training.lock import RunLock; lock = RunLock({str(tmp_path)!r}); print('held', flush=True); input()"
	child = subprocess.Popen(
		[sys.executable, "-c", code], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
	)
	try:
		assert child.stdout.readline().strip() == "held"
		with pytest.raises(BusyError, match=f"in use by process {child.pid}"):
			RunLock(tmp_path)
	finally:
		child.send_signal(signal.SIGKILL)
		child.wait(timeout=60)
	assert (tmp_path / LOCK_FILE).read_text().strip() == str(child.pid)  # left behind by the kill
	lock = RunLock(tmp_path)
	assert lock.stale_pid == child.pid
	assert (tmp_path / LOCK_FILE).read_text().strip() == str(os.getpid())
	lock.release()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes in read-only folders")
def test_a_read_only_folder_is_a_disk_error(tmp_path: Path) -> None:
	tmp_path.chmod(0o555)
	try:
		with pytest.raises(DiskError, match=rf"cannot write in {tmp_path}.*writable"):
			RunLock(tmp_path)
	finally:
		tmp_path.chmod(0o755)
