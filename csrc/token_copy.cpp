#include "token_copy.h"

#include <cstring>
#include <type_traits>

namespace arrowloader {

namespace {

// The hot loops are compiled twice, for AVX2 and for the baseline ISA, and the dynamic
// loader picks one per machine (GCC/Clang target_clones), so one wheel runs everywhere
// and wide stores are used where the CPU has them. Not in sanitizer builds: the
// resolvers run while the library is relocated, before a sanitizer's runtime can take
// their instrumented calls (a ThreadSanitizer build crashed at import).
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(__SANITIZE_ADDRESS__) && !defined(__SANITIZE_THREAD__)
#define ARROWLOADER_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ARROWLOADER_CLONES
#endif

template <typename Src, typename Dst>
inline void convert_loop(const Src* src, int64_t n, Dst* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src[i]);
}

// The same values into two outputs in one pass (input_ids and shifted labels): cheaper than
// copying one output into the other afterwards, which reads it back.
template <typename Src, typename Dst>
inline void convert_loop(const Src* __restrict src, int64_t n, Dst* __restrict dst,
                         Dst* __restrict also) {
  for (int64_t i = 0; i < n; ++i) {
    const auto value = static_cast<Dst>(src[i]);
    dst[i] = value;
    also[i] = value;
  }
}

template <typename Dst>
inline void convert_any(const void* src, TokenType type, int64_t n, Dst* dst, Dst* also) {
  switch (type) {
    case TokenType::kInt32: convert_loop(static_cast<const int32_t*>(src), n, dst, also); break;
    case TokenType::kInt64: convert_loop(static_cast<const int64_t*>(src), n, dst, also); break;
    case TokenType::kUInt16: convert_loop(static_cast<const uint16_t*>(src), n, dst, also); break;
    case TokenType::kUInt32: convert_loop(static_cast<const uint32_t*>(src), n, dst, also); break;
    case TokenType::kInt8: convert_loop(static_cast<const int8_t*>(src), n, dst, also); break;
    case TokenType::kUInt8: convert_loop(static_cast<const uint8_t*>(src), n, dst, also); break;
    case TokenType::kBool:
      copy_bits(src, 0, n, dst);
      copy_bits(src, 0, n, also);
      break;
  }
}

// Index of the first value outside int32's range, or -1. Branch-free reduction first; the
// loop that finds the index runs only after a failure.
template <typename Src>
inline int64_t first_outside_int32(const Src* src, int64_t n) {
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    bad |= src[i] > static_cast<Src>(INT32_MAX);
    if constexpr (std::is_signed_v<Src>) bad |= src[i] < static_cast<Src>(INT32_MIN);
  }
  if (!bad) return -1;
  for (int64_t i = 0; i < n; ++i) {
    bool outside = src[i] > static_cast<Src>(INT32_MAX);
    if constexpr (std::is_signed_v<Src>) outside |= src[i] < static_cast<Src>(INT32_MIN);
    if (outside) return i;
  }
  return -1;
}

// Index of the first value outside [0, limit), or -1; same two-pass shape. Signed values
// are compared as unsigned, so a negative one is outside too.
template <typename Src>
inline int64_t first_outside(const Src* src, int64_t n, uint64_t limit) {
  using Unsigned = std::make_unsigned_t<Src>;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    bad |= static_cast<uint64_t>(static_cast<Unsigned>(src[i])) >= limit;
  }
  if (!bad) return -1;
  for (int64_t i = 0; i < n; ++i) {
    if (static_cast<uint64_t>(static_cast<Unsigned>(src[i])) >= limit) return i;
  }
  return -1;
}

}  // namespace

ARROWLOADER_CLONES int64_t first_outside_vocab(const void* src, TokenType type, int64_t n,
                                               int64_t limit) {
  const auto bound = static_cast<uint64_t>(limit);
  switch (type) {
    case TokenType::kInt32: return first_outside(static_cast<const int32_t*>(src), n, bound);
    case TokenType::kInt64: return first_outside(static_cast<const int64_t*>(src), n, bound);
    case TokenType::kUInt16: return first_outside(static_cast<const uint16_t*>(src), n, bound);
    case TokenType::kUInt32: return first_outside(static_cast<const uint32_t*>(src), n, bound);
    case TokenType::kInt8: return first_outside(static_cast<const int8_t*>(src), n, bound);
    case TokenType::kUInt8: return first_outside(static_cast<const uint8_t*>(src), n, bound);
    case TokenType::kBool: return -1;  // never a vocabulary's (narrow columns have none)
  }
  return -1;
}

int64_t token_at(const void* src, TokenType type, int64_t i) {
  switch (type) {
    case TokenType::kInt32: return static_cast<const int32_t*>(src)[i];
    case TokenType::kInt64: return static_cast<const int64_t*>(src)[i];
    case TokenType::kUInt16: return static_cast<const uint16_t*>(src)[i];
    case TokenType::kUInt32: return static_cast<const uint32_t*>(src)[i];
    case TokenType::kInt8: return static_cast<const int8_t*>(src)[i];
    case TokenType::kUInt8: return static_cast<const uint8_t*>(src)[i];
    case TokenType::kBool: return bit_at(src, i);
  }
  return 0;
}

ARROWLOADER_CLONES void copy_tokens(const void* src, TokenType type, int64_t n, int64_t* dst) {
  switch (type) {
    case TokenType::kInt32: convert_loop(static_cast<const int32_t*>(src), n, dst); break;
    case TokenType::kInt64: std::memcpy(dst, src, static_cast<size_t>(n) * 8); break;
    case TokenType::kUInt16: convert_loop(static_cast<const uint16_t*>(src), n, dst); break;
    case TokenType::kUInt32: convert_loop(static_cast<const uint32_t*>(src), n, dst); break;
    case TokenType::kInt8: convert_loop(static_cast<const int8_t*>(src), n, dst); break;
    case TokenType::kUInt8: convert_loop(static_cast<const uint8_t*>(src), n, dst); break;
    case TokenType::kBool: copy_bits(src, 0, n, dst); break;
  }
}

// Returns the index of a token that does not fit int32 (nothing written), or -1.
ARROWLOADER_CLONES int64_t copy_tokens(const void* src, TokenType type, int64_t n,
                                       int32_t* dst) {
  switch (type) {
    case TokenType::kInt32: std::memcpy(dst, src, static_cast<size_t>(n) * 4); return -1;
    case TokenType::kUInt16:
      convert_loop(static_cast<const uint16_t*>(src), n, dst);
      return -1;
    case TokenType::kInt8:
      convert_loop(static_cast<const int8_t*>(src), n, dst);
      return -1;
    case TokenType::kUInt8:
      convert_loop(static_cast<const uint8_t*>(src), n, dst);
      return -1;
    case TokenType::kBool:
      copy_bits(src, 0, n, dst);
      return -1;
    case TokenType::kInt64: {
      const auto* s = static_cast<const int64_t*>(src);
      const int64_t bad = first_outside_int32(s, n);
      if (bad < 0) convert_loop(s, n, dst);
      return bad;
    }
    case TokenType::kUInt32: {
      const auto* s = static_cast<const uint32_t*>(src);
      const int64_t bad = first_outside_int32(s, n);
      if (bad < 0) convert_loop(s, n, dst);
      return bad;
    }
  }
  return -1;
}

ARROWLOADER_CLONES void copy_tokens_twice(const void* src, TokenType type, int64_t n,
                                          int64_t* dst, int64_t* also) {
  convert_any(src, type, n, dst, also);
}

ARROWLOADER_CLONES int64_t copy_tokens_twice(const void* src, TokenType type, int64_t n,
                                             int32_t* dst, int32_t* also) {
  if (type == TokenType::kInt64) {
    const int64_t bad = first_outside_int32(static_cast<const int64_t*>(src), n);
    if (bad >= 0) return bad;
  } else if (type == TokenType::kUInt32) {
    const int64_t bad = first_outside_int32(static_cast<const uint32_t*>(src), n);
    if (bad >= 0) return bad;
  }
  convert_any(src, type, n, dst, also);
  return -1;
}

ARROWLOADER_CLONES void fill(int64_t* dst, int64_t n, int64_t value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

ARROWLOADER_CLONES void fill(int32_t* dst, int64_t n, int32_t value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

}  // namespace arrowloader
