"""Instruction data: conversations in the chat format, stored as flat tokens with per-token role marks.

A record is `{"context": optional system text, "conversation": [{"role", "text"}, ...]}` (the French
Instruct format; roles user | assistant | human | system). It becomes (`dimgpt.data.chat_format`)

    ⮜start-of-text⮞ [⮜system⮞ context] ⮜user⮞ question ⮜assistant⮞ answer ⮜user⮞ … ⮜end-of-text⮞

with one role mark per token saying how the token weighs when it is the *target*:
    ANSWER (1)  the tokens after ⮜assistant⮞ / ⮜human⮞ up to and including the role token or
                ⮜end-of-text⮞ that closes the answer: weight 1.0;
    PROMPT (0)  everything else (start, system text, questions, the ⮜assistant⮞ that opens an answer):
                weight 0.1 in training (`instruction_weight`), 0 in validation;
    PADDING_MARK (2)  padding, weight 0 (never stored; loaders that pad use it).

Store, per source, in `instruct/SOURCE/` (written whole, then renamed; `source.json` written last):
    SPLIT.bin        token ids (uint16, uint32 beyond 65,536 tokens)
    SPLIT.marks.bin  uint8 role marks, one per token
    SPLIT.idx.npy    int64 conversation offsets (conversations + 1)
    SPLIT.groups.npy uint8 group of each conversation, an index into source.json's "groups"
A system preprompt can be inserted at loading time with `insert_preprompt` (a stored `context`
stays, so a conversation that has one keeps it).
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from dimgpt.data.chat_format import ROLE_TOKENS, conversation, is_role_or_end, opens_answer, turn
from dimgpt.data.store import (
	FORMAT_VERSION,
	Shard,
	StoreError,
	check_fingerprint,
	field,
	held_out,
	open_shard,
	read_json,
	rebuild_advice,
	validation_count,
	write_json,
)
from dimgpt.data.tokenizer import SYSTEM, Tokenizer

PROMPT, ANSWER, PADDING_MARK = 0, 1, 2


def parse_record(record: Any) -> tuple[list[tuple[str, str]], str | None]:
	"""(turns, None) for a valid record, ([], reason) for a malformed one.

	A non-empty `context` becomes a leading system turn. Malformed: no conversation list, a turn
	without a role, an unknown role, an empty turn, or no answer at all.
	"""
	if not isinstance(record, dict) or not isinstance(record.get("conversation"), list) or not record["conversation"]:
		return [], "no conversation"
	turns = []
	context = record.get("context")
	if isinstance(context, str) and context.strip():
		turns.append(("system", context.strip()))
	for message in record["conversation"]:
		if not isinstance(message, dict) or not message.get("role"):
			return [], "missing role"
		role = str(message["role"]).strip().lower()
		if role not in ROLE_TOKENS:
			return [], "unknown role"
		text = message.get("text")
		if not isinstance(text, str) or not text.strip():
			return [], "empty turn"
		turns.append((role, text.strip()))
	if not any(role in ("assistant", "human") for role, _ in turns):
		return [], "no answer"
	return turns, None


def role_marks(tokens: np.ndarray) -> np.ndarray:
	"""The role mark of every token of one formatted conversation (see the module docstring)."""
	marks = np.empty(len(tokens), dtype=np.uint8)
	answering = False
	for i, token in enumerate(tokens.tolist()):
		marks[i] = ANSWER if answering else PROMPT
		if opens_answer(token):
			answering = True
		elif is_role_or_end(token):
			answering = False
	return marks


def format_conversations(turn_lists: list[list[tuple[str, str]]], tokenizer: Tokenizer) -> list[np.ndarray]:
	"""Token ids of conversations in the chat format (all turn texts encoded in one parallel batch)."""
	texts = [text for turns in turn_lists for _, text in turns]
	encoded = iter(tokenizer.encode_batch(texts))
	return [
		np.array(conversation((role, next(encoded).tolist()) for role, _ in turns), dtype=np.int64)
		for turns in turn_lists
	]


def insert_preprompt(tokens: np.ndarray, marks: np.ndarray, preprompt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
	"""Insert `⮜system⮞ preprompt` (token ids without the marker) after ⮜start-of-text⮞, unless there is one."""
	if len(tokens) > 1 and tokens[1] == SYSTEM:
		return tokens, marks
	head = np.array(turn("system", preprompt.tolist()), dtype=tokens.dtype)
	return (
		np.concatenate([tokens[:1], head, tokens[1:]]),
		np.concatenate([marks[:1], np.full(len(head), PROMPT, np.uint8), marks[1:]]),
	)


def build_instruct_source(
	directory: Path,
	records: Iterable[Any],
	tokenizer: Tokenizer,
	*,
	meta: dict[str, Any],
	group: str,
	validation_fraction: float,
	min_validation: int,
) -> dict[str, Any]:
	"""Format, encode and store one source of conversations; return its manifest (counts, malformed records)."""
	directory = Path(directory)
	directory.mkdir(parents=True, exist_ok=True)
	malformed: Counter[str] = Counter()
	turn_lists, groups = [], []
	for record in records:
		turns, problem = parse_record(record)
		if problem:
			malformed[problem] += 1
			continue
		turn_lists.append(turns)
		label = record.get("group") if isinstance(record.get("group"), str) and record.get("group") else group
		groups.append(label)
	names = sorted(set(groups))
	if len(names) > 255:
		raise StoreError(f"{directory}: more than 255 conversation groups")
	conversations = format_conversations(turn_lists, tokenizer) if turn_lists else []
	n = len(conversations)
	held = held_out(np.arange(n), n, validation_count(n, validation_fraction, min_validation))
	dtype = np.dtype(np.uint16 if tokenizer.vocab_size <= 65_536 else np.uint32)
	splits = {}
	for split, keep in (("train", ~held), ("validation", held)):
		chosen = [c for c, k in zip(conversations, keep) if k]
		tokens = np.concatenate(chosen).astype(dtype) if chosen else np.zeros(0, dtype)
		marks = np.concatenate([role_marks(c) for c in chosen]) if chosen else np.zeros(0, np.uint8)
		offsets = np.cumsum([0] + [len(c) for c in chosen]).astype(np.int64)
		split_groups = np.array([names.index(g) for g, k in zip(groups, keep) if k], dtype=np.uint8)
		for suffix, array in ((".bin", tokens), (".marks.bin", marks)):
			(directory / f"{split}{suffix}.tmp").write_bytes(array.tobytes())
			os.replace(directory / f"{split}{suffix}.tmp", directory / f"{split}{suffix}")
		for suffix, array in ((".idx.npy", offsets), (".groups.npy", split_groups)):
			with open(directory / f"{split}{suffix}.tmp", "wb") as f:
				np.save(f, array)
			os.replace(directory / f"{split}{suffix}.tmp", directory / f"{split}{suffix}")
		splits[split] = {
			"conversations": len(chosen),
			"tokens": len(tokens),
			"answer_tokens": int((marks == ANSWER).sum()),
		}
	manifest = {
		**meta,
		"format_version": FORMAT_VERSION,
		"dtype": dtype.name,
		"groups": names,
		"malformed": dict(sorted(malformed.items())),
		"splits": splits,
	}
	write_json(directory / "source.json", manifest)
	return manifest


def open_instruct_source(directory: Path, split: str) -> tuple[dict[str, Any], Shard, np.ndarray, np.ndarray]:
	"""(manifest, tokens as a Shard, role marks, group index of each conversation) of one stored source."""
	directory = Path(directory)
	path = directory / "source.json"
	manifest = read_json(path)
	check_fingerprint(manifest, path, manifest.get("tokenizer_fingerprint", ""))
	info = field(manifest, path, "splits", split)
	shard_manifest = {
		"dtype": field(manifest, path, "dtype"),
		"tokens": field(info, path, "tokens"),
		"documents": field(info, path, "conversations"),
	}
	stem = directory / split
	shard = open_shard(stem, shard_manifest)
	marks_path = directory / f"{split}.marks.bin"
	if not marks_path.exists() or marks_path.stat().st_size != info["tokens"]:
		raise StoreError(f"{marks_path} is missing or truncated: {rebuild_advice(marks_path)}")
	marks = np.memmap(marks_path, dtype=np.uint8, mode="r") if info["tokens"] else np.zeros(0, np.uint8)
	groups_path = directory / f"{split}.groups.npy"
	try:
		groups = np.load(groups_path, allow_pickle=False)
	except (ValueError, OSError, EOFError):
		raise StoreError(f"{groups_path} is missing or corrupt: {rebuild_advice(groups_path)}") from None
	if groups.shape != (shard.documents,) or (
		len(groups) and int(groups.max()) >= len(field(manifest, path, "groups"))
	):
		raise StoreError(f"{groups_path} does not match {shard.path}: {rebuild_advice(groups_path)}")
	return manifest, shard, marks, groups
