"""The DESIGN §2 encoding written plainly: the reference the fast encoder is tested against.

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
	ids = {token: i for i, token in enumerate(vocab)}
	specials = CONTROL_TOKENS if control else ("⮜tab⮞", "⮜new-line⮞")
	if clean_text:
		if control:
			pieces = regex.split("(" + "|".join(regex.escape(t) for t in CONTROL_TOKENS) + ")", text)
			text = "".join(p if p in CONTROL_TOKENS else clean(p) for p in pieces)
		else:
			text = clean(text)
	text = text.replace("\t", "⮜tab⮞").replace("\n", "⮜new-line⮞")
	out = []
	for piece in regex.split("(" + "|".join(regex.escape(t) for t in specials) + ")", text):
		if piece in specials:
			out.append(CONTROL_TOKENS.index(piece))
			continue
		for word in WORD_RE.findall(piece):
			i = 0
			while i < len(word):
				for j in range(min(len(word), i + MAX_TOKEN_LENGTH), i, -1):
					if word[i:j] in ids and ids[word[i:j]] >= len(CONTROL_TOKENS):
						out.append(ids[word[i:j]])
						i = j
						break
				else:
					out.append(0)
					i += 1
	return out
