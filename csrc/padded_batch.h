// Padded batches: gather + truncate + pad of whole batches of token rows.
//
// For row i of a batch the kept tokens are the first (or, truncating left,
// the last) min(length, max_length) tokens. The batch width is the longest
// kept row, or max_length with padding to max length, rounded up to a
// multiple. Rows are padded right or left; the attention mask is 1 on kept
// tokens, and causal labels repeat the tokens with -100 on padding. Which
// positions are padding is decided by length alone, never by token values.
// With a loss mask (loss_mask.h), causal labels are -100 on the tokens it leaves out too.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <vector>

#include "columns.h"
#include "job.h"
#include "loss_mask.h"

namespace arrowloader {

struct PadOptions {
  int64_t max_length = -1;  // < 0: no truncation
  bool truncate_left = false;
  bool pad_left = false;
  bool pad_to_max_length = false;
  int64_t pad_to_multiple_of = 0;  // 0: no rounding
  int64_t pad_token_id = 0;
  int64_t label_pad_id = -100;
};

enum class OutType { kInt32, kInt64 };

// Bytes of one output element of `type`.
constexpr int64_t element_size(OutType type) { return type == OutType::kInt64 ? 8 : 4; }

// Raw output buffers for one batch of n rows. Shapes and dtypes are checked
// by the caller (bind_checks.cpp); everything here is C-contiguous.
struct PaddedOutputs {
  OutType type = OutType::kInt64;
  int64_t width = 0;
  void* input_ids = nullptr;       // [n, width]
  void* attention_mask = nullptr;  // [n, width] or null
  void* causal_labels = nullptr;   // [n, width] or null
  int64_t* labels = nullptr;       // [n] or null, from the label column
};

class PaddedBatchAssembler {
 public:
  PaddedBatchAssembler(std::shared_ptr<const TokenColumn> tokens,
                       std::shared_ptr<const ScalarColumn> labels, PadOptions options,
                       std::shared_ptr<const LossMask> loss_mask = nullptr);

  const PadOptions& options() const { return options_; }
  bool has_labels() const { return labels_ != nullptr; }
  int64_t num_rows() const { return tokens_->num_rows(); }

  // Number of tokens row `global` keeps after truncation.
  int64_t kept_length(int64_t global) const;
  // Width of the padded batch made of rows[0..n). Checks every index.
  int64_t width(const int64_t* rows, int64_t n) const;
  // widths[b] = width(rows + b * batch_size, ...) for consecutive batches;
  // the last batch may be short. `out` holds ceil(n / batch_size) entries.
  void widths(const int64_t* rows, int64_t n, int64_t batch_size, int64_t* out) const;
  // out[b] = width(rows + starts[b], ends[b] - starts[b]) for the batches of a plan
  // (batch_plans.h); each span must lie within `rows`: checked by the caller.
  void widths_at(const int64_t* rows, const int64_t* starts, const int64_t* ends,
                 int64_t num_batches, int64_t* out) const;
  // kept_length() of every row of the column, in order: out[0..num_rows()).
  void kept_lengths(int64_t* out) const;

  // Writes one padded batch. Returns the number of tokens truncation dropped; the
  // caller counts them when the batch is delivered (batches assembled ahead and then
  // cancelled were never served).
  int64_t assemble(const int64_t* rows, int64_t n, const PaddedOutputs& out) const;

  // Writes the kept tokens of rows[0..n) back to back into `flat`, which holds
  // the sum of kept_length() over the rows, as elements of `type`. Adds the
  // dropped tokens to truncated_tokens().
  void gather(const int64_t* rows, int64_t n, OutType type, void* flat) const;

  // Like gather(), but writes the kept tokens' causal labels: the tokens, -100 where the
  // loss mask leaves them out. Counts no truncation (gather() of the same rows does).
  void gather_labels(const int64_t* rows, int64_t n, OutType type, void* flat) const;

  // Tokens truncation dropped in gather() calls so far.
  int64_t truncated_tokens() const { return truncated_tokens_.load(); }

 private:
  std::shared_ptr<const TokenColumn> tokens_;
  std::shared_ptr<const ScalarColumn> labels_;
  PadOptions options_;
  std::shared_ptr<const LossMask> loss_mask_;  // null: every token in the loss
  mutable std::atomic<int64_t> truncated_tokens_{0};
};

// One batch of a padded job: rows[0..n) written into `out`.
struct PaddedBatch {
  const int64_t* rows = nullptr;
  int64_t n = 0;
  PaddedOutputs out;
};

// A job (job.h) that writes `batches` in order; batch j's figures are (tokens its
// truncation dropped, 0). The rows and outputs must stay alive until the job is done.
std::shared_ptr<Job> padded_job(std::shared_ptr<const PaddedBatchAssembler> assembler,
                                std::vector<PaddedBatch> batches);

}  // namespace arrowloader
