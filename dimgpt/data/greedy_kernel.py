"""The encoder of docs/dimensiongpt.md ("Encoding") compiled with numba: word split and greedy longest match in one pass.

The text's code points go through one table (per tokenizer) that gives each its character class
(letter, digit, space, tab, newline, other) and its index in the vocabulary's alphabet (0: in no
token). A loop then finds each word exactly as `WORD_PATTERN` does (an optional single space glued
to a run of letters, of digits or of other characters; a run of k spaces gives k - 1 spaces to a
word of its own and its last one to the next word, or all k before a tab, a newline or the end) and
cuts it greedily: a walk down a trie of the tokens gives the longest token that starts the rest of
the word (at most 16 characters), or ⮜unknown⮞ for one character when no token does.

numba is optional: without it (`available()` is False) the tokenizer keeps its pure-Python word
cache. The compiled function is cached on disk next to this file when that folder is writable.
"""

from __future__ import annotations

import functools
import importlib.util

import numpy as np
import regex

LETTER, DIGIT, SPACE, TAB_CLASS, NEW_LINE_CLASS, OTHER = range(6)
_CLASS_BITS = 3  # table value = alphabet index << 3 | class
_UNKNOWN, _TAB, _NEW_LINE = 0, 3, 4  # the control token ids the kernel writes

_classes: np.ndarray | None = None


@functools.cache
def available() -> bool:
	"""Whether numba imports here (absent, or built for another NumPy: the word cache is used)."""
	if importlib.util.find_spec("numba") is None:
		return False
	try:
		import numba  # noqa: F401
	except Exception:  # numba refuses to import with a NumPy it was not built for
		return False
	return True


def character_classes() -> np.ndarray:
	"""Class of every code point (uint8, 0x110000 entries), computed once per process."""
	global _classes
	if _classes is None:
		classes = np.full(0x110000, OTHER, dtype=np.uint8)
		# Every code point in order (lone surrogates included) as one string: decoded from UTF-32 in C, ten
		# times faster than joining 1.1M chr() (this runs in create-data's start-up, before the workers fork).
		every = np.arange(0x110000, dtype=np.uint32).tobytes().decode("utf-32-le", "surrogatepass")
		for m in regex.finditer(r"\p{L}+", every):  # the same letter class as WORD_PATTERN
			classes[m.start() : m.end()] = LETTER
		classes[ord("0") : ord("9") + 1] = DIGIT
		classes[ord(" ")] = SPACE
		classes[ord("\t")] = TAB_CLASS
		classes[ord("\n")] = NEW_LINE_CLASS
		_classes = classes
	return _classes


class Trie:
	"""The tokens (id ≥ 10, at most 16 characters) as a trie over alphabet indices, in flat arrays.

	The root's children, and those of every node with more than `_WIDE` children, are dense rows
	indexed by alphabet index (one load a step); the other nodes' few children are a short slice of
	`keys`/`nexts`, scanned. `token[node]` is the id of the token that ends at the node, or -1.
	Measured on corpus_fr with a 32k vocabulary: 70 MB/s for the loop, against 48 MB/s with a binary
	search in every node.
	"""

	def __init__(self, ids: dict[str, int]) -> None:
		alphabet = sorted({c for token in ids for c in token})
		index = {c: i + 1 for i, c in enumerate(alphabet)}
		# A node per distinct token prefix (0: the root), numbered in sorted order. In the sorted tokens, the
		# prefixes a token adds are those longer than what it shares with the token before it, and they come
		# out in sorted order: one pass, no set or sort of all the prefixes.
		tokens = sorted(ids)
		node: dict[str, int] = {}
		parents: list[int] = []
		chars: list[str] = []
		# path[k]: the node of the current token's first k characters
		path = [0] * (max(map(len, tokens), default=0) + 1)
		previous = ""
		for token in tokens:
			shared = 0
			for a, b in zip(previous, token):
				if a != b:
					break
				shared += 1
			for k in range(shared + 1, len(token) + 1):
				parents.append(path[k - 1])
				chars.append(token[k - 1])
				path[k] = len(parents)
			node[token] = path[len(token)]
			previous = token
		n = len(parents) + 1
		parent = np.array(parents, dtype=np.int32)
		char = np.array([index[c] for c in chars], dtype=np.int32)
		child = np.arange(1, n, dtype=np.int32)
		self.token = np.full(n, -1, dtype=np.int32)
		self.token[[node[t] for t in ids]] = list(ids.values())
		order = np.lexsort((char, parent))  # children grouped by parent
		self.keys, self.nexts, parent = char[order], child[order], parent[order]
		sizes = np.bincount(parent, minlength=n)
		self.starts = np.zeros(n + 1, dtype=np.int32)
		np.cumsum(sizes, out=self.starts[1:])
		wide = np.union1d([0], np.flatnonzero(sizes > _WIDE))
		self.row = np.full(n, -1, dtype=np.int32)
		self.row[wide] = np.arange(len(wide), dtype=np.int32)
		self.width = len(alphabet) + 1
		dense = np.full((len(wide), self.width), -1, dtype=np.int32)
		in_dense = self.row[parent] >= 0
		dense[self.row[parent[in_dense]], self.keys[in_dense]] = self.nexts[in_dense]
		self.dense = dense.ravel()
		self.table = character_classes().astype(np.int32)
		points = np.array([ord(c) for c in alphabet], dtype=np.int64)
		self.table[points] |= np.arange(1, self.width, dtype=np.int32) << _CLASS_BITS

	def encode(self, text: str) -> np.ndarray:
		"""Token ids of a cleaned text (tabs and newlines as characters, no control token strings)."""
		points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
		values = self.table[points]
		out = np.empty(len(values), dtype=np.int32)
		arrays = (self.token, self.starts, self.keys, self.nexts, self.row, self.dense)
		n = _kernel()(values, *arrays, self.width, out)
		return out[:n].copy() if n < len(out) // 2 else out[:n]


_WIDE = 4  # nodes with more children than this get a dense row (measured best of 1, 2, 4, 6, 12)
_compiled = None


def _kernel():
	global _compiled
	if _compiled is None:
		import numba

		# cache=True: compiled once, then loaded from __pycache__ (or numba's user cache if read-only).
		_compiled = numba.njit(cache=True, nogil=True)(_encode)
	return _compiled


def _encode(values, token, starts, keys, nexts, row, dense, width, out):
	"""Write the ids of the text whose table values are `values` into `out`; return how many."""
	n = len(values)
	o = 0
	i = 0
	while i < n:
		c = values[i] & 7
		if c in (TAB_CLASS, NEW_LINE_CLASS):
			out[o] = _TAB if c == TAB_CLASS else _NEW_LINE
			o += 1
			i += 1
			continue
		# The word [i, end).
		if c == SPACE:
			j = i + 1
			while j < n and values[j] & 7 == SPACE:
				j += 1
			after = values[j] & 7 if j < n else TAB_CLASS
			if after in (TAB_CLASS, NEW_LINE_CLASS):
				end = j  # a run of spaces before a tab, a newline or the end: one word
			elif j - i >= 2:
				end = j - 1  # k - 1 spaces; the last one goes with the next word
			else:
				end = j + 1  # one space glued to the run that follows
				while end < n and values[end] & 7 == after:
					end += 1
		else:
			end = i + 1
			while end < n and values[end] & 7 == c:
				end += 1
		# Greedy longest match inside the word: walk down the trie as far as the word goes.
		p = i
		while p < end:
			best, length = _UNKNOWN, 1
			node = dense[values[p] >> _CLASS_BITS]  # the root's row
			d = 1
			while node >= 0:
				if token[node] >= 0:
					best, length = token[node], d
				if p + d >= end:
					break
				a = values[p + d] >> _CLASS_BITS
				r = row[node]
				if r >= 0:
					node = dense[r * width + a]
				else:
					nxt = -1
					for q in range(starts[node], starts[node + 1]):
						if keys[q] == a:
							nxt = nexts[q]
							break
					node = nxt
				d += 1
			out[o] = best
			o += 1
			p += length
		i = end
	return o
