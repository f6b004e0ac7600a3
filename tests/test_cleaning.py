"""Cleaning: the semantics of docs/dimensiongpt.md, properties with hypothesis, and a few exact cases."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from dimgpt.data.cleaning import AUTHORISED, MULTI_EMOJI, PRIVATE, clean, transliterate, unclean

DISPLAY = sorted(set(AUTHORISED) - set(PRIVATE))  # what a user may type and get back unchanged
CONTROL_STRINGS = ["⮜assistant⮞", "⮜user⮞", "⮜end-of-text⮞", "⮜tab⮞", "⮜new-line⮞"]
ANY_PIECE = st.one_of(
	st.text(max_size=30),
	st.sampled_from(
		[
			*MULTI_EMOJI,
			*CONTROL_STRINGS,
			"\r\n",
			"  \n",
			"\n\n\n\n",
			"«",
			"»",
			"\u00a0",
			"\u2019",
			"œ",
			"日本",
			"\ufe0f",
			"\u200d",
		]
	),
	st.sampled_from(DISPLAY),
)
any_text = st.lists(ANY_PIECE, max_size=30).map("".join)
display_text = st.lists(st.one_of(st.sampled_from(DISPLAY), st.sampled_from(MULTI_EMOJI)), max_size=60).map("".join)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_idempotent(text: str) -> None:
	once = clean(text)
	assert clean(once) == once


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_output_is_authorised_only(text: str) -> None:
	out = clean(text)
	assert set(out) <= set(AUTHORISED)
	assert "\r" not in out and out == out.strip(" \t\n")
	assert " \n" not in out and "\t\n" not in out and "\n\n\n" not in out


@settings(max_examples=300, deadline=None)
@given(display_text)
def test_round_trip_of_authorised_text(text: str) -> None:
	# Only the whitespace rules may change such text: spaces/tabs before a newline, 3+ newlines, the ends.
	expected = re.sub(r"\n{3,}", "\n\n", re.sub(r"[ \t]+\n", "\n", text)).strip(" \t\n")
	assert unclean(clean(text)) == expected


@settings(max_examples=300, deadline=None)
@given(any_text, st.sampled_from(CONTROL_STRINGS), any_text)
def test_typed_control_token_is_not_kept(before: str, token: str, after: str) -> None:
	out = clean(before + token + after)
	assert "⮜" not in out and "⮞" not in out


def test_exact_cases() -> None:
	assert clean("  « Bonjour » dit-il.\r\n") == '" Bonjour " dit-il.'
	assert clean("l\u2019été\u00a0: ça, œuf, Ça") == "l'été : ça, œuf, Ça"
	assert clean("a  \t\n\n\n\n b") == "a\n\n b"
	assert clean("Straße 東京") == "Strasse Dong Jing"
	assert clean("") == "" and clean(" \n\t ") == ""
	for emoji in MULTI_EMOJI:
		cleaned = clean(f"x {emoji} y")
		assert len(cleaned) == 5 and unclean(cleaned) == f"x {emoji} y"
	assert clean("❤\ufe0f") == clean("❤️") and unclean(clean("😀 🔥")) == "😀 🔥"


def test_many_distinct_foreign_characters() -> None:
	# Above a few distinct non-authorised characters the regex path is taken: same result per character.
	foreign = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 100))
	assert clean(foreign) == "".join(transliterate(c) for c in foreign).strip()
	assert clean("ab" + foreign[:3]) == "ab" + "".join(transliterate(c) for c in foreign[:3]).strip()
	assert set(clean(foreign)) <= set(AUTHORISED)
