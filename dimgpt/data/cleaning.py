"""Text cleaning: exactly DimensionGPT's, so that the released vocab.txt and weights see their own ids.

`clean` applies the release's rules in the release's order (docs/dimensiongpt.md, "Cleaning"):

1. `\\r` is dropped.
2. `REPLACEMENTS`, one after the other over the whole text: « and » with the plain space inside them
   become " (the space goes), then lone « and », a few emoji punctuation marks and faces.
3. The circled numbers ①…⑱ of the text are transliterated (① → 1): step 4 gives them another meaning.
4. `EMOJI_SEQUENCES`: emoji written with several code points become one: `❤️` → `❤`, eighteen
   flags and ZWJ sequences → ①…⑱ (`🇫🇷` → ⑩), `🏳️` → `🏳`.
5. Every character that is not kept (`KEPT`: printable ASCII, tab, newline, `FRENCH_LETTERS`, `SYMBOLS`,
   the 1,216 emoji of kept_emoji.txt, and the outputs of step 4) becomes its `unidecode` transliteration,
   with `--` made `-` (the em dash — gives -), keeping only printable ASCII, tab and newline.
6. Spaces before a newline go, then tabs before a newline (in this order, so `" \\t\\n"` keeps its
   space), then 3+ newlines become 2. 7. The ends are stripped.

Tabs and newlines stay characters: the tokenizer turns them into their control tokens. `unclean` is the
way back for display: ①…⑱ and the single emoji of step 4 become their full sequences again (`❤` → `❤️`).

Like the release's, this cleaning is not idempotent in two places: a flag cleaned twice becomes a number
(① is transliterated by step 3 of the second pass), and `" \\t\\n"` loses its space on the second pass.
Clean raw text once.

Speed: no per-character Python loop. The set of the text's distinct non-ASCII characters is found in C
(the UTF-8 bytes minus printable ASCII); a rule of steps 2-4 runs only when the text holds its
non-ASCII characters; each distinct character of step 5 is transliterated once and replaced with
`str.replace` (a text with many distinct ones goes through one regex pass instead).
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

import numpy as np
from unidecode import unidecode

PRINTABLE_ASCII = "".join(map(chr, range(0x20, 0x7F)))
FRENCH_LETTERS = "ÀàÂâÄäÇçÉéÈèÊêËëÎîÏïÔôÖöÙùÛûÜüÆæŒœ"
SYMBOLS = "€£¥•·²³≠±×÷√π"


def _kept_emoji() -> str:
	text = (Path(__file__).with_name("kept_emoji.txt")).read_text(encoding="utf-8")
	return "".join(line for line in text.splitlines() if not line.startswith("#"))


KEPT_EMOJI = _kept_emoji()
AUTHORISED = PRINTABLE_ASCII + FRENCH_LETTERS + SYMBOLS + KEPT_EMOJI  # kept as they are by step 5

VS16 = "\ufe0f"  # variation selector 16: "show as emoji"
ZWJ = "\u200d"  # zero-width joiner: glues emoji into one


def _flag(country: str) -> str:
	return "".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in country)


# Step 2, in this order ("« " before "«", "☺" before "☺️": the variation selector left is dropped by step 5).
REPLACEMENTS: tuple[tuple[str, str], ...] = (
	("« ", '"'),
	(" »", '"'),
	("«", '"'),
	("»", '"'),
	("❗" + VS16, "!"),
	("❕", "!"),
	("❓", "?"),
	("❔", "?"),
	("‼" + VS16, "!!"),
	("⁉" + VS16, "!?"),
	("✖" + VS16, "❌"),
	("✔" + VS16, "✅"),
	("☺", "😊"),
	("☺" + VS16, "😊"),
	("☹", "🙁"),
	("☹" + VS16, "🙁"),
)
CIRCLED = "①②③④⑤⑥⑦⑧⑨⑩⑪⑫⑬⑭⑮⑯⑰⑱"
# Step 3: the circled numbers a text holds are transliterated before step 4 uses them for flags.
CIRCLED_TO_ASCII: tuple[tuple[str, str], ...] = tuple((c, unidecode(c)) for c in CIRCLED)
# Step 4, in this order (the rainbow flag before the plain white flag it starts with).
EMOJI_SEQUENCES: tuple[tuple[str, str], ...] = (
	*((c + VS16, c) for c in "☂☀❄✈☎⚙⚔✉✂✒❤☢☣⚠♻"),
	*zip(
		(
			"🏳" + VS16 + ZWJ + "🌈",  # rainbow flag
			"🏳" + VS16 + ZWJ + "⚧" + VS16,  # transgender flag
			"🏴" + ZWJ + "☠" + VS16,  # pirate flag
			*map(_flag, ("US", "CN", "JP", "DE", "IN", "GB", "FR", "IT", "CA", "BR", "RU", "KR", "AU", "MX", "ES")),
		),
		CIRCLED,
	),
	("🏳" + VS16, "🏳"),
)
SEQUENCE_RULES = REPLACEMENTS + CIRCLED_TO_ASCII + EMOJI_SEQUENCES  # steps 2 to 4, in order
# The way back: each single character of step 4 -> its sequence (tokens are decoded through this).
ENCODED_EMOJI: dict[str, str] = {single: sequence for sequence, single in EMOJI_SEQUENCES}
KEPT = AUTHORISED + "".join(ENCODED_EMOJI) + "\t\n"  # step 5 keeps these: everything `clean` can output
TOKEN_CHARACTERS = AUTHORISED + "".join(ENCODED_EMOJI)  # what a token may hold (tab and newline are control tokens)

_KEPT_SET = frozenset(KEPT)
_ASCII_OUT = frozenset(PRINTABLE_ASCII + "\t\n")  # what step 5 keeps of a transliteration
_WHITESPACE = frozenset(" \t\n")
# A rule runs when the text holds all its non-ASCII characters (its ASCII ones are nearly always there).
# The four guillemet rules (REPLACEMENTS[:4]) come first and are done together by `_guillemets`.
_RULES = [(key, value, frozenset(key) - _ASCII_OUT) for key, value in SEQUENCE_RULES[4:]]
_NOT_KEPT_RE = re.compile("[^" + "".join(re.escape(c) for c in sorted(_KEPT_SET)) + "]+")
_SPACES_BEFORE_NEWLINE_RE = re.compile(" +\n")
_TABS_BEFORE_NEWLINE_RE = re.compile("\t+\n")
_MANY_NEWLINES_RE = re.compile("\n{3,}")
_MANY_DISTINCT = 32  # above this many distinct characters to transliterate, one regex pass beats str.replace
_FROM_SINGLE = str.maketrans(ENCODED_EMOJI)


@functools.lru_cache(maxsize=1 << 16)
def transliterate(char: str) -> str:
	"""Step 5 for one character that is not kept: unidecode, `--` → `-`, printable ASCII, tab and newline only."""
	if "\ud800" <= char <= "\udfff":  # a lone surrogate: unidecode gives nothing too, with a warning
		return ""
	return "".join(c for c in unidecode(char).replace("--", "-") if c in _ASCII_OUT)


def _not_printable_ascii(text: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
	"""The code points of `text`, and the positions and code points of those not printable ASCII (\n, é…)."""
	points = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
	where = np.flatnonzero(points - 0x20 > 0x5E)  # below 0x20 wraps around
	return points, where, points[where]


def clean(text: str) -> str:
	"""DimensionGPT's cleaning of `text` (the module doc gives its steps)."""
	if "\r" in text:
		text = text.replace("\r", "")
	points, where, found = _not_printable_ascii(text)
	present = set(map(chr, np.unique(found).tolist())) - {"\t", "\n"}
	if present:
		if "«" in present or "»" in present:
			marks = (found == 0xAB) | (found == 0xBB)
			text = _guillemets(text, where[marks].tolist())
			present -= {"«", "»"}
		for key, value, needs in _RULES:
			if needs <= present:
				text = text.replace(key, value)
				present.update(value)
				if len(key) == 1:
					present.discard(key)
		foreign = present - _KEPT_SET  # what step 4 leaves is kept, so no rule adds to this
		if len(foreign) > _MANY_DISTINCT:
			text = _NOT_KEPT_RE.sub(lambda m: "".join(map(transliterate, m.group())), text)
		else:
			for char in foreign:  # the usual case (’ – …): one C-level replace each
				text = text.replace(char, transliterate(char))
		# Steps 2-4 and transliterations that are neither empty nor hold whitespace cannot bring a space or
		# a tab next to a newline, nor newlines together: the text from before them still tells (below).
		if any(not t or not _WHITESPACE.isdisjoint(t) for t in map(transliterate, foreign)):
			points, where, found = _not_printable_ascii(text)
	newlines = where[found == 0x0A]
	if len(newlines) and _may_need_newline_rules(points, newlines):
		text = _newline_rules(text)
	return text.strip()


def _guillemets(text: str, marks: list[int]) -> str:
	"""The rules "« " → ", " »" → ", « → ", » → " in that order, given the positions of « and ».

	Each « becomes " and takes the plain space after it; then each » becomes " and takes the space
	before it, unless a « took that space already ("« »" → '""'): what the four str.replace in turn do.
	(str.replace("« ", ...) is slow: its search stops at every space.)
	"""
	pieces, start = [], 0
	for mark in marks:
		end = mark - 1 if text[mark] == "»" and mark > start and text[mark - 1] == " " else mark
		pieces += (text[start:end], '"')
		start = mark + 1
		if text[mark] == "«" and text[start : start + 1] == " ":
			start += 1
	pieces.append(text[start:])
	return "".join(pieces)


def _may_need_newline_rules(points: np.ndarray, newlines: np.ndarray) -> bool:
	"""Whether the text holds " \n", "\t\n" or "\n\n\n" (else step 6 changes nothing), given its newlines."""
	before = points[newlines[newlines > 0] - 1]
	if ((before == 0x20) | (before == 0x09)).any():
		return True
	gaps = np.diff(newlines)
	return bool(((gaps[:-1] == 1) & (gaps[1:] == 1)).any())


def _newline_rules(text: str) -> str:
	"""Step 6: spaces before a newline, then tabs before a newline, then 3+ newlines to 2."""
	text = _remove_before_newlines(text, " ", _SPACES_BEFORE_NEWLINE_RE)
	text = _remove_before_newlines(text, "\t", _TABS_BEFORE_NEWLINE_RE)
	if "\n\n\n" in text:
		text = _MANY_NEWLINES_RE.sub("\n\n", text)
	return text


def _remove_before_newlines(text: str, char: str, pattern: re.Pattern[str]) -> str:
	"""Runs of `char` just before a newline removed (a few str.replace passes beat the regex on long text)."""
	pair = char + "\n"
	for _ in range(4):
		if pair not in text:
			return text
		text = text.replace(pair, "\n")
	return pattern.sub("\n", text)


def unclean(text: str) -> str:
	"""Back to display text: the single characters of step 4 become their emoji sequences (① → 🏳️‍🌈)."""
	if text.isascii():
		return text
	return text.translate(_FROM_SINGLE)
