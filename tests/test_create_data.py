"""The create-data job end to end on real French text: mix, filters, dedup, split, shards, resume, parts and merge."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from dimgpt.config import DataConfig, QualityConfig, SourceConfig
from dimgpt.data import merge, quality
from dimgpt.data.create import create_data, held_out, resolve_config, sample_quotas, source_from_spec
from dimgpt.data.loader import PretrainLoader
from dimgpt.data.merge import merge_data
from dimgpt.data.sources import document_hash, documents
from dimgpt.data.store import StoreError, verify_dataset
from dimgpt.data.tokenizer import END_OF_TEXT, START_OF_TEXT, Tokenizer
from dimgpt.evaluation import dataset_texts

pytestmark = pytest.mark.slow  # builds datasets from the real corpus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def corpus(corpus_fr: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
	"""Two real sources: the service-public fiches, and 700 law sections plus a duplicate and a short document."""
	root = tmp_path_factory.mktemp("corpus")
	lines = (corpus_fr / "legi_codes.jsonl").read_text(encoding="utf-8").splitlines()[:700]
	lines += [lines[10], json.dumps({"text": "Article court."}), lines[20]]
	(root / "legi.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
	shutil.copy(corpus_fr / "service_public_fiches.jsonl", root / "fiches.jsonl")
	return root


def config_for(corpus: Path, **changes: object) -> DataConfig:
	config = DataConfig(
		vocab_size=1_600,
		tokenizer_chars=600_000,
		shard_tokens=60_000,
		piece_bytes=400_000,  # several pieces per source: the workers share them
		sources=(
			SourceConfig("legi", path=str(corpus / "legi.jsonl"), multiplier=1.0),
			SourceConfig("fiches", path=str(corpus / "fiches.jsonl"), multiplier=3.0),
		),
		instruct_sources=(),
	)
	return DataConfig(**{**config.__dict__, **changes})


@pytest.fixture(scope="module")
def built(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
	out = tmp_path_factory.mktemp("built")
	summary = create_data(config_for(corpus), out, progress=False)
	return out, summary


def files(directory: Path) -> dict[str, bytes]:
	"""Every file of a dataset folder, data.json without its timings."""
	out = {}
	for path in sorted(directory.rglob("*")):
		if path.is_file() and ".hf_cache" not in path.parts:
			data = path.read_bytes()
			if path.name == "data.json":
				record = json.loads(data)
				record.pop("times")
				record.pop("work")
				record.pop("tokenizer_trained")
				data = json.dumps(record, sort_keys=True).encode()
			out[str(path.relative_to(directory))] = data
	return out


def stored(directory: Path, split: str) -> list[np.ndarray]:
	docs = []
	for stem in sorted(directory.glob(f"{split}_*.bin")):
		dtype = json.loads(stem.with_suffix(".json").read_text())["dtype"]
		tokens = np.fromfile(stem, dtype=dtype)
		offsets = np.load(stem.with_suffix(".idx.npy"))
		docs += [tokens[a:b] for a, b in itertools.pairwise(offsets)]
	return docs


def test_every_document_is_stored_once_in_its_split(built: tuple[Path, dict], corpus: Path) -> None:
	out, summary = built
	tokenizer = Tokenizer.load(out / "vocab.txt")
	config = config_for(corpus)
	source = config.sources[1]
	texts = [t for t in documents(source) if quality.rejection(t, config.quality) is None]
	expected = {document_hash(t): t for t in texts}
	directory = out / "pretrain" / "fiches"
	train, validation = stored(directory, "train"), stored(directory, "validation")
	fiches = summary["pretrain"]["fiches"]
	# the reference stream less the near-duplicates: every other document stored once, in stream order
	assert len(train) + len(validation) == len(texts) - fiches["near_duplicates"] == fiches["documents"]
	decoded = [tokenizer.decode(d[1:-1]) for d in train + validation]
	wanted = [tokenizer.decode(tokenizer.encode(t)) for t in texts]
	assert sorted(decoded) == sorted(d for d in wanted if d in set(decoded))
	assert all(d[0] == START_OF_TEXT and d[-1] == END_OF_TEXT for d in train + validation)
	in_validation = [held_out(h, config.validation_fraction) for h in expected]
	assert len(validation) >= max(config.min_validation_documents, sum(in_validation) - fiches["near_duplicates"])
	assert fiches["splits"]["train"]["shards"] > 1
	assert sum(s["characters"] for s in fiches["splits"].values()) == fiches["characters"]


def test_counts_add_up_and_mix_share(built: tuple[Path, dict]) -> None:
	_, summary = built
	legi = summary["pretrain"]["legi"]
	assert legi["records"] == 703 and legi["short"] == 1 and legi["duplicates"] >= 2
	dropped = legi["short"] + legi["duplicates"] + legi["near_duplicates"] + sum(legi["filtered"].values())
	assert legi["documents"] + dropped == 703
	assert sum(s["documents"] for s in legi["splits"].values()) == legi["documents"]
	weights = {name: s["splits"]["train"]["tokens"] * s["multiplier"] for name, s in summary["pretrain"].items()}
	for name, s in summary["pretrain"].items():
		assert s["share"] == pytest.approx(weights[name] / sum(weights.values()))
	# each filter's examples are documents it drops
	for rule, examples in legi["dropped_examples"].items():
		if rule in quality.RULES:
			assert legi["filtered"][rule] >= len(examples) > 0


def test_tokenizer_sample_follows_size_times_multiplier(built: tuple[Path, dict], corpus: Path) -> None:
	out, summary = built
	config = config_for(corpus)
	record = json.loads((out / "tokenizer_sample.json").read_text())
	quotas = sample_quotas(config, record["sizes"])
	assert record["sizes"] == {
		"legi": (corpus / "legi.jsonl").stat().st_size,
		"fiches": (corpus / "fiches.jsonl").stat().st_size,
	}
	assert quotas["fiches"] / quotas["legi"] == pytest.approx(3 * record["sizes"]["fiches"] / record["sizes"]["legi"])
	sampled = summary["tokenizer_sample"]["characters"]
	for name, quota in quotas.items():
		assert abs(sampled[name] - quota) < 0.1 * quota, (name, sampled[name], quota)
	lines = (out / "tokenizer_sample.txt").read_text(encoding="utf-8").splitlines()
	assert sum(len(line) for line in lines) == sum(sampled.values())


def test_interrupted_then_resumed_equals_uninterrupted(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shards = []

	def stop_after_three(manifest: dict) -> None:
		shards.append(manifest)
		if len(shards) == 3:
			raise KeyboardInterrupt  # what Ctrl-C does in the middle of the encoding

	with pytest.raises(KeyboardInterrupt):
		create_data(config_for(corpus), tmp_path, progress=False, on_shard=stop_after_three)
	assert not (tmp_path / "data.json").exists()
	position = json.loads((tmp_path / "pretrain" / "legi" / "progress.json").read_text())["position"]
	assert position[1] > 0  # the stream stopped inside a piece
	resumed = []
	create_data(config_for(corpus), tmp_path, progress=False, on_shard=resumed.append)
	assert resumed[0]["source"] == "legi" and resumed[0]["index"] > 0  # completed shards were kept
	assert files(tmp_path) == files(reference)


def test_sigkill_then_rerun_equals_uninterrupted(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shutil.copy(reference / "vocab.txt", tmp_path / "vocab.txt")  # the tokenizer stage is covered above
	command = [sys.executable, "-m", "dimgpt", "create-data", "--out", str(tmp_path), "--no-progress"]
	command += ["--preset", "tiny", "--vocab-size", "1600", "--tokenizer-chars", "600000", "--shard-tokens", "60000"]
	command += ["--sources", f"legi={corpus / 'legi.jsonl'}@1", f"fiches={corpus / 'fiches.jsonl'}@3", "--instruct"]
	env = {**os.environ, "PYTHONPATH": str(ROOT)}
	process = subprocess.Popen([*command], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
	first = tmp_path / "pretrain" / "legi" / "train_00001.json"
	deadline = time.time() + 120
	while not first.exists() and process.poll() is None and time.time() < deadline:
		time.sleep(0.01)
	process.send_signal(signal.SIGKILL)
	process.wait()
	assert first.exists() and not (tmp_path / "data.json").exists()
	result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
	assert result.returncode == 0, result.stderr
	got, want = files(tmp_path), files(reference)
	del want["tokenizer_sample.txt"], want["tokenizer_sample.json"]  # this run was given the vocab
	assert got.keys() == want.keys()
	for name in got:
		if name == "data.json" or name.endswith(("progress.json", "stream.rec")):
			continue  # the config names the sources as the command line gave them; positions and streams count its pieces
		assert got[name] == want[name], name


def test_shards_of_another_tokenizer_are_refused(built: tuple[Path, dict], corpus: Path, tmp_path: Path) -> None:
	reference, _ = built
	shutil.copytree(reference, tmp_path / "d")
	with pytest.raises(StoreError, match="another tokenizer") as error:
		create_data(config_for(corpus, vocab_size=1_700), tmp_path / "d", force_tokenizer=True, progress=False)
	assert "source.json" in str(error.value) and "delete" in str(error.value)
	# a run interrupted before its source manifest: the shards themselves are checked
	(tmp_path / "d" / "pretrain" / "legi" / "source.json").unlink()
	with pytest.raises(StoreError, match="another tokenizer") as error:
		create_data(config_for(corpus, vocab_size=1_700), tmp_path / "d", progress=False)
	assert "train_00000.json" in str(error.value)


def test_command_line_source_specs() -> None:
	source = source_from_spec("wiki=data/wiki/*.jsonl@4")
	assert (source.name, source.kind, source.path, source.multiplier) == ("wiki", "files", "data/wiki/*.jsonl", 4.0)
	assert source_from_spec("corpus/legi_codes.jsonl").name == "legi_codes"
	hub = source_from_spec("hf:csebuetnlp/xlsum:french@0.3")
	assert (hub.kind, hub.path, hub.hf_config, hub.multiplier) == ("hf", "csebuetnlp/xlsum", "french", 0.3)
	config = resolve_config("tiny", ["corpus-fr"])
	assert [s.name for s in config.sources][:2] == ["eltec_novels", "textbox_prose"] and config.instruct_sources
	assert resolve_config("tiny", ["a.jsonl"], [], vocab_size=100).instruct_sources == ()


def test_notebook_runs_on_the_tiny_preset(tmp_path: Path) -> None:
	from tests.nbrun import execute_notebook, outputs_text

	out = tmp_path / "data"
	notebook = execute_notebook(
		"create_data.ipynb",
		{"PRESET": "tiny", "OUT_DIR": str(out), "VOCAB_SIZE": 1_600, "TOKENIZER_CHARS": 200_000},
		cwd=ROOT,
	)
	text = outputs_text(notebook)
	assert (out / "data.json").exists() and (out / "vocab.txt").exists()
	summary = json.loads((out / "data.json").read_text())
	assert summary["vocab_size"] == 1_600
	assert "chars/token" in text and "embedded" in text


def documents_of(directory: Path) -> dict[str, list[tuple[str, bytes]]]:
	"""Per source: (split, token bytes) of every stored document, in stream order, through the loader's manifests."""
	from dimgpt.data.store import open_source

	out = {}
	for name in json.loads((directory / "data.json").read_text())["pretrain"]:
		docs = []
		for split in ("train", "validation"):
			_, shards = open_source(directory / "pretrain" / name, split)
			docs += [(split, s.tokens[slice(*s.document(d))].tobytes()) for s in shards for d in range(s.documents)]
		out[name] = docs
	return out


def stored_hashes(directory: Path) -> list[int]:
	"""The exact hashes of the documents stored in a source folder's own shards (their `.sig.npy`)."""
	rows = [np.load(path)[:, :2].astype(np.uint64) for path in sorted(directory.glob("*.sig.npy"))]
	return [int(low | high << np.uint64(32)) for low, high in np.concatenate(rows)]


def one_run_and_two_parts(config: DataConfig, vocab: Path, root: Path) -> tuple[Path, Path]:
	"""The dataset of one run (`root/one`) and its two parts, not merged yet (`root/merged`), with the same vocabulary."""
	one, merged_dir = root / "one", root / "merged"
	for folder in (one, merged_dir):
		folder.mkdir(parents=True)
		shutil.copy(vocab, folder / "vocab.txt")
	create_data(config, one, progress=False)
	for i in range(2):
		create_data(config, merged_dir, shard=(i, 2), progress=False)
	return one, merged_dir


def test_two_parts_merged_equal_one_run(
	built: tuple[Path, dict], corpus: Path, corpus_fr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
	"""--shard 0/2 and 1/2, then merge-data: the same dataset as one run, deduplication included.

	An exact copy and a near copy of two early fiches are appended to the source: the originals fall in part 0,
	the copies in part 1, so each part keeps its own and only the merge can drop the copies. A third source,
	of one piece, is read by part 1 alone: its first documents' splits are decided there."""
	reference, _ = built
	base = config_for(corpus)
	texts = [
		json.loads(line)["text"].strip() for line in (corpus / "fiches.jsonl").read_text(encoding="utf-8").splitlines()
	]
	passing = [i for i, t in enumerate(texts) if quality.rejection(t, base.quality) is None and len(t.split()) > 300]
	exact, original = texts[passing[0]], texts[passing[1]]
	words = original.split()
	for k in np.random.default_rng(0).choice(len(words), size=len(words) // 100, replace=False):
		words[k] = "modifié"  # a few words changed: still the same page
	near = " ".join(words)
	assert quality.rejection(near, base.quality) is None
	planted = tmp_path / "fiches.jsonl"
	shutil.copy(corpus / "fiches.jsonl", planted)
	with open(planted, "a", encoding="utf-8") as f:
		f.write(
			json.dumps({"text": exact}, ensure_ascii=False)
			+ "\n"
			+ json.dumps({"text": near}, ensure_ascii=False)
			+ "\n"
		)
	small = tmp_path / "small.jsonl"
	small.write_text(
		"\n".join((corpus_fr / "legi_codes.jsonl").read_text(encoding="utf-8").splitlines()[700:760]) + "\n"
	)
	sources = (
		base.sources[0],
		SourceConfig("fiches", path=str(planted), multiplier=3.0),
		SourceConfig("small", path=str(small), multiplier=1.0),
	)
	for dedup in (False, True):
		config = config_for(corpus, sources=sources, quality=QualityConfig(near_duplicates=dedup))
		one, merged_dir = one_run_and_two_parts(config, reference / "vocab.txt", tmp_path / f"dedup-{dedup}")
		assert not (merged_dir / "data.json").exists()
		assert [
			json.loads((merged_dir / "parts" / f"{i}-of-2" / "data.json").read_text())["pretrain"]["small"]["documents"]
			> 0
			for i in range(2)
		] == [False, True]
		# the copies fall in another part than their originals: each part keeps its own
		parts = [stored_hashes(merged_dir / "parts" / f"{i}-of-2" / "pretrain" / "fiches") for i in range(2)]
		alone = stored_hashes(one / "pretrain" / "fiches")
		assert document_hash(exact) in parts[0] and document_hash(exact) in parts[1]
		assert alone.count(document_hash(exact)) == 1
		assert document_hash(original) in parts[0] and document_hash(original) in alone
		if dedup:
			assert document_hash(near) in parts[1] and document_hash(near) not in alone
		summary = merge_data(merged_dir, progress=False)
		single = json.loads((one / "data.json").read_text())
		got, want = documents_of(merged_dir), documents_of(one)
		assert got == want  # same documents, same token ids, same splits, same order
		for name in ("legi", "fiches", "small"):
			merged, alone = summary["pretrain"][name], single["pretrain"][name]
			counts = (
				"documents",
				"characters",
				"records",
				"short",
				"duplicates",
				"near_duplicates",
				"filtered",
				"share",
			)
			assert {k: merged[k] for k in counts} == {k: alone[k] for k in counts}, name
			for split in ("train", "validation"):
				keys = ("documents", "tokens", "characters")
				assert {k: merged["splits"][split][k] for k in keys} == {k: alone["splits"][split][k] for k in keys}
			assert merged["merge"]["misplaced"] == merged["merge"]["lost"] == 0
		fiches = summary["pretrain"]["fiches"]
		assert fiches["merge"]["dropped"] >= 1 + dedup  # the copies part 1 kept (and, with near duplicates, others)
		assert fiches["duplicates"] >= 1 and fiches["near_duplicates"] >= dedup
		files = json.loads((merged_dir / "pretrain" / "fiches" / "source.json").read_text())["files"]
		assert {p.split("/")[-4] for p in files["train"]} == {"0-of-2", "1-of-2"}  # pointers, no copy
		assert not list((merged_dir / "pretrain" / "fiches").glob("*.bin"))
		shards = sum(
			len(json.loads((merged_dir / "pretrain" / n / "source.json").read_text())["files"][s])
			for n in ("legi", "fiches", "small")
			for s in ("train", "validation")
		)
		assert verify_dataset(merged_dir, progress=False) == (shards, [])
		for split in ("train", "validation"):  # the loader reads one run's documents, and no dropped one
			loader = PretrainLoader(merged_dir, split, 4, 32, seed=0)
			for source in loader.sources:
				read = [
					source.shards[k].tokens[a:b].tobytes()
					for k, a, b in map(source.locate_document, range(source.documents))
				]
				assert read == [d for s, d in want[source.name] if s == split]
				assert source.tokens == single["pretrain"][source.name]["splits"][split]["tokens"]
			assert loader.make_batch(0)[0].shape == (4, 33)
			loader.close()
			texts = {name: list(t) for name, t in dataset_texts(merged_dir, split).items()}  # evaluate's text
			assert texts == {name: list(t) for name, t in dataset_texts(one, split).items()}
	manifests = {n: (merged_dir / "pretrain" / n / "source.json").read_text() for n in ("legi", "fiches", "small")}
	monkeypatch.setattr(merge, "CHUNK_ROWS", 7)  # streams and signatures read 7 rows at a time: the same merge
	merge_data(merged_dir, progress=False)
	assert {n: (merged_dir / "pretrain" / n / "source.json").read_text() for n in manifests} == manifests
	(merged_dir / "parts" / "1-of-2" / "pretrain" / "fiches" / "stream.rec").unlink()  # a part of an older version
	with pytest.raises(StoreError, match=r"fiches/stream\.rec is missing .* older version.*create-data again"):
		merge_data(merged_dir, progress=False)


@pytest.mark.parametrize("share", [0.2, 0.7])
def test_two_parts_merged_stop_where_one_run_stops(
	built: tuple[Path, dict], corpus: Path, tmp_path: Path, share: float
) -> None:
	"""A source's max_chars reached in part 0 (0.2 of its text) or in part 1 (0.7): each part reads up to
	max_chars of its own slice, the merge keeps what one run keeps and drops the rest of the parts' shards."""
	reference, _ = built
	fiches = config_for(corpus).sources[1]
	total = json.loads((reference / "data.json").read_text())["pretrain"]["fiches"]["characters"]
	source = SourceConfig("fiches", path=fiches.path, multiplier=3.0, max_chars=int(share * total))
	config = config_for(corpus, sources=(source,))
	one, merged_dir = one_run_and_two_parts(config, reference / "vocab.txt", tmp_path)
	parts = [
		json.loads((merged_dir / "parts" / f"{i}-of-2" / "data.json").read_text())["pretrain"]["fiches"]
		for i in range(2)
	]
	single = json.loads((one / "data.json").read_text())["pretrain"]["fiches"]
	assert single["characters"] >= source.max_chars and sum(p["characters"] for p in parts) > single["characters"]
	merged = merge_data(merged_dir, progress=False)["pretrain"]["fiches"]
	assert documents_of(merged_dir) == documents_of(one)
	counts = ("documents", "characters", "records", "short", "duplicates", "near_duplicates", "filtered")
	assert {k: merged[k] for k in counts} == {k: single[k] for k in counts}
	assert merged["merge"]["dropped"] > 0 and merged["merge"]["misplaced"] == merged["merge"]["lost"] == 0
	for split in ("train", "validation"):
		keys = ("documents", "tokens", "characters")
		assert {k: merged["splits"][split][k] for k in keys} == {k: single["splits"][split][k] for k in keys}


def test_filters_drop_crafted_documents(tmp_path: Path) -> None:
	"""Each rule on a document made to fail it, and a real French paragraph kept; counts and examples in data.json."""
	sentences = [
		"Le matin, la ville s'éveille doucement et les marchands ouvrent leurs boutiques sur la place du marché.",
		"Les enfants courent vers l'école pendant que leurs parents discutent des nouvelles du jour.",
		"Au loin, le clocher de l'église sonne huit heures et les derniers volets s'ouvrent enfin.",
		"Une charrette chargée de légumes remonte lentement la rue principale vers la fontaine.",
		"Le boulanger, couvert de farine, salue chaque client par son prénom avec un large sourire.",
		"Dans le jardin public, deux vieillards commencent leur partie d'échecs quotidienne sous le tilleul.",
	]
	prose = " ".join(sentences)
	french = "le chat et la souris de la maison du village"
	crafted = {  # each passes the rules before its own (they are tried in the order of quality.RULES)
		"word_stats": "x" * 200,
		"stop_words": "The quick brown fox jumps over the lazy dog while the cat sleeps near the warm fire of the old house today.",
		"repetition": "aaaa " * 40 + french,
		"symbols": " ".join(f"#mot{i}" for i in range(40)) + " " + french,
		"digits": "Le compte 4839201857 de la banque du village porte le numéro 9938475610, la clé 2039485761, "
		"le code 5647382910 et la référence 1029384756 depuis le mois dernier.",
		"short_lines": "\n".join(f"Rubrique numéro{i}" for i in range(30)) + "\n" + french,
		"boilerplate": "Lorem ipsum dolor sit amet, le chat et la souris de la maison sont dans le jardin avec les "
		"enfants du village qui jouent au ballon.",
	}
	rules = type("Rules", (), dict.fromkeys(quality.RULES, True))
	assert quality.rejection(prose, rules) is None
	for rule, text in crafted.items():
		assert quality.rejection(text, rules) == rule, rule
		off = type("Rules", (), {**dict.fromkeys(quality.RULES, True), rule: False})
		assert quality.rejection(text, off) != rule  # each rule is its own switch
	rows = [{"text": " ".join(sentences[i % 6 :] + sentences[: i % 6]) + f" Jour {i}."} for i in range(12)]
	rows += [{"text": t} for t in crafted.values()]
	(tmp_path / "c.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
	config = DataConfig(
		vocab_size=1_600,
		tokenizer_chars=50_000,
		sources=(SourceConfig("c", path=str(tmp_path / "c.jsonl")),),
		instruct_sources=(),
		quality=QualityConfig(near_duplicates=False),
	)
	summary = create_data(config, tmp_path / "d", progress=False)
	manifest = summary["pretrain"]["c"]
	assert manifest["filtered"] == dict.fromkeys(quality.RULES, 1)
	assert manifest["documents"] == 12
	for rule, text in crafted.items():
		assert manifest["dropped_examples"][rule] == [text.strip()[:400]]
	off = create_data(
		DataConfig(**{**config.__dict__, "quality": QualityConfig(digits=False, near_duplicates=False)}),
		tmp_path / "e",
		progress=False,
	)
	assert off["pretrain"]["c"]["filtered"]["digits"] == 0 and off["pretrain"]["c"]["documents"] == 13


def test_planted_near_duplicates_are_dropped_within_and_across_sources(corpus_fr: Path, tmp_path: Path) -> None:
	lines = (corpus_fr / "service_public_fiches.jsonl").read_text(encoding="utf-8").splitlines()[:80]
	texts = [json.loads(line)["text"] for line in lines]
	rng = np.random.default_rng(0)

	def near(text: str) -> str:  # a few words changed: still the same page
		words = text.split()
		for k in rng.choice(len(words), size=max(1, len(words) // 100), replace=False):
			words[k] = "modifié"
		return " ".join(words)

	planted_a = [near(texts[i]) for i in (3, 10, 25)]  # near-copies inside source a
	planted_b = [near(texts[i]) for i in (40, 41)]  # near-copies of a's pages in source b
	b_own = [
		json.loads(line)["text"]
		for line in (corpus_fr / "legi_codes.jsonl").read_text(encoding="utf-8").splitlines()[:30]
	]
	for name, docs in (("a", texts + planted_a), ("b", b_own + planted_b)):
		(tmp_path / f"{name}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs), encoding="utf-8")
	config = DataConfig(
		vocab_size=1_600,
		tokenizer_chars=100_000,
		sources=tuple(SourceConfig(n, path=str(tmp_path / f"{n}.jsonl"), filter=False) for n in ("a", "b")),
		instruct_sources=(),
	)
	summary = create_data(config, tmp_path / "d", progress=False)
	a, b = summary["pretrain"]["a"], summary["pretrain"]["b"]
	assert a["near_duplicates"] >= 3 and b["near_duplicates"] >= 2
	assert a["documents"] == 80 + 3 - a["near_duplicates"] - a["duplicates"]
	assert b["documents"] <= 30  # the planted copies of a's pages are gone
	off = create_data(
		DataConfig(**{**config.__dict__, "quality": QualityConfig(near_duplicates=False)}),
		tmp_path / "e",
		progress=False,
	)
	assert (
		off["pretrain"]["a"]["near_duplicates"] == 0
		and off["pretrain"]["b"]["documents"] == b["documents"] + b["near_duplicates"]
	)


def test_killed_run_resumes_inside_a_hub_stream(corpus: Path, tmp_path: Path) -> None:
	"""A folder read as a hub dataset (the streaming code path): killed mid-shard, resumed from the saved position."""
	folder = tmp_path / "hub"
	folder.mkdir()
	lines = (corpus / "fiches.jsonl").read_text(encoding="utf-8").splitlines()
	for k in range(2):
		(folder / f"part{k}.jsonl").write_text("\n".join(lines[k::2]) + "\n", encoding="utf-8")
	config = config_for(corpus, sources=(source_from_spec(f"hub=hf:{folder}@1"),), shard_tokens=20_000)
	reference = tmp_path / "reference"
	create_data(config, reference, progress=False)
	out = tmp_path / "out"
	out.mkdir()
	shutil.copy(reference / "vocab.txt", out / "vocab.txt")
	seen = []

	def kill_after_two(manifest: dict) -> None:  # at the second training shard: after one saved position
		seen.append(manifest)
		if [m["split"] for m in seen].count("train") == 2:
			raise KeyboardInterrupt

	with pytest.raises(KeyboardInterrupt):
		create_data(config, out, progress=False, on_shard=kill_after_two)
	position = json.loads((out / "pretrain" / "hub" / "progress.json").read_text())["position"]
	assert position[1] > 0  # inside a hub shard (a data file of the stream), not at its start
	create_data(config, out, progress=False)
	got, want = files(out), files(reference)
	del want["tokenizer_sample.txt"], want["tokenizer_sample.json"]
	assert got.keys() == want.keys()
	assert all(got[name] == want[name] for name in got if name != "data.json")


def test_verify_data_names_a_damaged_shard(built: tuple[Path, dict], tmp_path: Path) -> None:
	reference, _ = built
	data = tmp_path / "d"
	shutil.copytree(reference, data)
	command = [sys.executable, "-m", "dimgpt", "verify-data", str(data), "--no-progress"]
	env = {**os.environ, "PYTHONPATH": str(ROOT)}
	ok = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
	assert ok.returncode == 0 and "shards match their checksums" in ok.stdout
	bin_path = data / "pretrain" / "legi" / "train_00001.bin"
	tokens = np.fromfile(bin_path, dtype=np.uint16)
	tokens[100:200] = 42  # valid ids: only the checksum can tell
	tokens.tofile(bin_path)
	bad = subprocess.run(command, capture_output=True, text=True, env=env, timeout=120)
	assert bad.returncode == 4 and "Traceback" not in bad.stderr
	assert bad.stderr.count("\n") == 1 and "train_00001.bin does not match its checksum" in bad.stderr
	assert "run create-data again" in bad.stderr
	with pytest.raises(StoreError, match=r"train_00001\.bin"):
		PretrainLoader(data, "train", 2, 16, seed=0)
