// The few Unicode facts the GPT-2 tokenizer needs: UTF-8 decoding and the classes \p{L},
// \p{N} and JavaScript's \s.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>

namespace fp8lm::unicode {

bool is_letter(char32_t cp);  // general category L*
bool is_number(char32_t cp);  // general category N*
bool is_space(char32_t cp);   // JavaScript \s

// Decodes the code point starting at s[i] and advances i past it. Malformed bytes decode
// as U+FFFD, one byte at a time, so every input makes progress.
char32_t next_code_point(std::string_view s, size_t& i);
void append_utf8(std::string& out, char32_t cp);

}  // namespace fp8lm::unicode
