"""The encoding of docs/dimensiongpt.md written plainly: the reference the fast encoder is tested against.

No tricks: split on tab/newline (and control tokens when asked), split each piece into words with one
regex, cut each word greedily into the longest vocabulary token of at most 16 characters.
"""

from __future__ import annotations

import regex

from dimgpt.data.cleaning import clean

CONTROL_TOKENS = (
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
WORD_RE = regex.compile(r" ?[0-9]+| ?\p{L}+| ?[^ 0-9\p{L}]+| +(?![^ ])| +")
MAX_TOKEN_LENGTH = 16


def encode(text: str, vocab: list[str], *, clean_text: bool = True, control: bool = False) -> list[int]:
	"""Token ids of `text` with the vocabulary `vocab` (control tokens at ids 0-9)."""
	ids = {token: i for i, token in enumerate(vocab) if i >= len(CONTROL_TOKENS)}
	# With control=True the control-token strings are tokens; otherwise they are plain text.
	pieces = regex.split("(" + "|".join(regex.escape(t) for t in CONTROL_TOKENS) + ")", text) if control else [text]
	out = []
	for i, piece in enumerate(pieces):
		if i % 2 == 1:
			out.append(CONTROL_TOKENS.index(piece))
			continue
		if clean_text:
			piece = clean(piece)
		for j, segment in enumerate(regex.split("([\t\n])", piece)):
			if j % 2 == 1:
				out.append(3 if segment == "\t" else 4)  # ⮜tab⮞, ⮜new-line⮞
				continue
			for word in WORD_RE.findall(segment):
				k = 0
				while k < len(word):
					for end in range(min(len(word), k + MAX_TOKEN_LENGTH), k, -1):
						if word[k:end] in ids:
							out.append(ids[word[k:end]])
							k = end
							break
					else:
						out.append(0)  # ⮜unknown⮞
						k += 1
	return out
