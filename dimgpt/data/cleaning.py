"""Text cleaning: reduce any text to the DimensionGPT character set, and back to display text.

`clean` keeps an authorised set of characters (printable ASCII, French letters, a few symbols, common
emoji), maps « » to ", transliterates everything else with `unidecode` (dropping what still is not
authorised), drops \\r, removes spaces/tabs before a newline, collapses 3+ newlines to 2 and strips the
document. Tabs and newlines stay real characters: the tokenizer turns them into their control tokens.
Emoji written with several code points (flags, ❤️, ...) become one private-use character each so the
tokenizer sees one symbol; `unclean` maps them back.

Speed: no per-character Python loop. The set of distinct characters of the text is computed in C;
each non-authorised one (usually a handful: ’ – « ») is transliterated once and replaced with
`str.replace`; a text with many distinct ones goes through one regex pass instead.
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
_AUTHORISED_SET = frozenset(AUTHORISED)
# Every multi-code-point emoji holds at least one non-authorised character (U+FE0F, a flag letter, ...).
_MULTI_PARTS = frozenset(c for e in MULTI_EMOJI for c in e) - _AUTHORISED_SET
_MULTI_RE = re.compile("|".join(re.escape(e) for e in sorted(MULTI_EMOJI, key=len, reverse=True)))
_NOT_AUTHORISED_RE = re.compile("[^" + "".join(re.escape(c) for c in AUTHORISED) + "]+")
_AUTHORISED_ASCII = bytes([9, 10, *range(0x20, 0x7F)])
_QUOTES = {"«": '"', "»": '"'}
_SPACES_BEFORE_NEWLINE_RE = re.compile(r"[ \t]+\n")
_MANY_NEWLINES_RE = re.compile(r"\n{3,}")
_MANY_BAD = 32  # above this many distinct non-authorised characters, one regex pass beats str.replace


def transliterate(text: str) -> str:
	"""Authorised replacement of non-authorised text: « » become ", the rest goes through unidecode."""
	if text in _QUOTES:
		return _QUOTES[text]
	return _NOT_AUTHORISED_RE.sub("", unidecode(text).replace("[?]", ""))


def _non_authorised(text: str) -> set[str]:
	# Deleting printable ASCII from the UTF-8 bytes in C leaves the few other characters to look at.
	rest = text.encode("utf-8", "surrogatepass").translate(None, _AUTHORISED_ASCII)
	return set(rest.decode("utf-8", "surrogatepass")) - _AUTHORISED_SET


def clean(text: str) -> str:
	"""Reduce `text` to the authorised characters (docs/dimensiongpt.md, "Cleaning"). Idempotent."""
	bad = _non_authorised(text)
	if bad & _MULTI_PARTS:
		text = _MULTI_RE.sub(lambda m: _TO_PRIVATE[m.group()], text)
		bad = _non_authorised(text)
	if len(bad) > _MANY_BAD:
		text = _NOT_AUTHORISED_RE.sub(lambda m: "".join(map(transliterate, m.group())), text)
	else:
		# A few distinct characters (the usual case): one fast C-level replace each.
		for c in bad:
			text = text.replace(c, transliterate(c))
	for _ in range(3):  # short runs of spaces before a newline: str.replace is much faster than the regex
		if " \n" not in text and "\t\n" not in text:
			break
		text = text.replace(" \n", "\n").replace("\t\n", "\n")
	else:
		text = _SPACES_BEFORE_NEWLINE_RE.sub("\n", text)
	if "\n\n\n" in text:
		text = _MANY_NEWLINES_RE.sub("\n\n", text)
	return text.strip(" \t\n")


def unclean(text: str) -> str:
	"""Back to display text: private emoji characters become their real emoji sequences."""
	if text.isascii():
		return text
	return text.translate(_FROM_PRIVATE)
