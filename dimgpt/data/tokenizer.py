"""The DimensionGPT tokenizer: vocab.txt format, greedy longest-match encoding, training.

Encoding (DESIGN §2): clean the text; tabs and newlines become their control tokens; the rest is
split into words (runs of digits | runs of letters | runs of other characters | runs of spaces, a
single space glued to the front of the next word, a space run giving its last space to the next
word); each word is cut greedily left to right into the longest vocabulary token of at most 16
characters; a character with no token gives ⮜unknown⮞.

The fast path is Hugging Face `tokenizers`' WordPiece with an empty continuing-subword prefix, which
runs the same greedy loop in Rust on all cores. Two differences are handled around it:
- WordPiece turns a whole word into one unknown when any position has no token. Characters that
  appear in no token are isolated as words of their own by the pre-tokenizer regex (exact: greedy can
  never match across them); any other multi-character unknown is re-encoded by the plain greedy loop.
- WordPiece restarts its longest-match search from the end of the word (O(L²)); words longer than
  `_MAX_WORD` characters come back as one unknown and go through the linear greedy loop instead.
Long documents are cut into chunks just before a space that follows a non-space (always a word
boundary, since a space is glued to the next word), so memory stays bounded.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import regex
from tokenizers import AddedToken, Regex, normalizers, pre_tokenizers
from tokenizers import Tokenizer as HFTokenizer
from tokenizers.models import BPE, WordPiece
from tokenizers.trainers import BpeTrainer
from tqdm.auto import tqdm

from dimgpt.data.cleaning import AUTHORISED, unclean
from dimgpt.data.cleaning import clean as clean_text

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

# One word of DESIGN §2 inside a run of text with no tab, newline or control token.
WORD_PATTERN = r" ?[0-9]+| ?\p{L}+| ?[^ 0-9\p{L}]+| +(?![^ ])| +"
_CONTROL_RE = re.compile("(" + "|".join(re.escape(t) for t in CONTROL_TOKENS) + ")")
_MAX_WORD = 100  # longer words skip WordPiece (quadratic there) for the linear greedy loop
_CHUNK_CHARS = 1 << 18  # documents are encoded in chunks of about this many characters
_BATCH_CHARS = 1 << 24  # characters handed to Rust at once (bounds the memory of its Encoding objects)


class Tokenizer:
	"""A DimensionGPT vocabulary (control tokens at ids 0-9) and its fast greedy encoder."""

	def __init__(self, vocab: Sequence[str]) -> None:
		self.vocab = list(vocab)
		_check_vocab(self.vocab, "the vocabulary")
		self._ids = {t: i for i, t in enumerate(self.vocab) if i >= len(CONTROL_TOKENS)}
		self._display = [*self.vocab]
		self._plain = ["", "", "", "\t", "\n", "", "", "", "", "", *self.vocab[len(CONTROL_TOKENS) :]]
		self._hf = {False: self._build_hf(control=False), True: self._build_hf(control=True)}

	@property
	def vocab_size(self) -> int:
		return len(self.vocab)

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
			raise FileNotFoundError(
				f"vocabulary file {path} not found: train one (python -m dimgpt run) or give the path of a vocab.txt"
			)
		data = path.read_bytes()
		try:
			text = data.decode("utf-8")
		except UnicodeDecodeError as e:
			raise ValueError(
				f"{path}: invalid UTF-8 at byte offset {e.start}: a vocab.txt must be UTF-8 text"
			) from None
		if text.endswith("\n"):  # tolerate one trailing newline added by an editor
			text = text[:-1]
		vocab = text.split("\n")
		_check_vocab(vocab, str(path))
		return cls(vocab)

	def save(self, path: str | Path) -> None:
		"""Write vocab.txt: tokens joined by \\n, no trailing newline (the released format)."""
		Path(path).write_text("\n".join(self.vocab), encoding="utf-8", newline="")

	def save_hf(self, path: str | Path) -> None:
		"""Write a tokenizer.json for `tokenizers.Tokenizer.from_file` (same ids on cleaned text, control=False)."""
		self._hf[False].save(str(path))

	# --- encoding

	def encode(self, text: str, *, clean: bool = True, control: bool = False) -> list[int]:
		"""Token ids of `text`. control=True honours control-token strings (internal chat formatting only)."""
		return self.encode_batch([text], clean=clean, control=control)[0].tolist()

	def encode_batch(self, texts: Sequence[str], *, clean: bool = True, control: bool = False) -> list[np.ndarray]:
		"""Token ids (int32 arrays) of many documents, encoded in parallel on all cores."""
		if clean:
			texts = [_clean_keep_control(t) if control else clean_text(t) for t in texts]
		hf = self._hf[control]
		out: list[list[np.ndarray]] = [[] for _ in texts]
		batch: list[tuple[int, str]] = []
		size = 0
		for i, text in enumerate(texts):
			for chunk in _chunks(text, _CHUNK_CHARS):
				batch.append((i, chunk))
				size += len(chunk)
				if size >= _BATCH_CHARS:
					self._encode_chunks(hf, batch, out)
					batch, size = [], 0
		self._encode_chunks(hf, batch, out)
		return [
			np.concatenate(parts) if len(parts) != 1 else parts[0]
			for parts in (p or [np.zeros(0, np.int32)] for p in out)
		]

	def _encode_chunks(self, hf: HFTokenizer, batch: list[tuple[int, str]], out: list[list[np.ndarray]]) -> None:
		if not batch:
			return
		encodings = hf.encode_batch_fast([chunk for _, chunk in batch], add_special_tokens=False)
		for (i, chunk), encoding in zip(batch, encodings):
			ids = np.array(encoding.ids, dtype=np.int32)
			if (ids == UNKNOWN).any():
				ids = self._fix_unknowns(hf, chunk)
			out[i].append(ids)

	def _fix_unknowns(self, hf: HFTokenizer, chunk: str) -> np.ndarray:
		# WordPiece gives one unknown for a whole word it cannot cut (or that is too long): redo such words.
		encoding = hf.encode(chunk, add_special_tokens=False)
		ids: list[int] = []
		for token_id, (start, end) in zip(encoding.ids, encoding.offsets):
			if token_id == UNKNOWN and end - start > 1:
				ids.extend(greedy(chunk[start:end], self._ids))
			else:
				ids.append(token_id)
		return np.array(ids, dtype=np.int32)

	# --- decoding

	def decode(self, ids: Iterable[int], *, control: bool = False) -> str:
		"""Display text of token ids; ids out of range are skipped. control=True keeps control tokens as text."""
		table = self._display if control else self._plain
		n = len(table)
		if isinstance(ids, np.ndarray):
			ids = ids.tolist()
		return unclean("".join([table[i] for i in ids if 0 <= i < n]))

	# --- the Rust encoder

	def _build_hf(self, control: bool) -> HFTokenizer:
		matchable = {t: i for t, i in self._ids.items() if len(t) <= MAX_TOKEN_LENGTH}
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
				max_input_chars_per_word=_MAX_WORD,
			)
		)
		hf.normalizer = normalizers.Sequence(
			[normalizers.Replace("\t", CONTROL_TOKENS[TAB]), normalizers.Replace("\n", CONTROL_TOKENS[NEW_LINE])]
		)
		hf.pre_tokenizer = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
		specials = CONTROL_TOKENS if control else (CONTROL_TOKENS[TAB], CONTROL_TOKENS[NEW_LINE])
		hf.add_special_tokens([AddedToken(t, special=True, normalized=True) for t in specials])
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
		a non-authorised character or two digits or more are dropped; 0-9, " 0"-" 9" and forced tokens
		are added; the rest is ranked by how often the encoder uses it on the sample and trimmed to
		vocab_size, never dropping a single character.
		"""
		sample = [
			t for t in (clean_text(x) for x in tqdm(texts, desc="cleaning", unit="doc", disable=not progress)) if t
		]
		if not sample:
			raise ValueError("cannot train a tokenizer on an empty corpus: give at least one non-empty document")
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
		authorised = set(AUTHORISED) - {"\t", "\n"}
		candidates = {*required}
		for token in bpe.get_vocab():
			if len(token) > max_token_length or (token.endswith(" ") and len(token) > 4):
				continue
			if not set(token) <= authorised or sum(c.isdigit() for c in token) >= 2:
				continue
			candidates.add(token)
		candidates -= set(CONTROL_TOKENS)
		candidates |= {c for t in candidates for c in t}  # every character of a token is a token
		ranked = sorted(candidates)
		counts = np.zeros(len(CONTROL_TOKENS) + len(ranked), dtype=np.int64)
		scorer = cls([*CONTROL_TOKENS, *ranked])
		for i in tqdm(range(0, len(sample), 256), desc="ranking tokens", unit="batch", disable=not progress):
			for ids in scorer.encode_batch(sample[i : i + 256], clean=False):
				counts += np.bincount(ids, minlength=len(counts))
		keep = {t for t in ranked if len(t) == 1} | set(required)
		room = vocab_size - len(CONTROL_TOKENS) - len(keep)
		if room < 0:
			raise ValueError(
				f"vocab_size={vocab_size} is too small: {len(keep)} single characters and required tokens plus 10 control tokens do not fit"
			)
		order = sorted(range(len(ranked)), key=lambda k: (-counts[len(CONTROL_TOKENS) + k], ranked[k]))
		rest = [ranked[k] for k in order if ranked[k] not in keep][:room]
		chosen = keep | set(rest)
		return cls([*CONTROL_TOKENS, *(ranked[k] for k in order if ranked[k] in chosen)])


def greedy(word: str, ids: dict[str, int], max_length: int = MAX_TOKEN_LENGTH) -> list[int]:
	"""Cut `word` left to right into the longest tokens of `ids`; a character with no token is unknown."""
	out = []
	i, n = 0, len(word)
	while i < n:
		for j in range(min(n, i + max_length), i, -1):
			token_id = ids.get(word[i:j])
			if token_id is not None:
				out.append(token_id)
				i = j
				break
		else:
			out.append(UNKNOWN)
			i += 1
	return out


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
		raise ValueError(
			f"{where}: {len(vocab)} tokens, fewer than the {len(CONTROL_TOKENS)} control tokens it must start with"
		)
	for i, token in enumerate(CONTROL_TOKENS):
		if vocab[i] != token:
			raise ValueError(
				f"{where}: line {i + 1} must be the control token {token!r}, found {vocab[i]!r} (ids 0-9 are {', '.join(CONTROL_TOKENS)})"
			)
	seen: dict[str, int] = {}
	for i, token in enumerate(vocab):
		if not token:
			raise ValueError(f"{where}: line {i + 1} is empty (a token cannot be empty)")
		if "\n" in token or "\t" in token:
			raise ValueError(f"{where}: line {i + 1} holds a tab or newline (use the control tokens)")
		if token in seen:
			raise ValueError(
				f"{where}: token {token!r} appears twice, lines {seen[token] + 1} and {i + 1}: remove the duplicate"
			)
		seen[token] = i
