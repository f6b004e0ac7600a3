"""Text cleaning: reduce any text to the DimensionGPT character set, and back to display text.

`clean` keeps an authorised set of characters (printable ASCII, French letters, a few symbols, common
emoji), maps « » to ", transliterates everything else with `unidecode` (dropping what still is not
authorised), drops \\r, removes spaces/tabs before a newline, collapses 3+ newlines to 2 and strips the
document. Tabs and newlines stay real characters: the tokenizer turns them into their control tokens.
Emoji written with several code points (flags, ❤️, ...) become one private-use character each so the
tokenizer sees one symbol; `unclean` maps them back.

Speed: the common path is a few `str.replace` and one regex scan; only runs of non-authorised
characters go through a Python callback (and `unidecode`).
"""

from __future__ import annotations

import re

from unidecode import unidecode

FRENCH_LETTERS = "ÀàÂâÄäÇçÉéÈèÊêËëÎîÏïÔôÖöÙùÛûÜüÆæŒœ"
SYMBOLS = "€£¥•·²³≠±×÷√π"
# One code point each, so the tokenizer sees one symbol per emoji.
EMOJI = (
	"😀😃😄😁😆😅😂🤣😊😇🙂🙃😉😌😍🥰😘😗😙😚😋😛😝😜🤪🤨🧐🤓😎🤩🥳😏😒😞😔😟😕🙁😣😖😫😩🥺😢😭😤😠😡🤬🤯😳🥵🥶"
	"😱😨😰😥😓🤗🤔🤭🤫🤥😶😐😑😬🙄😯😦😧😮😲🥱😴🤤😪😵🤐🥴🤢🤮🤧😷🤒🤕🤑🤠😈👿💩👻💀👽🤖🎃😺😸😹😻😼😽🙀😿😾"
	"👋🤚✋🖖👌🤏🤞🤟🤘🤙👈👉👆👇👍👎✊👊🤛🤜👏🙌👐🤲🤝🙏💪🧡💛💚💙💜🖤🤍🤎💔💕💞💓💗💖💘💝"
	"🔥✨⭐🌟💯✅❌🎉🎊🎁🎂🌍🌞🌙⚡🌈☕🍕🍔🍟🍺🍷🥂🏆⚽🚀🚗🏠📚📖📝📌📎🔒🔑💡📱💻📷🎵🎶👀"
	"👶👦👧👨👩👴👵🐶🐱🐭🐰🦊🐻🐼🐸🐵🐔🐧🐦🦄🐝🦋🌸🌹🌻🌺🍀🍁🍂🍎🍓🍒🍑🥑🍆🥕🌽🍞🧀🥚🍳🥐🍰🍫🍿"
)
# Emoji written with several code points -> one private-use character each (U+E000...).
MULTI_EMOJI = (
	"❤️",
	"☺️",
	"✌️",
	"☝️",
	"☀️",
	"❄️",
	"⚠️",
	"✈️",
	"✏️",
	"☘️",
	"👁️",
	"🇫🇷",
	"🇧🇪",
	"🇨🇭",
	"🇨🇦",
	"🇱🇺",
	"🇲🇨",
	"🇪🇺",
	"🇬🇧",
	"🇺🇸",
	"🇩🇪",
	"🇪🇸",
	"🇮🇹",
	"🇵🇹",
	"🇯🇵",
	"🇨🇳",
	"👍🏻",
	"👍🏼",
	"👍🏽",
	"👍🏾",
	"👍🏿",
	"🏳️‍🌈",
	"👨‍👩‍👧‍👦",
)
PRIVATE = "".join(chr(0xE000 + i) for i in range(len(MULTI_EMOJI)))
# What `clean` may output: the display characters plus the private emoji characters.
AUTHORISED = "".join(chr(c) for c in range(0x20, 0x7F)) + "\t\n" + FRENCH_LETTERS + SYMBOLS + EMOJI + PRIVATE

_TO_PRIVATE = dict(zip(MULTI_EMOJI, PRIVATE))
_FROM_PRIVATE = str.maketrans(dict(zip(PRIVATE, MULTI_EMOJI)))
_MULTI_RE = re.compile("|".join(re.escape(e) for e in sorted(MULTI_EMOJI, key=len, reverse=True)))
_MULTI_START_RE = re.compile("[" + "".join(sorted({re.escape(e[0]) for e in MULTI_EMOJI})) + "]")
_NOT_AUTHORISED_RE = re.compile("[^" + "".join(re.escape(c) for c in AUTHORISED) + "]+")
# Frequent non-authorised characters of French text, replaced in bulk before the regex scan.
_COMMON = (("\r", ""), ("«", '"'), ("»", '"'), ("\u2019", "'"), ("\u00a0", " "), ("\u202f", " "))
_SPACES_BEFORE_NEWLINE_RE = re.compile(r"[ \t]+\n")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")


def _transliterate(match: re.Match) -> str:
	ascii_text = unidecode(match.group())
	return _NOT_AUTHORISED_RE.sub("", ascii_text.replace("[?]", ""))


def clean(text: str) -> str:
	"""Reduce `text` to the authorised characters (DESIGN §2). Idempotent."""
	if not text.isascii() and _MULTI_START_RE.search(text):
		text = _MULTI_RE.sub(lambda m: _TO_PRIVATE[m.group()], text)
	for old, new in _COMMON:
		if old in text:
			text = text.replace(old, new)
	text = _NOT_AUTHORISED_RE.sub(_transliterate, text)
	if " \n" in text or "\t\n" in text:
		text = _SPACES_BEFORE_NEWLINE_RE.sub("\n", text)
	if "\n\n\n" in text:
		text = _MANY_NEWLINES_RE.sub("\n\n", text)
	return text.strip(" \t\n")


def unclean(text: str) -> str:
	"""Back to display text: private emoji characters become their real emoji sequences."""
	if text.isascii():
		return text
	return text.translate(_FROM_PRIVATE)
