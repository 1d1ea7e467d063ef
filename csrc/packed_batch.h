// Packed batches: documents packed into fixed-length rows, and batches of those rows.
//
// Every document contributes a *piece*: its tokens followed by the EOS id. A packed
// epoch is a sequence of *blocks* of token positions, each made of segments (consecutive
// tokens of one piece) and, in "bestfit" mode, trailing padding. Labels come in one of
// two conventions:
// - shifted (shift_labels, the default): blocks of seq_len + 1 positions; a block becomes
//   one row with input_ids = block[:-1], labels = block[1:], -100 on labels whose target
//   is padding and, in "bestfit" mode or when asked, whose target starts another document;
// - unshifted (Hugging Face's, whose models shift inside the loss): blocks of seq_len
//   positions; input_ids = labels = block, -100 on labels of padding and, in "bestfit"
//   mode or when asked, of every document's first token (in "bestfit" mode, of every
//   segment's, split chunks included), so that no position is trained to predict across
//   a document boundary, as DataCollatorWithFlattening marks them.
// position_ids restart at 0 at every segment start (and at the padding); cu_seqlens marks
// the segment starts over the flattened batch.
//
// "concat": pieces in epoch order form one stream cut into consecutive blocks
//   (Megatron/nanoGPT); a document may cross blocks; the tail shorter than a block is
//   dropped.
// "bestfit": each piece in epoch order goes to the open block with the least remaining
//   room that still holds it (ties: the block opened first), or opens a new block.
//   Blocks are numbered in the order they were opened. No piece that fits a block is
//   split. A block holding max_pieces_per_block pieces (when > 0) is closed. A piece
//   longer than a block (an *overlong* one) is, by `overlong`:
//   - kSplit: cut into block-sized chunks, each placed as a piece (pretraining);
//   - kTruncate: cut to its first block_size tokens (so it loses its EOS), one block;
//   - kDrop: left out of the epoch.
//   The plan counts overlong pieces and the tokens it leaves out.
//
// With a loss mask (loss_mask.h), labels whose target token it leaves out are -100 too;
// the EOS of a piece counts as its row's last token does.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "columns.h"
#include "job.h"
#include "loss_mask.h"
#include "padded_batch.h"

namespace arrowloader {

// What bestfit packing does with a piece longer than a block (see above).
enum class Overlong { kSplit, kTruncate, kDrop };

struct PackOptions {
  int64_t seq_len = 2048;
  int64_t eos_token_id = 0;
  bool bestfit = false;
  bool mask_across_documents = false;  // always on in bestfit mode
  int64_t pad_token_id = 0;
  int64_t label_pad_id = -100;
  bool shift_labels = true;  // false: Hugging Face's convention (see above)
  int64_t max_pieces_per_block = 0;  // bestfit: 0, no cap
  Overlong overlong = Overlong::kSplit;  // bestfit
};

// `length` tokens of the piece of document `row` (its tokens, then EOS), from `start`.
struct Segment {
  int64_t row;
  int64_t start;
  int64_t length;
};

// The blocks of one epoch, for a given document order.
class PackPlan {
 public:
  PackPlan(const TokenColumn& tokens, const PackOptions& options, const int64_t* order,
           int64_t n);

  int64_t num_blocks() const { return num_blocks_; }
  // Replaces `out` with block b's segments, in position order.
  void segments(const TokenColumn& tokens, int64_t b, std::vector<Segment>* out) const;
  // Tokens (EOS included) the plan leaves out of every block: the concat tail, or what
  // bestfit's overlong policy truncates or drops.
  int64_t dropped_tokens() const { return dropped_tokens_; }
  // Pieces longer than a block that bestfit split, truncated or dropped.
  int64_t overlong_pieces() const { return overlong_pieces_; }

 private:
  void plan_concat(const TokenColumn& tokens, const int64_t* order, int64_t n);
  void plan_bestfit(const TokenColumn& tokens, const int64_t* order, int64_t n);

  int64_t block_size_;  // seq_len + 1 (shifted labels) or seq_len
  bool bestfit_;
  int64_t max_pieces_per_block_;
  Overlong overlong_;
  int64_t num_blocks_ = 0;
  int64_t dropped_tokens_ = 0;
  int64_t overlong_pieces_ = 0;
  // concat: the epoch's document order and where each block starts in it.
  std::vector<int64_t> order_;
  std::vector<int64_t> block_first_piece_;
  std::vector<int64_t> block_first_offset_;
  // bestfit: block b holds pieces_[block_begin_[b] .. block_begin_[b + 1]).
  std::vector<int64_t> block_begin_;
  std::vector<Segment> pieces_;
};

struct PackedOutputs {
  OutType type = OutType::kInt64;
  void* input_ids = nullptr;     // [n, seq_len]
  void* labels = nullptr;        // [n, seq_len]
  void* position_ids = nullptr;  // [n, seq_len] or null
  int32_t* cu_seqlens = nullptr; // [n * seq_len + 1] or null; the used prefix is returned
};

struct PackedBatchInfo {
  int64_t cu_seqlens_length = 0;  // entries of cu_seqlens written
  int64_t max_seqlen = 0;         // longest segment over the batch
};

class PackedBatchAssembler {
 public:
  PackedBatchAssembler(std::shared_ptr<const TokenColumn> tokens, PackOptions options,
                       std::shared_ptr<const LossMask> loss_mask = nullptr);

  const PackOptions& options() const { return options_; }
  const TokenColumn& tokens() const { return *tokens_; }
  const LossMask* loss_mask() const { return loss_mask_.get(); }
  std::shared_ptr<const PackPlan> plan(const int64_t* order, int64_t n) const;
  // Writes blocks[0..n) of `plan` as rows of one batch.
  PackedBatchInfo assemble(const PackPlan& plan, const int64_t* blocks, int64_t n,
                           const PackedOutputs& out) const;
  // Asks the kernel to start reading the token pages of blocks[0..n) of `plan`
  // (MADV_WILLNEED, see page_advice.h); returns the bytes of pages advised. Throws
  // std::out_of_range for a block outside the plan.
  int64_t prefetch(const PackPlan& plan, const int64_t* blocks, int64_t n) const;

 private:
  std::shared_ptr<const TokenColumn> tokens_;
  PackOptions options_;
  std::shared_ptr<const LossMask> loss_mask_;  // null: every token in the loss
};

// Writes a batch whose row r is block blocks[r] of plans[plan_of_row[r]], packed from
// sources[plan_of_row[r]]'s corpus (datasets mixed by weight). All share seq_len.
PackedBatchInfo assemble_mixed(const std::vector<const PackedBatchAssembler*>& sources,
                               const std::vector<const PackPlan*>& plans,
                               const int64_t* plan_of_row, const int64_t* blocks, int64_t n,
                               const PackedOutputs& out);

// Throws std::invalid_argument unless `batches` is a positive divisor of the n blocks of
// a job of that many consecutive batches.
void check_batches_divide(int64_t n, int64_t batches);

// Batch j of a job of consecutive batches of `rows` rows each, written back to back into
// `out` ([batches * rows, seq_len] each): rows [j * rows, (j + 1) * rows), and the run of
// rows * seq_len + 1 entries of cu_seqlens that starts at j * (rows * seq_len + 1).
PackedOutputs batch_outputs(const PackedOutputs& out, int64_t seq_len, int64_t rows, int64_t j);

// A job (job.h) that writes blocks[0..n) of `plan` as `batches` consecutive batches of
// n / batches rows (batch_outputs()); batch j's figures are (cu_seqlens entries,
// max_seqlen). The blocks and outputs must stay alive until the job is done.
std::shared_ptr<Job> packed_job(std::shared_ptr<const PackedBatchAssembler> assembler,
                                std::shared_ptr<const PackPlan> plan, const int64_t* blocks,
                                int64_t n, int64_t batches, const PackedOutputs& out);

// A job of one batch written by assemble_mixed(); figures as packed_job()'s.
std::shared_ptr<Job> mixed_job(std::vector<std::shared_ptr<const PackedBatchAssembler>> sources,
                               std::vector<std::shared_ptr<const PackPlan>> plans,
                               const int64_t* plan_of_row, const int64_t* blocks, int64_t n,
                               const PackedOutputs& out);

}  // namespace arrowloader
