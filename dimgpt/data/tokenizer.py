"""The DimensionGPT tokenizer: vocab.txt format, greedy longest-match encoding, training.

Encoding (docs/dimensiongpt.md, "Encoding"): clean the text; tabs and newlines become their control tokens; the rest is
split into words (runs of digits | runs of letters | runs of other characters | runs of spaces, a
single space glued to the front of the next word, a space run giving its last space to the next
word); each word is cut greedily left to right into the longest vocabulary token of at most 16
characters; a character with no token gives ⮜unknown⮞.

Two encoders give the same ids. When numba is installed, `greedy_kernel` compiles the split and the
greedy match into one pass over the code points (a trie walk per token). Without it, the pure-Python
word cache below does the work, several times slower.

Word cache. Cutting a text just before a space that follows a non-space is always a word boundary
(a space is glued to the next word), so a text with no double space is the concatenation of its
space-separated chunks, each encoded on its own as " " + chunk. `str.split(" ")` makes the chunks in
C, a dict maps each chunk to its ids (a word cache, as in tiktoken), and only chunks never seen go
through the plain algorithm: all of a piece's unseen chunks at once (one set difference, one regex
pass over them joined), each unseen word cut greedily with the search starting at the longest token
that begins with its next two characters. Runs of 2+ spaces are cut out first and encoded by the rule. Long
documents are encoded in chunks of about 1M characters (bounded memory), and `encode_batch` spreads
the work over a pool of processes, one per core.

Hugging Face `tokenizers` serves twice: its BpeTrainer learns the merges natively for training, and
`save_hf` exports a WordPiece tokenizer.json (empty continuing-subword prefix) that reproduces the
greedy encoder on cleaned text. Its Rust encoder is not used for encoding: measured here, WordPiece's
longest-match loop (restarting from the word end) was slower than this word cache, and slower
than the Python greedy on a batch of unseen words too (0.19 s against 0.08 s for 41k words).
"""

from __future__ import annotations

import hashlib
import multiprocessing as mp
import multiprocessing.pool
import os
import re
import weakref
from collections.abc import Iterable, Sequence
from itertools import chain, compress, count, islice, repeat
from pathlib import Path
from typing import Any

import numpy as np
import regex
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE, WordPiece
from tokenizers.trainers import BpeTrainer
from tqdm.auto import tqdm

from dimgpt.data import greedy_kernel
from dimgpt.data.cleaning import TOKEN_CHARACTERS, unclean
from dimgpt.data.cleaning import clean as clean_text
from dimgpt.errors import BadFileError, NotFoundError, UsageError

CONTROL_TOKENS: tuple[str, ...] = (
	"⮜unknown⮞",
	"⮜padding⮞",
	"⮜start-of-text⮞",
	"⮜tab⮞",
	"⮜new-line⮞",
	"⮜human⮞",
	"⮜system⮞",
	"⮜user⮞",
	"⮜assistant⮞",
	"⮜end-of-text⮞",
)
UNKNOWN, PADDING, START_OF_TEXT, TAB, NEW_LINE, HUMAN, SYSTEM, USER, ASSISTANT, END_OF_TEXT = range(10)
MAX_TOKEN_LENGTH = 16  # longest token the encoder ever matches (the released vocab's limit)

# One word (docs/dimensiongpt.md, "Encoding") inside a run of text with no tab, newline or control token.
WORD_PATTERN = r" ?[0-9]+| ?\p{L}+| ?[^ 0-9\p{L}]+| +(?![^ ])| +"
_CONTROL_RE = re.compile("(" + "|".join(re.escape(t) for t in CONTROL_TOKENS) + ")")
WORD_RE = regex.compile(WORD_PATTERN)
_TAB_NEWLINE_RE = re.compile("([\t\n])")
_TAB_NEWLINE_IDS = {"\t": [TAB], "\n": [NEW_LINE]}
_SPACE_RUN_RE = re.compile("(  +)")
_ONE = [np.array([i], dtype=np.int32) for i in range(len(CONTROL_TOKENS))]
_HF_MAX_WORD = 1_000  # tokenizer.json: longer words (never seen in real text) become one unknown there
_CHUNK_CHARS = 1 << 20  # documents are encoded in chunks of about this many characters (bounded memory)
_CACHE_SIZE = 1 << 20  # chunks remembered before the cache starts afresh
_PARALLEL_CHARS = 1 << 20  # below this many characters a batch is encoded in this process
_TASK_CHARS = 1 << 19  # characters sent to a worker at once


class Tokenizer:
	"""A DimensionGPT vocabulary (control tokens at ids 0-9) and its fast greedy encoder."""

	def __init__(self, vocab: Sequence[str], *, compiled: bool | None = None) -> None:
		"""compiled: encode with the numba kernel (default: when numba is installed) or the word cache."""
		self.vocab = list(vocab)
		self.compiled = greedy_kernel.available() if compiled is None else compiled
		self._trie: greedy_kernel.Trie | None = None  # built on first use
		_check_vocab(self.vocab, "the vocabulary")
		self._ids = {t: i for i, t in enumerate(self.vocab) if i >= len(CONTROL_TOKENS) and len(t) <= MAX_TOKEN_LENGTH}
		self._reach = _reach(self._ids)
		self._display = [*self.vocab]
		self._plain = ["", "", "", "\t", "\n", "", "", "", "", "", *self.vocab[len(CONTROL_TOKENS) :]]
		self._cache: dict[str, list[int]] = {}  # chunk -> ids of " " + chunk
		self._words: dict[str, list[int]] = dict(_TAB_NEWLINE_IDS)  # word -> its greedy ids
		self._workers: tuple[int, mp.pool.Pool, weakref.finalize] | None = None

	@property
	def vocab_size(self) -> int:
		return len(self.vocab)

	def byte_lengths(self) -> np.ndarray:
		"""UTF-8 bytes of the text each token stands for, int64 [vocab_size], for bits per byte: ⮜tab⮞,
		⮜new-line⮞ and ⮜unknown⮞ (one character) 1, the other control tokens 0 (they are no text)."""
		lengths = np.array([len(text.encode("utf-8")) for text in self._plain], dtype=np.int64)
		lengths[UNKNOWN] = 1
		return lengths

	@property
	def fingerprint(self) -> str:
		"""Short stable hash of the vocabulary (to check a checkpoint and a dataset agree)."""
		return hashlib.sha256("\n".join(self.vocab).encode()).hexdigest()[:16]

	# --- files

	@classmethod
	def load(cls, path: str | Path) -> Tokenizer:
		"""Read a vocab.txt (UTF-8, one token per line, line number = id), e.g. the released one."""
		path = Path(path)
		if not path.is_file():
			raise NotFoundError(
				f"vocabulary file {path} not found: train one (`make run`, or `.venv/bin/python -m dimgpt create-data`) or give the path of a vocab.txt"
			)
		data = path.read_bytes()
		try:
			text = data.decode("utf-8")
		except UnicodeDecodeError as e:
			raise BadFileError(
				f"{path}: invalid UTF-8 at byte offset {e.start}: a vocab.txt must be UTF-8 text"
			) from None
		if text.endswith("\n"):  # tolerate one trailing newline added by an editor
			text = text[:-1]
		if not text:
			raise BadFileError(
				f"{path} is empty: a vocab.txt holds one token per line, starting with the "
				f"{len(CONTROL_TOKENS)} control tokens; copy the vocabulary the model was trained with"
			)
		vocab = text.split("\n")
		_check_vocab(vocab, str(path))
		return cls(vocab)

	def save(self, path: str | Path) -> None:
		"""Write vocab.txt: tokens joined by \\n, no trailing newline (the released format)."""
		Path(path).write_text("\n".join(self.vocab), encoding="utf-8", newline="")

	def save_hf(self, path: str | Path) -> None:
		"""Write a tokenizer.json for `tokenizers.Tokenizer.from_file` (same ids on cleaned text, control=False)."""
		self._build_hf().save(str(path))

	# --- encoding

	def encode(self, text: str, *, clean: bool = True, control: bool = False) -> list[int]:
		"""Token ids of `text`. control=True honours control-token strings (internal chat formatting only)."""
		return self.encode_batch([text], clean=clean, control=control)[0].tolist()

	def encode_batch(
		self, texts: Sequence[str], *, clean: bool = True, control: bool = False, workers: int | None = None
	) -> list[np.ndarray]:
		"""Token ids (int32 arrays) of many documents, spread over `workers` processes (default: all cores)."""
		texts = list(texts)
		workers = workers or os.cpu_count() or 1
		if workers > 1 and sum(map(len, texts)) >= _PARALLEL_CHARS and not mp.current_process().daemon:
			return self._encode_parallel(texts, clean, control, workers)
		return [self._encode_document(text, clean, control) for text in texts]

	def _encode_document(self, text: str, clean: bool, control: bool) -> np.ndarray:
		if control:  # control tokens are cut out first; the text between them is encoded as usual
			parts = _CONTROL_RE.split(text)
			ids = [
				self._encode_text(clean_text(p) if clean else p) if i % 2 == 0 else _ONE[CONTROL_TOKENS.index(p)]
				for i, p in enumerate(parts)
			]
			return np.concatenate(ids)
		return self._encode_text(clean_text(text) if clean else text)

	def _encode_text(self, text: str) -> np.ndarray:
		encode = self._compiled_trie().encode if self.compiled else self._encode_chunk
		parts = [encode(chunk) for chunk in _chunks(text, _CHUNK_CHARS)]
		return parts[0] if len(parts) == 1 else np.concatenate(parts)

	def _compiled_trie(self) -> greedy_kernel.Trie:
		"""The vocabulary's trie, its kernel compiled (or loaded from the disk cache) on first use."""
		if self._trie is None:
			trie = greedy_kernel.Trie(self._ids)
			trie.encode("")  # compile now, so that forked workers inherit the machine code
			self._trie = trie
		return self._trie

	def _encode_chunk(self, text: str) -> np.ndarray:
		if "  " not in text:
			return np.fromiter(self._spaced_ids(text), dtype=np.int32)
		# A run of k spaces is a word of k - 1 spaces plus a space glued to the next word, or a word of
		# k spaces before a tab, a newline or the end.
		pieces = _SPACE_RUN_RE.split(text)
		ids = list(self._spaced_ids(pieces[0]))
		for run, piece in zip(pieces[1::2], pieces[2::2]):
			if piece == "" or piece[0] in "\t\n":
				ids += greedy(run, self._ids, reach=self._reach)
				ids += self._spaced_ids(piece)
			else:
				ids += greedy(run[:-1], self._ids, reach=self._reach)
				ids += self._spaced_ids(" " + piece)
		return np.array(ids, dtype=np.int32)

	def _spaced_ids(self, text: str) -> Iterable[int]:
		"""Ids of a text with no double space: its first chunk, then " " + each following chunk."""
		chunks = text.split(" ")
		cache = self._cache
		try:
			found = list(map(cache.__getitem__, chunks[1:]))  # every chunk seen before: all in C
		except KeyError:
			if len(cache) > _CACHE_SIZE:
				cache.clear()
			missing = list(set(islice(chunks, 1, None)).difference(cache))
			self._learn_chunks(missing)
			found = list(map(cache.__getitem__, chunks[1:]))
			for chunk in missing:  # long chunks (rarely seen twice) are not kept
				if len(chunk) > MAX_TOKEN_LENGTH * 4:
					del cache[chunk]
		return chain(self._plain_ids(chunks[0]), chain.from_iterable(found))

	def _learn_chunks(self, chunks: list[str]) -> None:
		"""Cache the ids of " " + each chunk, all chunks split into words by one regex pass."""
		# The chunks hold no space, so in " " + " ".join(chunks) a word starts with a space exactly
		# where a chunk starts (a space is glued to the word after it, or stands alone before a tab,
		# a newline or the end). Tabs and newlines are words of their own here.
		segments = _TAB_NEWLINE_RE.split(" " + " ".join(chunks))
		found = WORD_RE.findall(segments[0])
		for i in range(1, len(segments), 2):
			found.append(segments[i])
			found += WORD_RE.findall(segments[i + 1])
		words = self._words
		if len(words) > _CACHE_SIZE:
			words.clear()
			words.update(_TAB_NEWLINE_IDS)
		unseen = set(found).difference(words)
		for word in unseen:
			words[word] = greedy(word, self._ids, reach=self._reach)
		ids = list(map(words.__getitem__, found))
		for word in unseen:  # long words (rarely seen twice) are not kept
			if len(word) > MAX_TOKEN_LENGTH * 4:
				del words[word]
		starts = list(compress(count(), map(str.startswith, found, repeat(" "))))
		ends = [*starts[1:], len(found)]
		self._cache.update(
			zip(chunks, [ids[a] if b - a == 1 else [*chain.from_iterable(ids[a:b])] for a, b in zip(starts, ends)])
		)

	def _plain_ids(self, text: str) -> list[int]:
		"""The encoding algorithm (docs/dimensiongpt.md) written out, for what the cache has not seen."""
		words = self._words
		out = []
		for i, segment in enumerate(_TAB_NEWLINE_RE.split(text)):
			if i % 2:
				out.append(TAB if segment == "\t" else NEW_LINE)
			else:
				for word in WORD_RE.findall(segment):
					ids = words.get(word)
					if ids is None:
						ids = greedy(word, self._ids, reach=self._reach)
						if len(word) <= MAX_TOKEN_LENGTH * 4 and len(words) < _CACHE_SIZE:
							words[word] = ids
					out += ids
		return out

	def _encode_parallel(self, texts: list[str], clean: bool, control: bool, workers: int) -> list[np.ndarray]:
		# Big documents are cleaned here and cut into chunks so that all workers share them.
		tasks: list[tuple[int, str, bool]] = []
		for i, text in enumerate(texts):
			if len(text) > 2 * _CHUNK_CHARS and not control:
				tasks += [(i, chunk, False) for chunk in _chunks(clean_text(text) if clean else text, _CHUNK_CHARS)]
			else:
				tasks.append((i, text, clean))
		batches, batch, size = [], [], 0
		for task in tasks:
			batch.append(task)
			size += len(task[1])
			if size >= _TASK_CHARS:
				batches.append(batch)
				batch, size = [], 0
		batches.append(batch)
		jobs = [[(text, clean_it, control) for _, text, clean_it in b] for b in batches]
		out: list[list[np.ndarray]] = [[] for _ in texts]
		for batch, results in zip(batches, self._pool(workers).imap(_worker_encode, jobs)):
			for (i, _, _), ids in zip(batch, results):
				out[i].append(ids)
		return [parts[0] if len(parts) == 1 else np.concatenate(parts or [_ONE[0][:0]]) for parts in out]

	def _pool(self, workers: int) -> mp.pool.Pool:
		if self._workers is None or self._workers[0] != workers:
			self.close()
			method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
			trie = self._compiled_trie() if self.compiled else None  # built once, shared by the workers
			pool = mp.get_context(method).Pool(workers, initializer=_worker_init, initargs=(self.vocab, trie))
			self._workers = (workers, pool, weakref.finalize(self, pool.terminate))
		return self._workers[1]

	def __getstate__(self) -> dict[str, Any]:
		"""What a pickled tokenizer carries (to a spawned process, e.g. the serve command's engine): the vocabulary
		and its trie, not this process's encoding workers (a pool cannot be pickled) nor its caches (they refill)."""
		return {**self.__dict__, "_workers": None, "_cache": {}, "_words": dict(_TAB_NEWLINE_IDS)}

	def close(self) -> None:
		"""Stop the worker processes of `encode_batch`, if any (they also stop with the tokenizer)."""
		if self._workers is not None:
			self._workers[2]()
			self._workers = None

	# --- decoding

	def decode(self, ids: Iterable[int], *, control: bool = False) -> str:
		"""Display text of token ids; ids out of range are skipped. control=True keeps control tokens as text."""
		table = self._display if control else self._plain
		n = len(table)
		if isinstance(ids, np.ndarray):
			ids = ids.tolist()
		return unclean("".join([table[i] for i in ids if 0 <= i < n]))

	# --- the Rust encoder

	def _build_hf(self) -> HFTokenizer:
		matchable = self._ids
		known = sorted({c for t in matchable for c in t} - {" "})
		digits = [c for c in known if "0" <= c <= "9"]
		letters = [c for c in known if c not in digits and regex.match(r"\p{L}", c)]
		others = [c for c in known if c not in digits and c not in letters]
		# Runs of known characters as in WORD_PATTERN, then any other character alone (it has no token).
		parts = [" ?[" + "".join(f"\\x{{{ord(c):x}}}" for c in cs) + "]+" for cs in (digits, letters, others) if cs]
		pattern = "|".join([*parts, " +(?![^ ])", " +", "[^ ]"])
		vocab = {**matchable, **{t: i for i, t in enumerate(CONTROL_TOKENS)}}
		hf = HFTokenizer(
			WordPiece(
				vocab,
				unk_token=CONTROL_TOKENS[UNKNOWN],
				continuing_subword_prefix="",
				max_input_chars_per_word=_HF_MAX_WORD,
			)
		)
		hf.normalizer = normalizers.Sequence(
			[normalizers.Replace("\t", CONTROL_TOKENS[TAB]), normalizers.Replace("\n", CONTROL_TOKENS[NEW_LINE])]
		)
		hf.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
		hf.add_special_tokens([AddedToken(CONTROL_TOKENS[i], special=True, normalized=True) for i in (TAB, NEW_LINE)])
		return hf

	# --- training

	@classmethod
	def train(
		cls,
		texts: Iterable[str],
		vocab_size: int,
		*,
		max_token_length: int = MAX_TOKEN_LENGTH,
		forced_tokens: Sequence[str] = (),
		progress: bool = True,
	) -> Tokenizer:
		"""Learn a vocabulary from raw texts (cleaned here): BPE merges, then the DimensionGPT rules.

		Merges are learned natively by `tokenizers`' BpeTrainer on the same word split as the encoder.
		Then tokens longer than max_token_length, ending in a space and longer than 4 characters, holding
		a character that cleaning cannot output (not in `TOKEN_CHARACTERS`) or two digits or more are
		dropped; 0-9, " 0"-" 9", every character of `TOKEN_CHARACTERS` (1,392: what DimensionGPT's cleaning
		can output, tab and newline aside) and forced tokens are added; the rest is ranked by how often the
		encoder uses it on the sample and trimmed to vocab_size, never dropping a single character. So every
		token is one the released cleaning can produce, and no cleaned text needs ⮜unknown⮞.
		"""
		sample = [
			t for t in (clean_text(x) for x in tqdm(texts, desc="cleaning", unit="doc", disable=not progress)) if t
		]
		if not sample:
			raise BadFileError("cannot train a tokenizer on an empty corpus: give at least one non-empty document")
		required = [*(str(d) for d in range(10)), *(f" {d}" for d in range(10)), *forced_tokens]
		bpe = HFTokenizer(BPE())
		bpe.pre_tokenizer = pre_tokenizers.Sequence(
			[
				pre_tokenizers.Split(Regex("[\t\n]"), behavior="removed"),
				pre_tokenizers.Split(Regex(WORD_PATTERN), behavior="isolated"),
			]
		)
		# Ask for more than needed: the rules below drop some tokens and the ranking trims the rest.
		trainer = BpeTrainer(
			vocab_size=int(vocab_size * 1.25) + 64,
			max_token_length=max_token_length,
			show_progress=progress,
			initial_alphabet=list("0123456789 "),
		)
		bpe.train_from_iterator(sample, trainer=trainer, length=len(sample))
		authorised = set(TOKEN_CHARACTERS)
		candidates = {*required}
		for token in bpe.get_vocab():
			if len(token) > max_token_length or (token.endswith(" ") and len(token) > 4):
				continue
			if not set(token) <= authorised or sum(c.isdigit() for c in token) >= 2:
				continue
			candidates.add(token)
		candidates -= set(CONTROL_TOKENS)
		candidates |= {c for t in candidates for c in t}  # every character of a token is a token
		# Every character cleaning can output is a token, even one the sample lacks (é on English text).
		candidates |= authorised
		ranked = sorted(candidates)
		counts = np.zeros(len(CONTROL_TOKENS) + len(ranked), dtype=np.int64)
		scorer = cls([*CONTROL_TOKENS, *ranked])
		for i in tqdm(range(0, len(sample), 256), desc="ranking tokens", unit="batch", disable=not progress):
			for ids in scorer.encode_batch(sample[i : i + 256], clean=False):
				counts += np.bincount(ids, minlength=len(counts))
		keep = {t for t in ranked if len(t) == 1} | set(required)
		room = vocab_size - len(CONTROL_TOKENS) - len(keep)
		if room < 0:
			raise UsageError(
				f"vocab_size={vocab_size} is too small: {len(keep)} single characters and required tokens plus 10 "
				f"control tokens do not fit: use a vocab_size of at least {len(keep) + len(CONTROL_TOKENS)}"
			)
		order = sorted(range(len(ranked)), key=lambda k: (-counts[len(CONTROL_TOKENS) + k], ranked[k]))
		rest = [ranked[k] for k in order if ranked[k] not in keep][:room]
		chosen = keep | set(rest)
		return cls([*CONTROL_TOKENS, *(ranked[k] for k in order if ranked[k] in chosen)])


def greedy(
	word: str, ids: dict[str, int], max_length: int = MAX_TOKEN_LENGTH, reach: dict[str, int] | None = None
) -> list[int]:
	"""Cut `word` left to right into the longest tokens of `ids`; a character with no token is unknown.

	reach (from `_reach(ids)`), optional, maps two characters to the length of the longest token
	starting with them: the search at a position starts there instead of at max_length.
	"""
	out = []
	i, n = 0, len(word)
	while i < n:
		top = min(n, i + max_length) if reach is None else min(n, i + reach.get(word[i : i + 2], 1))
		for j in range(top, i, -1):
			token_id = ids.get(word[i:j])
			if token_id is not None:
				out.append(token_id)
				i = j
				break
		else:
			out.append(UNKNOWN)
			i += 1
	return out


def _reach(ids: dict[str, int]) -> dict[str, int]:
	"""Length of the longest token starting with each pair of characters."""
	reach: dict[str, int] = {}
	for token in ids:
		if len(token) >= 2 and reach.get(token[:2], 0) < len(token):
			reach[token[:2]] = len(token)
	return reach


def _chunks(text: str, size: int) -> Iterable[str]:
	"""Cut `text` into pieces of about `size` characters, each cut just before a space after a non-space."""
	start = 0
	while len(text) - start > size:
		cut = text.rfind(" ", start + 1, start + size + 1)
		while cut > start and text[cut - 1] == " ":
			cut = text.rfind(" ", start + 1, cut)
		if cut <= start:  # no cut point in the window: take the next one after it, if any
			m = _CUT_RE.search(text, start + size)
			if m is None:
				break
			cut = m.start()
		yield text[start:cut]
		start = cut
	yield text[start:]


_CUT_RE = re.compile(r"(?<! ) ")


def _clean_keep_control(text: str) -> str:
	# Internal chat formatting: clean the text between control tokens, keep the control tokens.
	return "".join(part if i % 2 else clean_text(part) for i, part in enumerate(_CONTROL_RE.split(text)))


def _check_vocab(vocab: list[str], where: str) -> None:
	if len(vocab) < len(CONTROL_TOKENS):
		raise BadFileError(
			f"{where}: {len(vocab)} token{'s' if len(vocab) > 1 else ''}, fewer than the {len(CONTROL_TOKENS)} "
			"control tokens it must start with"
		)
	for i, token in enumerate(CONTROL_TOKENS):
		if vocab[i] != token:
			raise BadFileError(
				f"{where}: line {i + 1} must be the control token {token!r}, found {vocab[i]!r} (ids 0-9 are {', '.join(CONTROL_TOKENS)})"
			)
	seen: dict[str, int] = {}
	for i, token in enumerate(vocab):
		if not token:
			raise BadFileError(f"{where}: line {i + 1} is empty (a token cannot be empty)")
		if "\n" in token or "\t" in token:
			raise BadFileError(f"{where}: line {i + 1} holds a tab or newline (use the control tokens)")
		if token in seen:
			raise BadFileError(
				f"{where}: token {token!r} appears twice, lines {seen[token] + 1} and {i + 1}: remove the duplicate"
			)
		seen[token] = i


_worker_tokenizer: Tokenizer | None = None  # the tokenizer of a worker process (set once, by _worker_init)


def _worker_init(vocab: list[str], trie: greedy_kernel.Trie | None) -> None:
	global _worker_tokenizer
	_worker_tokenizer = Tokenizer(vocab, compiled=trie is not None)
	_worker_tokenizer._trie = trie


def _worker_encode(batch: list[tuple[str, bool, bool]]) -> list[np.ndarray]:
	return [_worker_tokenizer._encode_document(text, clean, control) for text, clean, control in batch]
