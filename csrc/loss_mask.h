// Completion-only loss: which tokens of a row are trained on (their labels kept) and
// which are left out of the loss (label -100), as TRL's completion and assistant masks
// have it.
//
// Two sources:
// - a per-token mask column beside the tokens, every row as long as its tokens (checked
//   when the corpus is opened): 1 (true) keeps the token's label, 0 (false) sets it to
//   -100; any other value raises CorpusFormatError naming file, column and row when a
//   batch holding it is written;
// - a per-row prompt length p, 0 <= p <= the row's length (every row is checked when the
//   mask is made): the row's first p tokens are the prompt, left out.
// A packed dataset writes an EOS after every row; it is in the loss exactly when the
// row's last token is, so an example ending in a trained completion learns to stop, and
// one with no trained token (an empty row among them) adds nothing to the loss.
#pragma once

#include <cstdint>
#include <memory>
#include <string>

#include "columns.h"

namespace arrowloader {

class LossMask {
 public:
  // A mask column row-aligned with `tokens`; throws std::invalid_argument if their row
  // counts differ.
  LossMask(std::shared_ptr<const TokenColumn> tokens, std::shared_ptr<const TokenColumn> mask);
  // A prompt length per row of `tokens`; throws CorpusFormatError naming file, column
  // and row for a negative length or one beyond its row.
  LossMask(std::shared_ptr<const TokenColumn> tokens,
           std::shared_ptr<const ScalarColumn> prompt_lengths);

  // The column the mask comes from (mask or prompt lengths).
  const std::string& column() const;

  // Sets labels[j] = ignore for every j in [0, count) whose token, number skip + j of row
  // `global`, is left out of the loss. Index length(row) is the EOS a packed dataset
  // writes after the row; skip + count must not pass it.
  void apply(int64_t global, int64_t skip, int64_t count, int64_t* labels,
             int64_t ignore) const;
  void apply(int64_t global, int64_t skip, int64_t count, int32_t* labels,
             int32_t ignore) const;

 private:
  template <typename Dst>
  void apply_to(int64_t global, int64_t skip, int64_t count, Dst* labels, Dst ignore) const;
  // Whether token i (< length) of row `global` is trained; the mask's row is `row`.
  bool mask_value(const TokenRow& row, int64_t global, int64_t i) const;

  std::shared_ptr<const TokenColumn> tokens_;
  std::shared_ptr<const TokenColumn> mask_;                // or
  std::shared_ptr<const ScalarColumn> prompt_lengths_;
};

}  // namespace arrowloader
