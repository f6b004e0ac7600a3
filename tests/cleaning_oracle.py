"""DimensionGPT's cleaning written out step by step, one character at a time (slow and obvious).

The tests compare `dimgpt.data.cleaning.clean` (set-based, vectorised) with this on random text. Only the
tables are shared (the facts of docs/dimensiongpt.md); every step is written again here, literally.
"""

from __future__ import annotations

from unidecode import unidecode

from dimgpt.data.cleaning import AUTHORISED, CIRCLED, EMOJI_SEQUENCES, REPLACEMENTS


def clean(text: str) -> str:
	if text == "":
		return ""
	text = text.replace("\r", "")
	for key, value in REPLACEMENTS:
		text = text.replace(key, value)
	for char in CIRCLED:
		text = text.replace(char, unidecode(char))
	for key, value in EMOJI_SEQUENCES:
		text = text.replace(key, value)
	singles = [value for _, value in EMOJI_SEQUENCES]
	out = []
	for char in text:
		if char in AUTHORISED or char in singles or char in "\t\n":
			out.append(char)
			continue
		for c in unidecode(char).replace("--", "-"):
			if 0x20 <= ord(c) < 0x7F or c in "\t\n":
				out.append(c)
	text = "".join(out)
	for key, value in ((" \n", "\n"), ("\t\n", "\n"), ("\n\n\n", "\n\n")):
		while key in text:
			text = text.replace(key, value)
	return text.strip()
