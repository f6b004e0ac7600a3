"""The fine-tuning mix: loss weights token by token, group and preprompt ratios, validation, resources."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from dimgpt.config import DIMENSIONGPT_GROUPS, DataConfig, InstructMix, MixGroup, from_dict, to_dict
from dimgpt.data.instruct import build_instruct_source, parse_record
from dimgpt.data.mix import RESOURCES, MixLoader
from dimgpt.data.store import write_json
from dimgpt.data.tokenizer import ASSISTANT, END_OF_TEXT, PADDING, START_OF_TEXT, SYSTEM, USER, Tokenizer
from dimgpt.presets import dimensiongpt_mix, get_preset, load_preprompts

HAND_WRITTEN = {
	"context": "",
	"conversation": [
		{"role": "user", "text": "Bonjour, qui es-tu ?"},
		{"role": "assistant", "text": "Je suis DimensionGPT."},
		{"role": "user", "text": "Merci !"},
		{"role": "assistant", "text": "Avec plaisir."},
	],
}


def read_jsonl(path: Path) -> list[dict]:
	return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def make_store(directory: Path, tokenizer: Tokenizer, sources: dict[str, tuple[list[dict], str]], held: float) -> Path:
	"""A dataset folder holding only an instruction store: {name: (records, group)}."""
	tokenizer.save(directory / "vocab.txt")
	manifest = {}
	for name, (records, group) in sources.items():
		manifest[name] = build_instruct_source(
			directory / "instruct" / name,
			records,
			tokenizer,
			meta={"multiplier": 1.0, "tokenizer_fingerprint": tokenizer.fingerprint},
			group=group,
			validation_fraction=held,
			min_validation=1,
		)
	write_json(directory / "data.json", {"instruct": manifest})
	return directory


def test_loss_weights_token_by_token(tmp_path, tokenizer):
	# Two copies of one conversation: one is held out for validation, the other is trained on.
	store = make_store(tmp_path, tokenizer, {"hand": ([HAND_WRITTEN, HAND_WRITTEN], "chatbot")}, held=0.5)
	q1, a1, q2, a2 = (np.array(tokenizer.encode(t["text"])) for t in HAND_WRITTEN["conversation"])
	conversation = np.concatenate(
		[[START_OF_TEXT, USER], q1, [ASSISTANT], a1, [USER], q2, [ASSISTANT], a2, [END_OF_TEXT]]
	)
	# the weight of each *target*, i.e. of conversation[1:], written out segment by segment
	i, a = 0.1, 1.0
	expected = [i] + [i] * len(q1) + [i] + [a] * len(a1) + [a] + [i] * len(q2) + [i] + [a] * len(a2) + [a]
	assert len(expected) == len(conversation) - 1

	no_preprompt = replace(dimensiongpt_mix(), groups=(MixGroup("chatbot", 1.0),), preprompt_ratio=0.0)
	size = len(conversation) + 5
	train = MixLoader(store, "train", 2, size, no_preprompt, instruction_weight=0.1)
	x, y, w = train.next_batch()
	n = len(conversation) - 1
	assert x[0, : n + 1].tolist() == conversation.tolist()  # the row starts at the start of a conversation
	assert y[0, :n].tolist() == conversation[1:].tolist()
	assert w[0, :n].tolist() == pytest.approx(expected)
	# the row goes on with the next conversation: its ⮜start-of-text⮞ and question are instructions
	assert y[0, n].item() == START_OF_TEXT and w[0, n].item() == pytest.approx(0.1)
	assert w[0, n + 1 : n + 4].tolist() == pytest.approx([0.1] * 3)

	# validation: the fixed preprompt, instructions weigh 0, answers 1, padding 0
	preprompt = np.array(tokenizer.encode(no_preprompt.validation_preprompt))
	with_system = np.concatenate([[START_OF_TEXT, SYSTEM], preprompt, conversation[1:]])
	valid = MixLoader(store, "validation", 2, len(with_system) + 7, no_preprompt)
	x, y, w = valid.next_batch()
	m = len(with_system) - 1
	assert x[0, : m + 1].tolist() == with_system.tolist()
	val_expected = [0.0] * (1 + len(preprompt)) + [0.0 if v == i else 1.0 for v in expected]
	assert w[0].tolist() == pytest.approx(val_expected + [0.0] * 8)
	assert y[0, m:].tolist() == [PADDING] * 8 and x[0, m + 1 :].tolist() == [PADDING] * 7
	# one held-out conversation: the second row of the batch is empty
	assert w[1].sum().item() == 0 and set(x[1].tolist()) == {PADDING}

	# a training preprompt is an instruction too
	always = replace(no_preprompt, preprompt_ratio=1.0)
	x, y, w = MixLoader(store, "train", 4, size + 60, always).next_batch()
	for row in range(4):
		assert x[row, 1].item() == SYSTEM
		user = x[row].tolist().index(USER)
		assert w[row, : user - 1].tolist() == pytest.approx([0.1] * (user - 1))


def group_records(prefix: str, count: int) -> list[dict]:
	"""`count` distinct conversations whose question starts with `prefix`."""
	return [
		{"conversation": [{"role": "user", "text": f"{prefix} {k} ?"}, {"role": "assistant", "text": f"Réponse {k}."}]}
		for k in range(count)
	]


@pytest.fixture(scope="module")
def three_groups(tmp_path_factory, tokenizer) -> Path:
	sources = {
		"people": (group_records("Bonjour", 40), "human"),
		"bots": (group_records("Merci", 300), "chatbot"),
		"me": (group_records("Qui", 12), "identity"),
	}
	return make_store(tmp_path_factory.mktemp("mix"), tokenizer, sources, held=0.1)


def test_group_and_preprompt_ratios_within_tolerance(three_groups, tokenizer):
	# the DimensionGPT ratios, on draws
	loader = MixLoader(three_groups, "train", 8, 64, dimensiongpt_mix())
	assert loader.ratios == pytest.approx({"human": 0.099, "chatbot": 0.9, "identity": 0.001})
	rng = np.random.default_rng(1)
	n = 100_000
	draws = [loader.draw(rng) for _ in range(n)]
	counts = Counter(group for group, _, _ in draws)
	for group, p in loader.ratios.items():
		assert abs(counts[group] - n * p) <= 5 * np.sqrt(n * p * (1 - p)) + 1, (group, counts[group])
	with_preprompt = sum(p is not None for _, _, p in draws)
	assert abs(with_preprompt - n / 2) <= 5 * np.sqrt(n / 4)
	# within a group, conversations are drawn uniformly
	human = Counter(index for group, index, _ in draws if group == "human")
	assert len(human) == len(loader.members[0])

	# the same on real batches: conversations recognised by the first token of their question
	groups = (MixGroup("human", 0.3), MixGroup("chatbot", 0.6), MixGroup("identity", 0.1))
	mix = replace(dimensiongpt_mix(), groups=groups, preprompt_ratio=0.25)
	loader = MixLoader(three_groups, "train", 32, 48, mix)
	first = {
		tokenizer.encode(word)[0]: group
		for word, group in (("Bonjour", "human"), ("Merci", "chatbot"), ("Qui", "identity"))
	}
	counts, starts, systems = Counter(), 0, 0
	for _ in range(60):
		x, _, _ = loader.next_batch()
		for row in x.numpy():
			# every drawn conversation starts in the row; its length only decides what comes after it
			for s in np.flatnonzero(row[:-1] == START_OF_TEXT):
				starts += 1
				systems += row[s + 1] == SYSTEM
				users = np.flatnonzero(row[s + 1 :] == USER)
				if len(users) and s + 2 + users[0] < len(row):  # the question's first token is in the row
					counts[first[row[s + 2 + users[0]]]] += 1
	total = sum(counts.values())
	assert total > 1_000
	for group, p in (("human", 0.3), ("chatbot", 0.6), ("identity", 0.1)):
		assert abs(counts[group] - total * p) <= 5 * np.sqrt(total * p * (1 - p)), (group, counts)
	assert abs(systems - starts * 0.25) <= 5 * np.sqrt(starts * 0.25 * 0.75)


def test_missing_groups_are_renormalised_and_unknown_ones_refused(three_groups):
	mix = InstructMix(groups=(MixGroup("chatbot", 0.6), MixGroup("nowhere", 0.4)))
	assert MixLoader(three_groups, "train", 2, 32, mix).ratios == {"chatbot": 1.0}
	with pytest.raises(ValueError, match="none of the groups"):
		MixLoader(three_groups, "train", 2, 32, InstructMix(groups=(MixGroup("nowhere", 1.0),)))


def test_validation_covers_held_out_conversations_once(three_groups):
	loader = MixLoader(three_groups, "validation", 4, 192, dimensiongpt_mix())
	held = loader.num_conversations
	assert held == 4 + 30 + 1  # 10 % of each source
	rows = []
	for _ in range(12):  # more batches than held-out conversations
		x, _, w = loader.next_batch()
		rows += [tuple(r) for r, weights in zip(x.tolist(), w.tolist()) if sum(weights) > 0]
	assert len(rows) == held and len(set(rows)) == held
	again = MixLoader(three_groups, "validation", 4, 48, dimensiongpt_mix())
	assert (
		again.next_batch()[0].tolist()
		== MixLoader(three_groups, "validation", 4, 48, dimensiongpt_mix()).next_batch()[0].tolist()
	)


def test_training_batches_resume_from_state(three_groups):
	loader = MixLoader(three_groups, "train", 4, 48, dimensiongpt_mix(), seed=3)
	batches = [loader.next_batch() for _ in range(5)]
	state = loader.state_dict()
	after = loader.next_batch()
	resumed = MixLoader(three_groups, "train", 4, 48, dimensiongpt_mix(), seed=3)
	resumed.load_state_dict(json.loads(json.dumps(state)))
	assert all(a.equal(b) for a, b in zip(resumed.next_batch(), after))
	assert not batches[0][0].equal(batches[1][0])


def test_mix_config_round_trip_and_checks():
	assert DataConfig().instruct_mix == InstructMix(preprompt_ratio=0.0, validation_preprompt=None)  # no file read
	data = get_preset("tiny").data
	assert data.instruct_mix.groups == DIMENSIONGPT_GROUPS
	assert {g.name: g.ratio for g in DIMENSIONGPT_GROUPS} == {"human": 0.099, "chatbot": 0.9, "identity": 0.001}
	assert data.instruct_mix.validation_preprompt == data.instruct_mix.preprompts[0]
	changed = replace(
		data, instruct_mix=replace(data.instruct_mix, groups=(MixGroup("chatbot", 1.0),), preprompt_ratio=0.2)
	)
	assert from_dict(DataConfig, json.loads(json.dumps(to_dict(changed)))) == changed
	with pytest.raises(ValueError, match="preprompt_ratio"):
		InstructMix(preprompt_ratio=1.5)
	with pytest.raises(ValueError, match="unique"):
		InstructMix(groups=(MixGroup("a", 1.0), MixGroup("a", 1.0)))
	with pytest.raises(ValueError, match="ratio"):
		MixGroup("a", -1.0)


def test_resources_are_well_formed():
	identity = read_jsonl(RESOURCES / "self_identity.jsonl")
	assert 30 <= len(identity) <= 60
	for record in identity + read_jsonl(RESOURCES / "default.jsonl"):
		_, problem = parse_record(record)
		assert problem is None, record
	questions = [r["conversation"][0]["text"] for r in identity]
	assert len(set(questions)) >= 45  # varied phrasings
	assert sum("DimensionGPT" in r["conversation"][1]["text"] for r in identity) >= 40
	pool = load_preprompts()
	assert len(pool) >= 10 and len(set(pool)) == len(pool)
	with pytest.raises(FileNotFoundError, match="preprompt pool"):
		load_preprompts(RESOURCES / "nope.txt")


def test_dataset_context_is_kept_instead_of_a_preprompt(tmp_path, tokenizer):
	record = {"context": "Tu parles comme un pirate.", **{k: v for k, v in HAND_WRITTEN.items() if k != "context"}}
	store = make_store(tmp_path, tokenizer, {"hub": ([record, record], "chatbot")}, held=0.5)
	mix = replace(dimensiongpt_mix(), groups=(MixGroup("chatbot", 1.0),), preprompt_ratio=1.0)
	context = [SYSTEM, *tokenizer.encode("Tu parles comme un pirate."), USER]
	for split in ("train", "validation"):
		row = MixLoader(store, split, 2, 96, mix).next_batch()[0][0].tolist()
		starts = [s for s in range(len(row) - len(context)) if row[s] == START_OF_TEXT]
		assert starts and all(row[s + 1 : s + 1 + len(context)] == context for s in starts)
		# one system segment per conversation, the dataset's context: no pool preprompt added
		assert all(i > 0 and row[i - 1] == START_OF_TEXT for i, t in enumerate(row) if t == SYSTEM)


@pytest.mark.slow  # the real instruction files; the fast lane mixes the shipped resources above
def test_mix_over_the_french_instruction_files(tmp_path, tokenizer, instruct_fr):
	# the corpus-fr instruction sources, read through the same `datasets` path as hub sources
	from dimgpt.data.sources import read_records
	from dimgpt.presets import corpus_fr_sources

	_, sources = corpus_fr_sources(instruct_fr.parent)
	records = {s.name: (list(read_records(s)), s.group or s.name) for s in sources}
	store = make_store(tmp_path, tokenizer, records, held=0.02)
	loader = MixLoader(store, "train", 16, 128, dimensiongpt_mix())
	assert loader.ratios == pytest.approx({"human": 0.099, "chatbot": 0.9, "identity": 0.001})
	assert loader.num_conversations > 2_000
	_, _, w = loader.next_batch()
	assert {round(v, 6) for v in w.unique().tolist()} == {0.1, 1.0}  # packed rows: no padding in training
	valid = MixLoader(store, "validation", 16, 128, dimensiongpt_mix())
	assert 30 <= valid.num_conversations <= 80
	answered = 0
	for _ in range(-(-valid.num_conversations // 16)):
		_, _, w = valid.next_batch()
		answered += int((w.sum(dim=1) > 0).sum())
	# with this small test vocabulary, a few long questions fill the 128-token window before their answer
	assert 0.8 * valid.num_conversations <= answered <= valid.num_conversations
