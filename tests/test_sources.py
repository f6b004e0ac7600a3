"""Sources: pieces of local files and hub streams, resuming inside them, filtering, de-duplication, clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dimgpt.config import SourceConfig
from dimgpt.data.sources import SourceError, SourceStats, documents, pieces, read_piece, read_texts
from dimgpt.errors import ExitCode

ROOT = Path(__file__).resolve().parents[1]
LONG = "Le petit chat dort sur le tapis rouge du salon pendant que la pluie tombe doucement dehors."


def write_jsonl(path: Path, rows: list[dict]) -> Path:
	path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
	return path


def test_jsonl_short_and_duplicate_documents_are_dropped_and_counted(tmp_path: Path) -> None:
	texts = [f"{i} {LONG}" for i in range(5)]
	rows = [{"text": t} for t in texts]
	rows.insert(2, {"text": "trop court"})
	rows.insert(4, {"text": "  " + texts[1] + "\n"})  # same document once stripped
	rows.append({"text": texts[0]})
	source = SourceConfig("s", path=str(write_jsonl(tmp_path / "a.jsonl", rows)))
	stats = SourceStats()
	kept = list(documents(source, min_chars=64, stats=stats, cache_dir=tmp_path / "cache"))
	assert kept == texts  # order kept, each document once
	assert (stats.documents, stats.short, stats.duplicates) == (5, 1, 2)
	assert stats.characters == sum(len(t) for t in texts)


def test_txt_files_are_one_document_each_and_globs_are_sorted(tmp_path: Path) -> None:
	for name in ("b.txt", "a.txt"):
		(tmp_path / name).write_text(f"{name}\n{LONG}\n\n{LONG}", encoding="utf-8")
	source = SourceConfig("t", path=str(tmp_path / "*.txt"))
	kept = list(documents(source, cache_dir=tmp_path / "cache"))
	assert [k.split("\n")[0] for k in kept] == ["a.txt", "b.txt"]
	assert kept[0] == f"a.txt\n{LONG}\n\n{LONG}"


def test_parquet_and_joined_columns(tmp_path: Path) -> None:
	import pyarrow as pa
	import pyarrow.parquet as pq

	table = pa.table({"title": ["Titre un", "Titre deux"], "body": [LONG, LONG + " Encore."]})
	pq.write_table(table, tmp_path / "p.parquet")
	source = SourceConfig("p", path=str(tmp_path / "p.parquet"), text_column="title+body")
	assert list(read_texts(source, cache_dir=tmp_path / "cache")) == [
		f"Titre un\n\n{LONG}",
		f"Titre deux\n\n{LONG} Encore.",
	]
	wrong = SourceConfig("p", path=str(tmp_path / "p.parquet"), text_column="content")
	with pytest.raises(SourceError, match="no column 'content'"):
		list(read_texts(wrong, cache_dir=tmp_path / "cache"))


def test_max_chars_stops_the_stream(tmp_path: Path) -> None:
	rows = [{"text": f"{i} {LONG}"} for i in range(50)]
	source = SourceConfig("s", path=str(write_jsonl(tmp_path / "a.jsonl", rows)), max_chars=300)
	kept = list(documents(source, cache_dir=tmp_path / "cache"))
	assert sum(len(k) for k in kept) >= 300 and sum(len(k) for k in kept[:-1]) < 300


def test_missing_and_unsupported_files_name_the_path(tmp_path: Path) -> None:
	with pytest.raises(SourceError, match="no file matches") as error:
		list(documents(SourceConfig("m", path=str(tmp_path / "nope" / "*.jsonl"))))
	assert "nope" in str(error.value)
	(tmp_path / "x.csv").write_text("a,b\n")
	with pytest.raises(SourceError, match="unsupported file type"):
		list(documents(SourceConfig("c", path=str(tmp_path / "x.csv"))))
	bad = tmp_path / "bad.jsonl"
	bad.write_text('{"text": "ok"}\n{broken\n')
	with pytest.raises(SourceError, match=r"bad\.jsonl"):
		list(documents(SourceConfig("b", path=str(bad)), cache_dir=tmp_path / "cache"))


def test_source_names_must_be_folder_names() -> None:
	with pytest.raises(ValueError, match="folder"):
		SourceConfig("news/cc", path="x.jsonl")
	with pytest.raises(ValueError, match="needs a `path`"):
		SourceConfig("x", kind="hf")


def test_corpus_fr_is_read_whole(corpus_fr: Path, tmp_path: Path) -> None:
	stats = SourceStats()
	source = SourceConfig("fiches", path=str(corpus_fr / "service_public_fiches.jsonl"))
	kept = list(documents(source, stats=stats, cache_dir=tmp_path))
	lines = (corpus_fr / "service_public_fiches.jsonl").read_text(encoding="utf-8").splitlines()
	assert stats.documents + stats.short + stats.duplicates == len(lines)
	assert kept[0] == json.loads(lines[0])["text"].strip()
	assert stats.documents == len(kept) and all(len(k) >= 64 for k in kept)


def test_hub_mix_fails_with_a_clear_message_offline(tmp_path: Path) -> None:
	"""The DimensionGPT preset streams the hub; without it the command says so, with no traceback."""
	env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
	result = subprocess.run(
		[sys.executable, "-m", "dimgpt", "create-data", "--preset", "dimensiongpt-0.2b", "--out", str(tmp_path / "d")],
		capture_output=True,
		text=True,
		cwd=ROOT,
		env=env,
		timeout=300,
	)
	assert result.returncode == ExitCode.NOT_FOUND
	assert "cannot load the Hugging Face dataset 'ontocord/CulturaY'" in result.stderr
	assert "--sources PATH.txt" in result.stderr
	assert "Traceback" not in result.stderr


def test_pieces_of_a_jsonl_file_hold_every_record_once_and_resume_inside(tmp_path: Path) -> None:
	rows = [{"text": f"{i} {LONG}" + " encore" * (i % 7)} for i in range(300)]
	source = SourceConfig("s", path=str(write_jsonl(tmp_path / "a.jsonl", rows)))
	listed = pieces(source, 2_000)
	assert len(listed) > 5 and [p.kind for p in listed] == ["lines"] * len(listed)
	got = [t for p in listed for t in read_piece(source, p)]
	assert got == [r["text"] for r in rows]  # cut at line starts: no record lost or doubled
	middle = listed[2]
	whole = list(read_piece(source, middle))
	assert list(read_piece(source, middle, skip=3)) == whole[3:]


def test_parquet_pieces_are_row_groups_and_compressed_files_are_whole(tmp_path: Path) -> None:
	import gzip

	import pyarrow as pa
	import pyarrow.parquet as pq

	texts = [f"{i} {LONG}" for i in range(100)]
	pq.write_table(pa.table({"text": texts}), tmp_path / "p.parquet", row_group_size=10)
	source = SourceConfig("p", path=str(tmp_path / "p.parquet"))
	listed = pieces(source, 1)
	assert [(p.kind, p.start, p.stop) for p in listed] == [("parquet", g, g + 1) for g in range(10)]
	assert [t for p in listed for t in read_piece(source, p)] == texts
	assert list(read_piece(source, listed[4], skip=7)) == texts[47:50]
	(tmp_path / "z.jsonl.gz").write_bytes(
		gzip.compress("".join(json.dumps({"text": t}) + "\n" for t in texts).encode())
	)
	zipped = SourceConfig("z", path=str(tmp_path / "z.jsonl.gz"))
	assert [p.kind for p in pieces(zipped, 1)] == ["file"]
	assert list(read_texts(zipped)) == texts


def test_a_local_folder_streams_through_the_hub_code_path(tmp_path: Path) -> None:
	"""`hf:FOLDER` is read by datasets' streaming, one piece per data file, resumable inside a piece."""
	folder = tmp_path / "hub"
	folder.mkdir()
	for k in range(3):
		write_jsonl(folder / f"part{k}.jsonl", [{"text": f"{k}-{i} {LONG}"} for i in range(20)])
	source = SourceConfig("h", kind="hf", path=str(folder))
	listed = pieces(source, 1, cache_dir=tmp_path / "cache")
	assert [(p.kind, p.start, p.stop) for p in listed] == [("hub", k, 3) for k in range(3)]
	assert [t.split()[0] for t in read_piece(source, listed[1], cache_dir=tmp_path / "cache")] == [
		f"1-{i}" for i in range(20)
	]
	resumed = list(read_piece(source, listed[2], skip=15, cache_dir=tmp_path / "cache"))
	assert [t.split()[0] for t in resumed] == [f"2-{i}" for i in range(15, 20)]
