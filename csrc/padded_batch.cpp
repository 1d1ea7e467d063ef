#include "padded_batch.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "errors.h"

namespace arrowloader {

namespace {

// The hot loops are compiled twice, for AVX2 and for the baseline ISA, and the dynamic
// loader picks one per machine (GCC/Clang target_clones), so one wheel runs everywhere
// and wide stores are used where the CPU has them.
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__)) && !defined(__SANITIZE_ADDRESS__)
#define ARROWLOADER_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define ARROWLOADER_CLONES
#endif

template <typename Src, typename Dst>
inline void convert_loop(const Src* src, int64_t n, Dst* dst) {
  for (int64_t i = 0; i < n; ++i) dst[i] = static_cast<Dst>(src[i]);
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

ARROWLOADER_CLONES void copy_tokens(const void* src, TokenType type, int64_t n, int64_t* dst) {
  switch (type) {
    case TokenType::kInt32: convert_loop(static_cast<const int32_t*>(src), n, dst); break;
    case TokenType::kInt64: std::memcpy(dst, src, static_cast<size_t>(n) * 8); break;
    case TokenType::kUInt16: convert_loop(static_cast<const uint16_t*>(src), n, dst); break;
    case TokenType::kUInt32: convert_loop(static_cast<const uint32_t*>(src), n, dst); break;
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

ARROWLOADER_CLONES void fill(int64_t* dst, int64_t n, int64_t value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

ARROWLOADER_CLONES void fill(int32_t* dst, int64_t n, int32_t value) {
  for (int64_t i = 0; i < n; ++i) dst[i] = value;
}

int64_t token_bytes(TokenType type) {
  return type == TokenType::kInt64 ? 8 : type == TokenType::kUInt16 ? 2 : 4;
}

// Copies `count` tokens of `row`, starting at token `skip`, converting to Dst.
template <typename Dst>
void copy_row(const TokenRow& row, int64_t skip, int64_t count, Dst* dst,
              const TokenColumn& tokens, int64_t global) {
  if (count == 0) return;
  const void* src = static_cast<const char*>(row.data) + skip * token_bytes(row.type);
  if constexpr (std::is_same_v<Dst, int64_t>) {
    copy_tokens(src, row.type, count, dst);
  } else {
    const int64_t bad = copy_tokens(src, row.type, count, dst);
    if (bad >= 0) {
      const int64_t value = row.type == TokenType::kInt64
                                ? static_cast<const int64_t*>(src)[bad]
                                : static_cast<int64_t>(static_cast<const uint32_t*>(src)[bad]);
      throw CorpusFormatError(tokens.describe_row(global) + ": token id " +
                              std::to_string(value) +
                              " does not fit in int32 output; use dtype=torch.int64");
    }
  }
}

template <typename Dst>
int64_t assemble_rows(const TokenColumn& tokens, const ScalarColumn* labels,
                      const PadOptions& opt, const int64_t* rows, int64_t n,
                      const PaddedOutputs& out) {
  const int64_t width = out.width;
  const auto pad_id = static_cast<Dst>(opt.pad_token_id);
  const auto label_pad = static_cast<Dst>(opt.label_pad_id);
  int64_t truncated = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t global = rows[i];
    tokens.check_index(global);
    const TokenRow row = tokens.row(global);
    int64_t keep = row.length;
    if (opt.max_length >= 0 && keep > opt.max_length) keep = opt.max_length;
    if (keep > width) {
      throw std::invalid_argument("row " + std::to_string(global) + " keeps " +
                                  std::to_string(keep) + " tokens but the batch width is " +
                                  std::to_string(width));
    }
    truncated += row.length - keep;
    const int64_t skip = opt.truncate_left ? row.length - keep : 0;
    const int64_t pad = width - keep;
    const int64_t data_at = opt.pad_left ? pad : 0;
    const int64_t pad_at = opt.pad_left ? 0 : keep;

    Dst* ids = static_cast<Dst*>(out.input_ids) + i * width;
    copy_row(row, skip, keep, ids + data_at, tokens, global);
    fill(ids + pad_at, pad, pad_id);
    if (out.attention_mask != nullptr) {
      Dst* mask = static_cast<Dst*>(out.attention_mask) + i * width;
      fill(mask + data_at, keep, Dst{1});
      fill(mask + pad_at, pad, Dst{0});
    }
    if (out.causal_labels != nullptr) {
      Dst* causal = static_cast<Dst*>(out.causal_labels) + i * width;
      if (keep > 0) {
        std::memcpy(causal + data_at, ids + data_at, static_cast<size_t>(keep) * sizeof(Dst));
      }
      fill(causal + pad_at, pad, label_pad);
    }
    if (out.labels != nullptr) out.labels[i] = labels->value(global);
  }
  return truncated;
}

}  // namespace

PaddedBatchAssembler::PaddedBatchAssembler(std::shared_ptr<const TokenColumn> tokens,
                                           std::shared_ptr<const ScalarColumn> labels,
                                           PadOptions options)
    : tokens_(std::move(tokens)), labels_(std::move(labels)), options_(options) {
  if (tokens_ == nullptr) throw std::invalid_argument("tokens must not be None");
  if (labels_ != nullptr && labels_->num_rows() != tokens_->num_rows()) {
    throw std::invalid_argument("label column '" + labels_->name() + "' has " +
                                std::to_string(labels_->num_rows()) + " rows but token column '" +
                                tokens_->name() + "' has " + std::to_string(tokens_->num_rows()));
  }
  if (options_.pad_to_max_length && options_.max_length < 0) {
    throw std::invalid_argument("padding to max length needs max_length");
  }
  if (options_.pad_to_multiple_of < 0) {
    throw std::invalid_argument("pad_to_multiple_of must be positive");
  }
}

int64_t PaddedBatchAssembler::kept_length(int64_t global) const {
  tokens_->check_index(global);
  const int64_t length = tokens_->row_length(global);
  return options_.max_length >= 0 ? std::min(length, options_.max_length) : length;
}

int64_t PaddedBatchAssembler::width(const int64_t* rows, int64_t n) const {
  int64_t longest = 0;
  for (int64_t i = 0; i < n; ++i) longest = std::max(longest, kept_length(rows[i]));
  int64_t result = options_.pad_to_max_length ? options_.max_length : longest;
  const int64_t m = options_.pad_to_multiple_of;
  if (m > 0) result = (result + m - 1) / m * m;
  return result;
}

void PaddedBatchAssembler::widths(const int64_t* rows, int64_t n, int64_t batch_size,
                                  int64_t* out) const {
  if (batch_size < 1) throw std::invalid_argument("batch_size must be at least 1");
  for (int64_t begin = 0, b = 0; begin < n; begin += batch_size, ++b) {
    out[b] = width(rows + begin, std::min(batch_size, n - begin));
  }
}

int64_t PaddedBatchAssembler::assemble(const int64_t* rows, int64_t n,
                                       const PaddedOutputs& out) const {
  if (out.labels != nullptr && labels_ == nullptr) {
    throw std::invalid_argument("labels output given but the assembler has no label column");
  }
  return out.type == OutType::kInt64
             ? assemble_rows<int64_t>(*tokens_, labels_.get(), options_, rows, n, out)
             : assemble_rows<int32_t>(*tokens_, labels_.get(), options_, rows, n, out);
}

void PaddedBatchAssembler::gather(const int64_t* rows, int64_t n, OutType type,
                                  void* flat) const {
  int64_t at = 0;
  int64_t truncated = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t global = rows[i];
    tokens_->check_index(global);
    const TokenRow row = tokens_->row(global);
    const int64_t keep = kept_length(global);
    const int64_t skip = options_.truncate_left ? row.length - keep : 0;
    if (type == OutType::kInt64) {
      copy_row(row, skip, keep, static_cast<int64_t*>(flat) + at, *tokens_, global);
    } else {
      copy_row(row, skip, keep, static_cast<int32_t*>(flat) + at, *tokens_, global);
    }
    at += keep;
    truncated += row.length - keep;
  }
  truncated_tokens_.fetch_add(truncated, std::memory_order_relaxed);
}

}  // namespace arrowloader
