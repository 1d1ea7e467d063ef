// Copying token rows into output buffers, converting their type. The loops behind these
// functions are the hottest of the library (token_copy.cpp).
#pragma once

#include <cstdint>
#include <string>
#include <type_traits>

#include "columns.h"
#include "errors.h"

namespace arrowloader {

// Copies n tokens of `type` from src, widening to int64.
void copy_tokens(const void* src, TokenType type, int64_t n, int64_t* dst);
// Copies n tokens into int32; returns the index of the first token that does not fit
// (then nothing is written), or -1.
int64_t copy_tokens(const void* src, TokenType type, int64_t n, int32_t* dst);
// Both write the n values to dst and to also (two outputs that do not overlap); the int32
// one returns the index of a value that does not fit (nothing written), or -1.
void copy_tokens_twice(const void* src, TokenType type, int64_t n, int64_t* dst, int64_t* also);
int64_t copy_tokens_twice(const void* src, TokenType type, int64_t n, int32_t* dst,
                          int32_t* also);
void fill(int64_t* dst, int64_t n, int64_t value);
void fill(int32_t* dst, int64_t n, int32_t value);
// Index of the first of n tokens outside [0, limit), or -1.
int64_t first_outside_vocab(const void* src, TokenType type, int64_t n, int64_t limit);
// Token i of src, as int64 (uint32 and uint16 ids always fit; kBool: bit i of src).
int64_t token_at(const void* src, TokenType type, int64_t i);
// Bit i of an Arrow bitmap (least significant bit first), as 0 or 1.
inline int bit_at(const void* bitmap, int64_t i) {
  return (static_cast<const uint8_t*>(bitmap)[i >> 3] >> (i & 7)) & 1;
}
// Bits first_bit .. first_bit + n of an Arrow bitmap, as 0 and 1.
template <typename Dst>
void copy_bits(const void* bitmap, int64_t first_bit, int64_t n, Dst* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(bit_at(bitmap, first_bit + i));
}

// Copies `count` tokens of `row` (global row `global` of `tokens`), starting at token
// `skip`, converting to Dst; to `also` as well when it is given (an output that does not
// overlap dst). A token that does not fit Dst, or lies outside the column's vocabulary
// (TokenColumn::vocab_size), raises CorpusFormatError naming the file, column and row.
template <typename Dst>
void copy_row(const TokenRow& row, int64_t skip, int64_t count, Dst* dst,
              const TokenColumn& tokens, int64_t global, Dst* also = nullptr) {
  if (count <= 0) return;
  if (row.type == TokenType::kBool) {  // bits of a narrow column: never out of any range
    copy_bits(row.data, row.first_bit + skip, count, dst);
    if (also != nullptr) copy_bits(row.data, row.first_bit + skip, count, also);
    return;
  }
  const void* src = static_cast<const char*>(row.data) + skip * static_cast<int64_t>(token_size(row.type));
  if (tokens.vocab_size() > 0) {
    const int64_t bad = first_outside_vocab(src, row.type, count, tokens.vocab_size());
    if (bad >= 0) {
      throw CorpusFormatError(tokens.describe_row(global) + ": token id " +
                              std::to_string(token_at(src, row.type, bad)) + " at position " +
                              std::to_string(skip + bad) + " is outside the vocabulary [0, " +
                              std::to_string(tokens.vocab_size()) +
                              "); the corpus was tokenized with another vocabulary, or "
                              "vocab_size is wrong");
    }
  }
  if constexpr (std::is_same_v<Dst, int64_t>) {
    if (also != nullptr) {
      copy_tokens_twice(src, row.type, count, dst, also);
    } else {
      copy_tokens(src, row.type, count, dst);
    }
  } else {
    const int64_t bad = also != nullptr ? copy_tokens_twice(src, row.type, count, dst, also)
                                        : copy_tokens(src, row.type, count, dst);
    if (bad >= 0) {
      throw CorpusFormatError(tokens.describe_row(global) + ": token id " +
                              std::to_string(token_at(src, row.type, bad)) +
                              " does not fit in int32 output; use dtype=torch.int64");
    }
  }
}

}  // namespace arrowloader
