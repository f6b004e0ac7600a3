"""Instruction data: malformed records skipped and counted, chat format, role marks, the store round trip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from dimgpt.config import DataConfig, SourceConfig
from dimgpt.data.create import create_data
from dimgpt.data.instruct import (
	ANSWER,
	PROMPT,
	build_instruct_source,
	insert_preprompt,
	open_instruct_source,
	parse_record,
	role_marks,
)
from dimgpt.data.tokenizer import ASSISTANT, END_OF_TEXT, HUMAN, START_OF_TEXT, SYSTEM, USER, Tokenizer

GOOD = {
	"context": "",
	"conversation": [{"role": "user", "text": "Bonjour ?"}, {"role": "assistant", "text": "Salut !"}],
}
MALFORMED = [
	({"conversation": [{"text": "sans rôle"}, {"role": "assistant", "text": "ok"}]}, "missing role"),
	({"conversation": [{"role": "user", "text": "question"}, {"role": "robot", "text": "x"}]}, "unknown role"),
	({"conversation": [{"role": "user", "text": "question"}, {"role": "assistant", "text": "  "}]}, "empty turn"),
	({"conversation": [{"role": "user", "text": "question"}, {"role": "assistant"}]}, "empty turn"),
	({"conversation": []}, "no conversation"),
	({"context": "x"}, "no conversation"),
	("not a record", "no conversation"),
	({"conversation": [{"role": "user", "text": "question seule"}]}, "no answer"),
]


@pytest.mark.parametrize(("record", "reason"), MALFORMED)
def test_malformed_records_give_their_reason(record: object, reason: str) -> None:
	assert parse_record(record) == ([], reason)


def test_context_and_roles() -> None:
	record = {
		"context": "Tu es poli.",
		"conversation": [
			{"role": "user", "text": " Q "},
			{"role": "human", "text": "R"},
			{"role": "User", "text": "Q2"},
			{"role": "assistant", "text": "R2"},
		],
	}
	turns, problem = parse_record(record)
	assert problem is None
	assert turns == [("system", "Tu es poli."), ("user", "Q"), ("human", "R"), ("user", "Q2"), ("assistant", "R2")]


def test_role_marks_close_answers_with_the_next_role_token() -> None:
	tokens = np.array([START_OF_TEXT, SYSTEM, 20, USER, 21, HUMAN, 22, 23, USER, 24, ASSISTANT, 25, END_OF_TEXT])
	marks = role_marks(tokens)
	answer = [i for i, m in enumerate(marks) if m == ANSWER]
	assert answer == [6, 7, 8, 11, 12]  # answer text and the ⮜user⮞ / ⮜end-of-text⮞ closing it


def test_insert_preprompt_keeps_an_existing_system_turn() -> None:
	tokens = np.array([START_OF_TEXT, USER, 20, ASSISTANT, 21, END_OF_TEXT])
	marks = role_marks(tokens)
	new_tokens, new_marks = insert_preprompt(tokens, marks, np.array([30, 31]))
	assert new_tokens.tolist() == [START_OF_TEXT, SYSTEM, 30, 31, USER, 20, ASSISTANT, 21, END_OF_TEXT]
	assert np.array_equal(new_marks, role_marks(new_tokens))
	again, _ = insert_preprompt(new_tokens, new_marks, np.array([40]))
	assert np.array_equal(again, new_tokens)


def test_store_round_trip_with_malformed_records(tokenizer: Tokenizer, tmp_path: Path) -> None:
	records = [GOOD] * 30 + [r for r, _ in MALFORMED] + [{**GOOD, "group": "special"}]
	manifest = build_instruct_source(
		tmp_path,
		records,
		tokenizer,
		meta={"tokenizer_fingerprint": tokenizer.fingerprint, "multiplier": 1.0},
		group="chatbot",
		validation_fraction=0.1,
		min_validation=2,
	)
	assert manifest["malformed"] == {
		"empty turn": 2,
		"missing role": 1,
		"no answer": 1,
		"no conversation": 3,
		"unknown role": 1,
	}
	splits = manifest["splits"]
	assert splits["train"]["conversations"] + splits["validation"]["conversations"] == 31
	assert splits["validation"]["conversations"] == 3
	assert manifest["groups"] == ["chatbot", "special"]
	_, shard, marks, groups = open_instruct_source(tmp_path, "train")
	assert shard.documents == splits["train"]["conversations"] == len(groups)
	first = np.asarray(shard.tokens[shard.offsets[0] : shard.offsets[1]])
	assert first[0] == START_OF_TEXT and first[1] == USER and first[-1] == END_OF_TEXT
	assert (
		tokenizer.decode(first.tolist(), control=True)
		== "⮜start-of-text⮞⮜user⮞Bonjour ?⮜assistant⮞Salut !⮜end-of-text⮞"
	)
	assert np.array_equal(marks[: len(first)], role_marks(first))
	assert [manifest["groups"][g] for g in groups].count("special") + [
		manifest["groups"][g] for g in open_instruct_source(tmp_path, "validation")[3]
	].count("special") == 1
	assert set(np.unique(marks).tolist()) == {PROMPT, ANSWER}


def test_instruct_fr_through_create_data(instruct_fr: Path, tmp_path: Path) -> None:
	"""Real conversations plus a file of broken ones: the broken ones are counted, the rest stored."""
	broken = tmp_path / "broken.jsonl"
	broken.write_text("".join(json.dumps(r) + "\n" for r, _ in MALFORMED if isinstance(r, dict)), encoding="utf-8")
	config = DataConfig(
		vocab_size=1_600,
		tokenizer_chars=200_000,
		sources=(
			SourceConfig("cnil", path=str(instruct_fr / "cnil_faq_fr.jsonl"), text_column="source", filter=False),
		),
		instruct_sources=(
			SourceConfig("cnil_faq", path=str(instruct_fr / "cnil_faq_fr.jsonl"), group="chatbot"),
			SourceConfig("broken", path=str(broken)),
		),
		min_document_chars=1,
	)
	summary = create_data(config, tmp_path / "d", progress=False)
	cnil = summary["instruct"]["cnil_faq"]
	lines = (instruct_fr / "cnil_faq_fr.jsonl").read_text(encoding="utf-8").splitlines()
	assert sum(s["conversations"] for s in cnil["splits"].values()) == len(lines)
	assert cnil["malformed"] == {}
	assert sum(summary["instruct"]["broken"]["malformed"].values()) == len(broken.read_text().splitlines())
	assert cnil["splits"]["validation"]["conversations"] == round(0.02 * len(lines))
