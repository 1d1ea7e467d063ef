#include "padded_batch.h"

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "errors.h"
#include "token_copy.h"

namespace arrowloader {

namespace {

template <typename Dst>
int64_t assemble_rows(const TokenColumn& tokens, const ScalarColumn* labels,
                      const LossMask* loss_mask, const PadOptions& opt, const int64_t* rows,
                      int64_t n, const PaddedOutputs& out) {
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
      if (loss_mask != nullptr) loss_mask->apply(global, skip, keep, causal + data_at, label_pad);
    }
    if (out.labels != nullptr) out.labels[i] = labels->value(global);
  }
  return truncated;
}

}  // namespace

PaddedBatchAssembler::PaddedBatchAssembler(std::shared_ptr<const TokenColumn> tokens,
                                           std::shared_ptr<const ScalarColumn> labels,
                                           PadOptions options,
                                           std::shared_ptr<const LossMask> loss_mask)
    : tokens_(std::move(tokens)),
      labels_(std::move(labels)),
      options_(options),
      loss_mask_(std::move(loss_mask)) {
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

void PaddedBatchAssembler::widths_at(const int64_t* rows, const int64_t* starts,
                                     const int64_t* ends, int64_t num_batches,
                                     int64_t* out) const {
  for (int64_t b = 0; b < num_batches; ++b) out[b] = width(rows + starts[b], ends[b] - starts[b]);
}

void PaddedBatchAssembler::kept_lengths(int64_t* out) const {
  const int64_t n = num_rows();
  for (int64_t r = 0; r < n; ++r) out[r] = kept_length(r);
}

int64_t PaddedBatchAssembler::assemble(const int64_t* rows, int64_t n,
                                       const PaddedOutputs& out) const {
  if (out.labels != nullptr && labels_ == nullptr) {
    throw std::invalid_argument("labels output given but the assembler has no label column");
  }
  return out.type == OutType::kInt64
             ? assemble_rows<int64_t>(*tokens_, labels_.get(), loss_mask_.get(), options_, rows,
                                      n, out)
             : assemble_rows<int32_t>(*tokens_, labels_.get(), loss_mask_.get(), options_, rows,
                                      n, out);
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

void PaddedBatchAssembler::gather_labels(const int64_t* rows, int64_t n, OutType type,
                                         void* flat) const {
  const auto ignore = options_.label_pad_id;
  int64_t at = 0;
  for (int64_t i = 0; i < n; ++i) {
    const int64_t global = rows[i];
    tokens_->check_index(global);
    const TokenRow row = tokens_->row(global);
    const int64_t keep = kept_length(global);
    const int64_t skip = options_.truncate_left ? row.length - keep : 0;
    if (type == OutType::kInt64) {
      auto* dst = static_cast<int64_t*>(flat) + at;
      copy_row(row, skip, keep, dst, *tokens_, global);
      if (loss_mask_ != nullptr) loss_mask_->apply(global, skip, keep, dst, ignore);
    } else {
      auto* dst = static_cast<int32_t*>(flat) + at;
      copy_row(row, skip, keep, dst, *tokens_, global);
      if (loss_mask_ != nullptr) {
        loss_mask_->apply(global, skip, keep, dst, static_cast<int32_t>(ignore));
      }
    }
    at += keep;
  }
}

std::shared_ptr<Job> padded_job(std::shared_ptr<const PaddedBatchAssembler> assembler,
                                std::vector<PaddedBatch> batches) {
  const auto count = static_cast<int64_t>(batches.size());
  return make_job(count, [assembler = std::move(assembler),
                          batches = std::move(batches)](int64_t j) -> BatchFigures {
    const PaddedBatch& batch = batches[static_cast<size_t>(j)];
    return {assembler->assemble(batch.rows, batch.n, batch.out), 0};
  });
}

}  // namespace arrowloader
