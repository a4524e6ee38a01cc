#!/usr/bin/env python3
"""Writes the corpus files whose bytes matter more than their look and that an editor would
damage: whitespace.txt (CRLF, lone CR, Unicode spaces), nfd.txt (decomposed marks) and
invalid_utf8.txt (each kind of maximal invalid subpart). Run from this folder."""
import unicodedata

# Runs of spaces, tabs and newlines, trailing spaces, CRLF, lone CR, other spaces.
ws = ("no trailing\n"
      "one trailing \n"
      "three trailing   \n"
      "    four leading spaces\n"
      "\ttab leading\n"
      "\t\t\ttwo... three tabs\n"
      "mixed \t \t mixed\n"
      "\n\n\n"
      "after three newlines\n"
      "a  b   c    d     e      f       g        h\n"
      "                                                                (64 spaces before)\n"
      "windows line\r\n"
      "another windows line \r\n"
      "\r\n"
      "\r\n"
      "old mac line\r"
      "form\x0cfeed and vertical\x0btab\n"
      "non\u00a0breaking\u00a0spaces, thin\u2009space, em\u2003space, ideographic\u3000space\n"
      "zero\u200bwidth\u200bspace, word\u2060joiner, bom\ufeffinside\n"
      "line\u2028separator and paragraph\u2029separator\n"
      " \n"
      "  \n"
      "\t\n"
      " \t \n"
      "ends with spaces and newlines   \n\n   ")
with open("whitespace.txt", "w", encoding="utf-8", newline="") as f:
    f.write(ws)

# Combining marks in NFD form (decomposed), next to their NFC forms.
words = ["café", "résumé", "naïve", "Ångström", "São Paulo", "crème brûlée", "Zürich",
         "Dvořák", "Łódź", "ñandú", "Việt Nam", "Tiếng Việt", "ελληνικά", "Ἀθῆναι",
         "й", "ё", "가나다", "の が ぱ"]
lines = ["NFD: " + " ".join(unicodedata.normalize("NFD", w) for w in words),
         "NFC: " + " ".join(unicodedata.normalize("NFC", w) for w in words),
         "Stacked marks: a\u0301\u0302\u0303 e\u0308\u0304 o\u031b\u0323 z\u0335\u0336",
         "Lone marks: \u0301 \u0308x \u0300\u0301\u0302 and a mark after a digit 1\u0301",
         "Zalgo-ish: h\u0336\u0337e\u0338\u0339l\u033a\u033bl\u033c\u033do\u033e\u033f",
         "Compatibility: ﬁ ﬂ ﬃ Ⅸ ㎏ ㍻ ｱ ＡＢＣ ℌ ℍ ① ⁵ ₅ ½"]
nfd = "\n".join(lines) + "\n"
assert unicodedata.normalize("NFC", nfd) != nfd
with open("nfd.txt", "w", encoding="utf-8", newline="") as f:
    f.write(nfd)

# Invalid UTF-8: every kind of maximal invalid subpart, each between valid text. The first
# KiB stays valid because qshard's --text refuses a file with invalid UTF-8 there (that is
# how it tells a token file given as text); past it, invalid bytes reach the tokenizer.
prefix = ("This file starts with more than one KiB of valid UTF-8, since qshard reads a text "
          "file whose first KiB is not UTF-8 as a token file given by mistake and refuses it. "
          "After this paragraph come the invalid sequences. Each maximal invalid subpart must "
          "become one U+FFFD, exactly as Python's bytes.decode('utf-8', errors='replace') "
          "does, and the text around it must tokenize as usual. ")
parts = [(prefix * 3).encode() + b"\n",
         b"valid start. ",
         b"lone continuation \x80 and \xbf; ",
         b"truncated two-byte \xc3 then space; ",
         b"overlong \xc0\xaf and \xe0\x80\xaf; ",
         b"truncated three-byte \xe2\x82 end; ",
         b"truncated four-byte \xf0\x9f\x98 end; ",
         b"surrogate \xed\xa0\x80 encoded; ",
         b"beyond U+10FFFF \xf4\x90\x80\x80 and \xf5\x80; ",
         b"bytes \xfe\xff \xff\xfe; ",
         b"latin-1 caf\xe9 na\xefve; ",
         b"valid emoji \xf0\x9f\xa6\x99 after invalid \xc3\xc3\xa9\n",
         b"a line of only invalid bytes:\n\x80\x81\x82\xc0\xc1\xf8\xfc\n",
         b"ends in the middle of a character: \xe4\xb8"]
with open("invalid_utf8.txt", "wb") as f:
    f.write(b"".join(parts))
