#include "loss_mask.h"

#include <algorithm>
#include <stdexcept>
#include <utility>

#include "errors.h"
#include "token_copy.h"

namespace arrowloader {

namespace {

// Sets labels[i] = ignore where values[i] is 0; returns the index of the first value that
// is neither 0 nor 1 (labels before it written), or -1.
template <typename V, typename Dst>
int64_t mask_labels(const V* values, int64_t n, Dst* labels, Dst ignore) {
  for (int64_t i = 0; i < n; ++i) {
    const V v = values[i];
    if (v == 0) {
      labels[i] = ignore;
    } else if (v != 1) {
      return i;
    }
  }
  return -1;
}

template <typename Dst>
int64_t mask_row(const TokenRow& row, int64_t skip, int64_t n, Dst* labels, Dst ignore) {
  const char* base = static_cast<const char*>(row.data);
  const int64_t at = skip * static_cast<int64_t>(token_size(row.type));
  switch (row.type) {
    case TokenType::kBool:
      for (int64_t i = 0; i < n; ++i) {
        if (bit_at(row.data, row.first_bit + skip + i) == 0) labels[i] = ignore;
      }
      return -1;
    case TokenType::kInt8:
      return mask_labels(reinterpret_cast<const int8_t*>(base + at), n, labels, ignore);
    case TokenType::kUInt8:
      return mask_labels(reinterpret_cast<const uint8_t*>(base + at), n, labels, ignore);
    case TokenType::kUInt16:
      return mask_labels(reinterpret_cast<const uint16_t*>(base + at), n, labels, ignore);
    case TokenType::kInt32:
      return mask_labels(reinterpret_cast<const int32_t*>(base + at), n, labels, ignore);
    case TokenType::kUInt32:
      return mask_labels(reinterpret_cast<const uint32_t*>(base + at), n, labels, ignore);
    case TokenType::kInt64:
      return mask_labels(reinterpret_cast<const int64_t*>(base + at), n, labels, ignore);
  }
  return -1;
}

[[noreturn]] void fail_mask_value(const TokenColumn& mask, int64_t global, const TokenRow& row,
                                  int64_t position) {
  throw CorpusFormatError(mask.describe_row(global) + ": value " +
                          std::to_string(token_at(row.data, row.type, position)) +
                          " at position " + std::to_string(position) +
                          " is neither 0 nor 1; a loss mask holds 1 (true) for tokens in "
                          "the loss and 0 (false) for tokens left out");
}

}  // namespace

LossMask::LossMask(std::shared_ptr<const TokenColumn> tokens,
                   std::shared_ptr<const TokenColumn> mask)
    : tokens_(std::move(tokens)), mask_(std::move(mask)) {
  if (tokens_ == nullptr || mask_ == nullptr) {
    throw std::invalid_argument("LossMask needs the token column and the mask column");
  }
  if (mask_->num_rows() != tokens_->num_rows()) {
    throw std::invalid_argument("mask column '" + mask_->name() + "' has " +
                                std::to_string(mask_->num_rows()) + " rows but token column '" +
                                tokens_->name() + "' has " +
                                std::to_string(tokens_->num_rows()));
  }
}

LossMask::LossMask(std::shared_ptr<const TokenColumn> tokens,
                   std::shared_ptr<const ScalarColumn> prompt_lengths)
    : tokens_(std::move(tokens)), prompt_lengths_(std::move(prompt_lengths)) {
  if (tokens_ == nullptr || prompt_lengths_ == nullptr) {
    throw std::invalid_argument("LossMask needs the token column and the prompt lengths");
  }
  const int64_t n = tokens_->num_rows();
  if (prompt_lengths_->num_rows() != n) {
    throw std::invalid_argument("prompt length column '" + prompt_lengths_->name() + "' has " +
                                std::to_string(prompt_lengths_->num_rows()) +
                                " rows but token column '" + tokens_->name() + "' has " +
                                std::to_string(n));
  }
  // Every row once, here, so that a bad length fails at open and not hours into a run.
  for (int64_t r = 0; r < n; ++r) {
    const int64_t prompt = prompt_lengths_->value(r);
    const int64_t length = tokens_->row_length(r);
    if (prompt < 0 || prompt > length) {
      const std::string what =
          prompt < 0 ? "is negative"
                     : "is beyond the " + std::to_string(length) + " tokens of the row in '" +
                           tokens_->name() + "'";
      throw CorpusFormatError(tokens_->describe_row(r, prompt_lengths_->name()) +
                              ": prompt length " + std::to_string(prompt) + " " + what +
                              "; a prompt length counts the row's first tokens, from 0 to "
                              "its length");
    }
  }
}

const std::string& LossMask::column() const {
  return mask_ != nullptr ? mask_->name() : prompt_lengths_->name();
}

bool LossMask::mask_value(const TokenRow& row, int64_t global, int64_t i) const {
  const int64_t v = row.type == TokenType::kBool ? bit_at(row.data, row.first_bit + i)
                                                 : token_at(row.data, row.type, i);
  if (v != 0 && v != 1) fail_mask_value(*mask_, global, row, i);
  return v == 1;
}

template <typename Dst>
void LossMask::apply_to(int64_t global, int64_t skip, int64_t count, Dst* labels,
                        Dst ignore) const {
  if (count <= 0) return;
  const int64_t length = tokens_->row_length(global);
  if (skip < 0 || skip + count > length + 1) {
    throw std::out_of_range("loss mask of row " + std::to_string(global) + ": tokens " +
                            std::to_string(skip) + " .. " + std::to_string(skip + count) +
                            " of a row of " + std::to_string(length) + " and its EOS");
  }
  const int64_t tokens = std::min(skip + count, length) - skip;  // the rest is the EOS
  bool eos_trained = false;
  if (mask_ != nullptr) {
    const TokenRow row = mask_->row(global);
    if (tokens > 0) {
      const int64_t bad = mask_row(row, skip, tokens, labels, ignore);
      if (bad >= 0) fail_mask_value(*mask_, global, row, skip + bad);
    }
    if (tokens < count) eos_trained = length > 0 && mask_value(row, global, length - 1);
  } else {
    const int64_t prompt = prompt_lengths_->value(global);
    const int64_t left_out = std::min(tokens, prompt - skip);
    for (int64_t j = 0; j < left_out; ++j) labels[j] = ignore;
    eos_trained = prompt < length;
  }
  if (tokens < count && !eos_trained) labels[tokens] = ignore;
}

void LossMask::apply(int64_t global, int64_t skip, int64_t count, int64_t* labels,
                     int64_t ignore) const {
  apply_to(global, skip, count, labels, ignore);
}

void LossMask::apply(int64_t global, int64_t skip, int64_t count, int32_t* labels,
                     int32_t ignore) const {
  apply_to(global, skip, count, labels, ignore);
}

}  // namespace arrowloader
