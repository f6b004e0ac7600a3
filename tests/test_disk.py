"""A checkpoint save that runs out of disk: one DiskError naming the folder, no partial copy left behind,
the previous checkpoint intact."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from support import small_config

from dimgpt.errors import DiskError, ExitCode
from dimgpt.model.loading import load_model
from dimgpt.model.transformer import Transformer
from dimgpt.training.checkpoint import load_training_state, save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SMALL = small_config(vocab_size=64, dim=32, n_layers=1, n_heads=2, n_kv_heads=1)  # a checkpoint of a few kB


def check_after_failed_save(directory: Path) -> None:
	assert sorted(p.name for p in directory.iterdir()) == ["last"]  # no .last.tmp, no .last.old
	assert load_training_state(directory / "last")["step"] == 1
	load_model(directory / "last")


def test_a_file_size_limit_during_a_save(tmp_path: Path) -> None:
	# RLIMIT_FSIZE makes the write fail as a full disk does, without privileges: EFBIG instead of ENOSPC.
	script = textwrap.dedent(f"""
		import resource, signal, torch
		from dimgpt.config import ModelConfig
		from dimgpt.errors import DiskError
		from dimgpt.model.transformer import Transformer
		from dimgpt.training.checkpoint import save_checkpoint
		signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
		model = Transformer(ModelConfig(**{SMALL.__dict__!r}))
		save_checkpoint({str(tmp_path / "last")!r}, model, {{"step": 1}})
		resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, resource.RLIM_INFINITY))
		try:
			save_checkpoint({str(tmp_path / "last")!r}, model, {{"step": 2, "moments": torch.zeros(1 << 20)}})
		except DiskError as error:
			print(error)
	""")
	result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
	assert result.returncode == 0, result.stderr
	assert result.stdout.strip() == (
		f"a file grew past this system's file size limit while saving the checkpoint last in {tmp_path}: raise the "
		"limit (ulimit -f) or save elsewhere (the previous checkpoint is intact)"
	)
	check_after_failed_save(tmp_path)


@pytest.fixture
def small_disk(tmp_path: Path):
	"""A 1 MiB tmpfs (needs the right to mount: root with CAP_SYS_ADMIN; skipped otherwise)."""
	mount = tmp_path / "disk"
	mount.mkdir()
	if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True).returncode:
		pytest.skip("cannot mount a small tmpfs here")
	yield mount
	subprocess.run(["umount", "--lazy", str(mount)], check=True)  # lazy: even with a file left open


def test_a_full_disk_during_a_save(small_disk: Path) -> None:
	model = Transformer(SMALL)
	save_checkpoint(small_disk / "last", model, {"step": 1})
	with pytest.raises(DiskError) as error:
		save_checkpoint(small_disk / "last", model, {"step": 2, "moments": torch.zeros(1 << 20)})
	assert str(error.value) == (
		f"no space left on the device while saving the checkpoint last in {small_disk}: free some disk space and "
		"run again (the previous checkpoint is intact)"
	)
	assert error.value.exit_code == ExitCode.DISK
	check_after_failed_save(small_disk)
