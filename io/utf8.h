// UTF-8 helpers for the tokenizers: tokenizer.json pipelines work on valid UTF-8 only, so
// input bytes are first made valid the way Python's bytes.decode("utf-8", "replace") does.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace qshard {

// `s` with each maximal invalid subpart (Unicode's "maximal subpart of an ill-formed
// subsequence", the rule CPython follows) replaced by U+FFFD. Valid input is returned as is.
std::string sanitize_utf8(std::string_view s);

// Byte length of the character starting with `lead` in valid UTF-8.
inline size_t utf8_char_len(unsigned char lead) {
  return lead < 0x80 ? 1 : lead < 0xE0 ? 2 : lead < 0xF0 ? 3 : 4;
}

// The code point at s[i] (valid UTF-8); advances i past it.
char32_t utf8_next(std::string_view s, size_t& i);

void utf8_append(std::string& out, char32_t cp);

}  // namespace qshard

namespace qshard {

// Character classes as Rust's char methods define them (the `tokenizers` crate uses those),
// from utf8proc's Unicode tables.
bool unicode_is_whitespace(char32_t cp);    // White_Space: Z* categories, \t..\r, U+0085
bool unicode_is_numeric(char32_t cp);       // N* categories
bool unicode_is_alphanumeric(char32_t cp);  // L*, N* categories

}  // namespace qshard
