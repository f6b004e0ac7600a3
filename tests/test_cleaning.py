"""DimensionGPT compatibility of cleaning: a table of tricky strings, the step-by-step oracle, properties.

Every expected output in `CASES` is derived by hand from the release's rules (docs/dimensiongpt.md,
"Cleaning"), with `unidecode`'s transliteration where a character is not kept. The ids follow from the
cleaned text: with a vocabulary of single characters, one id per character, tab and newline as their
control tokens.
"""

from __future__ import annotations

import warnings

import pytest
from cleaning_oracle import clean as oracle_clean
from hypothesis import given, settings
from hypothesis import strategies as st

from dimgpt.data.cleaning import (
	AUTHORISED,
	CIRCLED,
	EMOJI_SEQUENCES,
	ENCODED_EMOJI,
	KEPT,
	KEPT_EMOJI,
	REPLACEMENTS,
	TOKEN_CHARACTERS,
	clean,
	transliterate,
	unclean,
)
from dimgpt.data.tokenizer import CONTROL_TOKENS, NEW_LINE, TAB, Tokenizer

FLAGS = {  # the eighteen sequences the release maps to ①…⑱, in its order
	"🏳️‍🌈": "①",
	"🏳️‍⚧️": "②",
	"🏴‍☠️": "③",
	"🇺🇸": "④",
	"🇨🇳": "⑤",
	"🇯🇵": "⑥",
	"🇩🇪": "⑦",
	"🇮🇳": "⑧",
	"🇬🇧": "⑨",
	"🇫🇷": "⑩",
	"🇮🇹": "⑪",
	"🇨🇦": "⑫",
	"🇧🇷": "⑬",
	"🇷🇺": "⑭",
	"🇰🇷": "⑮",
	"🇦🇺": "⑯",
	"🇲🇽": "⑰",
	"🇪🇸": "⑱",
}

CASES: list[tuple[str, str, str]] = [
	# (what, input, expected cleaned text)
	# French quotes: the plain space inside « » goes with them; any other space stays (as a space).
	("guillemets, spaces", "« Bonjour »", '"Bonjour"'),
	("guillemets, no space", "«Bonjour»", '"Bonjour"'),
	("guillemets, no-break spaces", "«\u00a0Bonjour\u00a0»", '" Bonjour "'),
	("guillemets, narrow no-break", "«\u202fBonjour\u202f»", '" Bonjour "'),
	("guillemets, two spaces", "«  deux  »", '" deux "'),
	("guillemets in a sentence", "Il dit « oui » et « non ».", 'Il dit "oui" et "non".'),
	("other quotes", "“a” ‘b’ „c“ ‚d‘ ‹e› l’été", "\"a\" 'b' ,,c\" ,d' <e> l'été"),
	("ascii quotes and backquote", "'a' \"b\" `c`", "'a' \"b\" `c`"),
	# Dashes: unidecode, then -- becomes - (per character: two em dashes give --).
	("hyphen-minus", "a-b", "a-b"),
	("hyphens", "a\u2010b\u2011c\u2012d", "a-b-c-d"),
	("en dash", "a – b", "a - b"),
	("em dash", "a — b", "a - b"),
	("two em dashes", "a——b", "a--b"),
	("horizontal bar, hyphen bullet", "a―b⁃c", "a-b-c"),
	("minus sign, fullwidth, small", "a−b－c﹘d", "a-b-c-d"),
	("two- and three-em dashes", "a⸺b⸻c", "a--b---c"),
	# Emoji sequences, flags, skin tones, ZWJ sequences.
	("heart with VS16", "❤️", "❤"),
	("heart alone", "❤", "❤"),
	("sun, snowflake, plane with VS16", "☀️❄️✈️", "☀❄✈"),
	("victory hand (not kept)", "✌️ ✌", ""),
	("melting face (kept)", "🫠", "🫠"),
	("white flag", "🏳️ 🏳", "🏳 🏳"),
	("black flag, chequered flag", "🏴🏁", "🏴🏁"),
	("a flag not in the eighteen", "🇧🇪x", "x"),
	("rainbow flag without VS16", "🏳\u200d🌈", "🏳🌈"),
	("circled numbers typed", "① ⑩ ⑱ ⑲", "1 10 18 19"),
	("skin tones", "👍🏽 👋🏿", "👍 👋"),
	("family ZWJ sequence", "👨\u200d👩\u200d👧\u200d👦", "👨👩👧👦"),
	("technologist ZWJ sequence", "👩\u200d💻", "👩💻"),
	("heart on fire", "❤️\u200d🔥", "❤🔥"),
	("keycap", "1️⃣", "1"),
	# Symbols: replaced before unidecode, kept, or transliterated.
	("emoji punctuation", "❗️❕❓❔‼️⁉️", "!!??!!!?"),
	("bare exclamation emoji", "❗", ""),
	("double exclamation without VS16", "‼", "!!"),
	("check and cross", "✔️✖️✅❌", "✅❌✅❌"),
	("bare check mark", "✔", ""),
	("smiling and frowning faces", "☺ ☺️ ☹ ☹️", "😊 😊 🙁 🙁"),
	("kept symbols", "3,50 € £ ¥ • · ² ³ ≠ ± × ÷ √ π", "3,50 € £ ¥ • · ² ³ ≠ ± × ÷ √ π"),
	("transliterated symbols", "… © ™ ½ ° → ♥", "... (c) (tm)  1/2 deg - hearts"),
	("French letters kept", "ÀàÂâÄäÇçÉéÈèÊêËëÎîÏïÔôÖöÙùÛûÜüÆæŒœ", "ÀàÂâÄäÇçÉéÈèÊêËëÎîÏïÔôÖöÙùÛûÜüÆæŒœ"),
	("other Latin letters", "Straße Ÿ ñ Å ø", "Strasse Y n A o"),
	# Other scripts.
	("Cyrillic", "Привет", "Privet"),
	("CJK", "東京 x", "Dong Jing  x"),
	("CJK at the end", "x 東京", "x Dong Jing"),
	("Arabic", "مرحبا", "mrHb"),
	("Hebrew", "שלום", "SHlvm"),
	("Greek", "αβγ", "abg"),
	# Spaces, zero-width and control characters.
	("no-break spaces", "a\u00a0b\u202fc\u2009d\u2002e\u3000f", "a b c d e f"),
	("zero-width space becomes a space", "a\u200bb", "a b"),
	("zero-width non-joiner, joiner, word joiner, BOM, soft hyphen", "a\u200cb\u200dc\u2060d\ufeffe\u00adf", "abcdef"),
	("C0 controls, DEL, NEL", "a\x00b\x07c\x0bd\x0ce\x1bf\x7fg\x85h", "abcdefgh"),
	("line and paragraph separators", "a\u2028b\u2029c", "a\nb\n\nc"),
	("typed control tokens", "⮜user⮞ salut ⮜end-of-text⮞", "user salut end-of-text"),
	# CR, LF, tabs: the whitespace rules.
	("CRLF", "a\r\nb", "a\nb"),
	("CRLF blank lines", "a\r\n\r\n\r\n\r\nb", "a\n\nb"),
	("lone CR", "a\rb", "ab"),
	("CR between « and a space", "«\r Bonjour", '"Bonjour'),
	("spaces before a newline", "a   \nb", "a\nb"),
	("tabs before a newline", "a\t\t\nb", "a\nb"),
	("tab then space before a newline", "a\t \nb", "a\nb"),
	("space then tab before a newline (the space stays)", "a \t\nb", "a \nb"),
	("3+ newlines", "a\n\n\n\n\nb", "a\n\nb"),
	("tabs inside", "a\tb", "a\tb"),
	("ends stripped", " \t\n x y \n\t ", "x y"),
	("empty", "", ""),
	("whitespace only", " \r\n\t\u00a0", ""),
]
CASES += [(f"flag {seq}", f"{seq} x", f"{single} x") for seq, single in FLAGS.items()]


@pytest.mark.parametrize(("what", "text", "expected"), CASES, ids=[c[0] for c in CASES])
def test_compatibility_table(what: str, text: str, expected: str, char_tokenizer: Tokenizer) -> None:
	assert clean(text) == expected
	assert oracle_clean(text) == expected
	# ids: one token per character of the cleaned text (this vocabulary has single characters only).
	ids = [TAB if c == "\t" else NEW_LINE if c == "\n" else char_tokenizer.vocab.index(c) for c in expected]
	assert char_tokenizer.encode(text) == ids
	assert char_tokenizer.decode(ids) == unclean(expected)


@pytest.fixture(scope="module")
def char_tokenizer() -> Tokenizer:
	return Tokenizer([*CONTROL_TOKENS, *TOKEN_CHARACTERS])


def test_word_ids_of_a_french_sentence() -> None:
	# Multi-character tokens: words split and cut greedily on the cleaned text '"Bonjour !" dit-il - ⑩❤'.
	tokenizer = Tokenizer([*CONTROL_TOKENS, "Bonjour", " dit", "il", " -", " ⑩", *TOKEN_CHARACTERS])
	ids = tokenizer.encode("« Bonjour ! » dit-il — 🇫🇷❤️")
	assert [tokenizer.vocab[i] for i in ids] == ['"', "Bonjour", " ", "!", '"', " dit", "-", "il", " -", " ⑩", "❤"]
	assert tokenizer.decode(ids) == '"Bonjour !" dit-il - 🇫🇷❤️'


def test_tables() -> None:
	# The sizes of the release's tables (docs/dimensiongpt.md): any slip in kept_emoji.txt shows here.
	assert len(AUTHORISED) == len(set(AUTHORISED)) == 95 + 34 + 13 + 1_216
	assert len(KEPT_EMOJI) == 1_216 and all(ord(c) > 0x2000 for c in KEPT_EMOJI)
	assert len(TOKEN_CHARACTERS) == len(set(TOKEN_CHARACTERS)) == 1_392
	assert set(KEPT) == set(TOKEN_CHARACTERS) | {"\t", "\n"}
	assert len(REPLACEMENTS) == 16 and len(EMOJI_SEQUENCES) == 34 and len(ENCODED_EMOJI) == 34
	assert dict(EMOJI_SEQUENCES[15:33]) == FLAGS and "".join(FLAGS.values()) == CIRCLED
	assert not set(ENCODED_EMOJI) & set(AUTHORISED)  # step 4's outputs are kept through KEPT, not AUTHORISED
	assert {"\ufe0f", "\u200d"}.isdisjoint(KEPT)
	for single, sequence in ENCODED_EMOJI.items():
		assert clean(sequence) == single and unclean(single) == sequence


def test_not_idempotent_exactly_where_the_release_is_not() -> None:
	# Cleaning twice is not cleaning once, as in the release: a flag becomes a number, " \t\n" loses its space.
	assert clean("🇫🇷") == "⑩" and clean(clean("🇫🇷")) == "10"
	assert clean("a \t\nb") == "a \nb" and clean(clean("a \t\nb")) == "a\nb"


def test_surrogates_are_dropped_quietly() -> None:
	with warnings.catch_warnings():
		warnings.simplefilter("error")
		assert clean("a\ud800b") == "ab"
	with pytest.warns(RuntimeWarning):  # unidecode's own warning
		assert oracle_clean("a\ud800b") == "ab"


# --- properties on generated text

TRICKY = [
	*FLAGS,
	*(s for s, _ in EMOJI_SEQUENCES),
	*(s for s, _ in REPLACEMENTS),
	*CIRCLED,
	*CONTROL_TOKENS,
	"\r\n",
	" \t\n",
	"\t \n",
	"  \n",
	"\n\n\n\n",
	"\u00a0",
	"\u202f",
	"\u200b",
	"\u200d",
	"\ufe0f",
	"\u2028",
	"—",
	"——",
	"–",
	"⸻",
	"’",
	"œ",
	"日本",
	"Привет",
	"👍🏽",
	"\x00",
]
ANY_PIECE = st.one_of(
	st.text(max_size=20),
	st.sampled_from(TRICKY),
	st.sampled_from(sorted(KEPT)),
	st.text(alphabet=" \t\n\r«»-", max_size=6),
)
any_text = st.lists(ANY_PIECE, max_size=30).map("".join)


@settings(max_examples=400, deadline=None)
@given(any_text)
def test_same_as_the_step_by_step_oracle(text: str) -> None:
	assert clean(text) == oracle_clean(text)


def test_many_distinct_characters_take_the_regex_path() -> None:
	# Above 32 distinct characters to transliterate, one regex pass: same result as the oracle.
	foreign = "".join(chr(c) for c in range(0x4E00, 0x4E00 + 100)) + "« a » — ❤️ 🇫🇷 ‼️ ①"
	assert clean(foreign) == oracle_clean(foreign)
	assert clean(foreign[::-1]) == oracle_clean(foreign[::-1])
	assert set(clean(foreign)) <= set(KEPT)


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_output_alphabet_and_whitespace(text: str) -> None:
	out = clean(text)
	assert set(out) <= set(KEPT)
	assert out == out.strip() and "\r" not in out
	assert "\t\n" not in out and "\n\n\n" not in out  # " \n" may stay: spaces went before tabs did


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_idempotent_unless_a_circled_number_or_space_before_newline(text: str) -> None:
	once = clean(text)
	# The release's two exceptions (see test_not_idempotent_...): else cleaning again changes nothing.
	stable = not set(once) & set(CIRCLED) and " \n" not in once
	assert (clean(once) == once) == stable
	assert clean(clean(clean(once))) == clean(clean(once))  # a fixed point after at most three passes


@settings(max_examples=300, deadline=None)
@given(any_text)
def test_decode_encode_clean_is_clean(char_tokenizer: Tokenizer, text: str) -> None:
	cleaned = clean(text)
	ids = char_tokenizer.encode(cleaned, clean=False)
	tokens = "".join("\t" if i == TAB else "\n" if i == NEW_LINE else char_tokenizer.vocab[i] for i in ids)
	assert tokens == cleaned  # the token strings are the cleaned text
	assert char_tokenizer.decode(ids) == unclean(cleaned)  # decoding also undoes step 4 for display
	assert char_tokenizer.encode(text) == ids


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from([*sorted(AUTHORISED), *(s for s, _ in EMOJI_SEQUENCES)]), max_size=50))
def test_display_round_trip_of_typeable_text(pieces: list[str]) -> None:
	# Kept characters and the 34 sequences come back as typed (no tab or newline drawn: only the ends change).
	text = "".join(pieces)
	assert unclean(clean(text)) == text.strip()


def test_transliterate() -> None:
	assert transliterate("—") == "-" and transliterate("⸻") == "---" and transliterate("\u2029") == "\n\n"
	assert transliterate("✌") == "" and transliterate("\x00") == "" and transliterate("ß") == "ss"
