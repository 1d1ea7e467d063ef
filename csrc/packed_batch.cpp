#include "packed_batch.h"

#include <algorithm>
#include <stdexcept>
#include <string>
#include <utility>

#include "open_blocks.h"
#include "page_advice.h"
#include "token_copy.h"

namespace arrowloader {

namespace {

// Length of document `row`'s piece: its tokens plus the EOS.
int64_t piece_length(const TokenColumn& tokens, int64_t row) {
  return tokens.row_length(row) + 1;
}

// Documents ahead of the one being read whose lengths are requested (PieceLengths::prefetch).
constexpr int64_t kGatherAhead = 16;

// Piece lengths from the column's token prefix sums: O(1) a row, where row_length()
// searches the chunk first (planning touches every document of the epoch).
class PieceLengths {
 public:
  explicit PieceLengths(const TokenColumn& tokens) : sums_(tokens.token_offsets().data()) {}
  int64_t operator()(int64_t row) const { return sums_[row + 1] - sums_[row] + 1; }
  // Asks the CPU to start loading row's entries (a hint; no effect on results).
  void prefetch(int64_t row) const {
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(sums_ + row);
    __builtin_prefetch(sums_ + row + 1);
#endif
  }

 private:
  const int64_t* sums_;
};

void check_rows(const TokenColumn& tokens, const int64_t* order, int64_t n) {
  for (int64_t i = 0; i < n; ++i) tokens.check_index(order[i]);
}

}  // namespace

PackPlan::PackPlan(const TokenColumn& tokens, const PackOptions& options, const int64_t* order,
                   int64_t n)
    : block_size_(options.seq_len + (options.shift_labels ? 1 : 0)),
      bestfit_(options.bestfit),
      max_pieces_per_block_(options.max_pieces_per_block),
      overlong_(options.overlong) {
  check_rows(tokens, order, n);
  if (bestfit_) {
    plan_bestfit(tokens, order, n);
  } else {
    plan_concat(tokens, order, n);
  }
}

void PackPlan::plan_concat(const TokenColumn& tokens, const int64_t* order, int64_t n) {
  const PieceLengths piece_length(tokens);
  order_.assign(order, order + n);
  // The pieces' lengths in epoch order, gathered once: each is a random read of the
  // prefix sums (80 MB for 10M documents), so the entries of the next documents are
  // requested while this one's is added. The block walk below then reads them in order.
  std::vector<int64_t> length(static_cast<size_t>(n));
  int64_t total = 0;
  for (int64_t i = 0; i < n; ++i) {
    if (i + kGatherAhead < n) piece_length.prefetch(order[i + kGatherAhead]);
    total += length[i] = piece_length(order[i]);
  }
  num_blocks_ = total / block_size_;
  dropped_tokens_ = total - num_blocks_ * block_size_;
  block_first_piece_.resize(static_cast<size_t>(num_blocks_));
  block_first_offset_.resize(static_cast<size_t>(num_blocks_));
  // One walk over the pieces records where each block starts.
  int64_t piece = 0;
  int64_t offset = 0;  // tokens of order_[piece]'s piece already in earlier blocks
  for (int64_t b = 0; b < num_blocks_; ++b) {
    block_first_piece_[b] = piece;
    block_first_offset_[b] = offset;
    int64_t room = block_size_;
    while (room > 0) {
      const int64_t left = length[piece] - offset;
      if (left <= room) {
        room -= left;
        ++piece;
        offset = 0;
      } else {
        offset += room;
        room = 0;
      }
    }
  }
}

void PackPlan::plan_bestfit(const TokenColumn& tokens, const int64_t* order, int64_t n) {
  // Assign every piece (chunk) to a block, remembering the block of each in order.
  const PieceLengths piece_length(tokens);
  std::vector<Segment> pieces;
  std::vector<int64_t> block_of;
  pieces.reserve(static_cast<size_t>(n));
  block_of.reserve(static_cast<size_t>(n));
  std::vector<int64_t> room;    // remaining positions of each block
  std::vector<int64_t> filled;  // pieces in each block
  OpenBlocks open(block_size_);  // blocks with room left, by room
  auto place = [&](const Segment& piece) {
    int64_t block = open.take_fitting(piece.length);
    if (block < 0) {
      block = static_cast<int64_t>(room.size());
      room.push_back(block_size_);
      filled.push_back(0);
    }
    room[block] -= piece.length;
    ++filled[block];
    const bool capped = max_pieces_per_block_ > 0 && filled[block] >= max_pieces_per_block_;
    if (room[block] > 0 && !capped) open.insert(room[block], block);
    pieces.push_back(piece);
    block_of.push_back(block);
  };
  for (int64_t i = 0; i < n; ++i) {
    const int64_t row = order[i];
    const int64_t length = piece_length(row);
    if (length > block_size_) {
      ++overlong_pieces_;
      if (overlong_ == Overlong::kDrop) {
        dropped_tokens_ += length;
        continue;
      }
      if (overlong_ == Overlong::kTruncate) {
        dropped_tokens_ += length - block_size_;
        place(Segment{row, 0, block_size_});
        continue;
      }
    }
    for (int64_t start = 0; start < length; start += block_size_) {
      place(Segment{row, start, std::min(block_size_, length - start)});
    }
  }
  num_blocks_ = static_cast<int64_t>(room.size());
  // Group pieces by block, keeping each block's pieces in placement order.
  block_begin_.assign(static_cast<size_t>(num_blocks_) + 1, 0);
  for (int64_t block : block_of) ++block_begin_[block + 1];
  for (int64_t b = 0; b < num_blocks_; ++b) block_begin_[b + 1] += block_begin_[b];
  pieces_.resize(pieces.size());
  std::vector<int64_t> next(block_begin_.begin(), block_begin_.end() - 1);
  for (size_t p = 0; p < pieces.size(); ++p) pieces_[next[block_of[p]]++] = pieces[p];
}

void PackPlan::segments(const TokenColumn& tokens, int64_t b, std::vector<Segment>* out) const {
  out->clear();
  if (bestfit_) {
    out->assign(pieces_.begin() + block_begin_[b], pieces_.begin() + block_begin_[b + 1]);
    return;
  }
  int64_t piece = block_first_piece_[b];
  int64_t offset = block_first_offset_[b];
  int64_t room = block_size_;
  while (room > 0) {
    const int64_t row = order_[piece];
    const int64_t take = std::min(piece_length(tokens, row) - offset, room);
    out->push_back(Segment{row, offset, take});
    room -= take;
    ++piece;
    offset = 0;
  }
}

PackedBatchAssembler::PackedBatchAssembler(std::shared_ptr<const TokenColumn> tokens,
                                           PackOptions options,
                                           std::shared_ptr<const LossMask> loss_mask)
    : tokens_(std::move(tokens)), options_(options), loss_mask_(std::move(loss_mask)) {
  if (tokens_ == nullptr) throw std::invalid_argument("tokens must not be None");
  if (options_.seq_len < 1) {
    throw std::invalid_argument("seq_len must be at least 1, got " +
                                std::to_string(options_.seq_len));
  }
  if (options_.max_pieces_per_block < 0) {
    throw std::invalid_argument("max_pieces_per_block must be >= 0 (0: no cap), got " +
                                std::to_string(options_.max_pieces_per_block));
  }
  if (options_.bestfit) options_.mask_across_documents = true;
}

std::shared_ptr<const PackPlan> PackedBatchAssembler::plan(const int64_t* order,
                                                           int64_t n) const {
  return std::make_shared<const PackPlan>(*tokens_, options_, order, n);
}

namespace {

struct RowSource {
  const TokenColumn* tokens;
  const PackOptions* options;
  const PackPlan* plan;
  int64_t block;
  const LossMask* loss_mask;  // or null
};

// The segments of every row of a batch, row r's at segments[row_begin[r] ..
// row_begin[r + 1]). Finding a block's segments reads the lengths of documents spread
// over the corpus; doing it for all rows before copying any keeps those reads together,
// out of the copy loops, and measured faster on shuffled blocks than doing it row by row
// between the copies.
struct BatchSegments {
  // Row r's segments, in place.
  struct Row {
    const Segment* first;
    size_t count;
    const Segment* begin() const { return first; }
    const Segment* end() const { return first + count; }
    size_t size() const { return count; }
    const Segment& operator[](size_t k) const { return first[k]; }
  };
  Row row(int64_t r) const {
    return Row{segments.data() + row_begin[r], row_begin[r + 1] - row_begin[r]};
  }

  std::vector<Segment> segments;
  std::vector<size_t> row_begin;
};

template <typename SourceOf>
void plan_rows(const SourceOf& source_of, int64_t n, BatchSegments* batch) {
  std::vector<Segment> row_segments;
  batch->segments.clear();
  batch->row_begin.assign(1, 0);
  for (int64_t r = 0; r < n; ++r) {
    const RowSource source = source_of(r);
    const int64_t b = source.block;
    if (b < 0 || b >= source.plan->num_blocks()) {
      throw std::out_of_range("block " + std::to_string(b) + " is out of range for an epoch of " +
                              std::to_string(source.plan->num_blocks()) + " blocks");
    }
    source.plan->segments(*source.tokens, b, &row_segments);
    batch->segments.insert(batch->segments.end(), row_segments.begin(), row_segments.end());
    batch->row_begin.push_back(batch->segments.size());
  }
}

// Asks the CPU to start loading the first tokens of each segment of a row. A shuffled
// block reads a few documents from anywhere in the corpus: the first lines of each are
// cache (and TLB) misses that the hardware prefetcher cannot foresee, so they are asked
// for one row ahead, while the row before is copied. A hint only: no effect on results.
void prefetch_row_starts(const RowSource& source, const BatchSegments::Row& segments) {
#if defined(__GNUC__) || defined(__clang__)
  constexpr int64_t kLines = 2;  // 64-byte lines per segment start
  for (const Segment& seg : segments) {
    const TokenRow row = source.tokens->row(seg.row);
    if (row.data == nullptr || seg.start >= row.length || row.type == TokenType::kBool) continue;
    const char* first = static_cast<const char*>(row.data) +
                        seg.start * static_cast<int64_t>(token_size(row.type));
    for (int64_t line = 0; line < kLines; ++line) __builtin_prefetch(first + 64 * line);
  }
#else
  (void)source;
  (void)segments;
#endif
}

// Writes n rows; source_of(r) names the corpus, options, plan and block of row r (one
// dataset, or several mixed). All rows share seq_len.
template <typename Dst, typename SourceOf>
void write_batch(const SourceOf& source_of, int64_t n, int64_t S, const PackedOutputs& out,
                 PackedBatchInfo* info) {
  BatchSegments batch;
  plan_rows(source_of, n, &batch);
  std::vector<int64_t> starts;
  int64_t cu_length = 0;
  int64_t max_seqlen = 0;
  for (int64_t r = 0; r < n; ++r) {
    const RowSource source = source_of(r);
    const TokenColumn& tokens = *source.tokens;
    const PackOptions& opt = *source.options;
    const auto label_pad = static_cast<Dst>(opt.label_pad_id);
    const auto pad = static_cast<Dst>(opt.pad_token_id);
    const auto eos = static_cast<Dst>(opt.eos_token_id);
    const BatchSegments::Row segments = batch.row(r);
    if (r + 1 < n) prefetch_row_starts(source_of(r + 1), batch.row(r + 1));
    Dst* ids = static_cast<Dst*>(out.input_ids) + r * S;
    Dst* labels = static_cast<Dst*>(out.labels) + r * S;
    // The block's tokens go straight into input_ids and labels; when shifted, the one at
    // position S (the target of the last input) is kept aside for labels[S - 1].
    Dst beyond = pad;
    const int64_t shift = opt.shift_labels ? 1 : 0;
    int64_t at = 0;
    starts.clear();
    for (const Segment& seg : segments) {
      starts.push_back(at);
      const TokenRow row = tokens.row(seg.row);
      const int64_t from_tokens =
          std::max<int64_t>(0, std::min(seg.start + seg.length, row.length) - seg.start);
      const int64_t into_ids = std::max<int64_t>(0, std::min(from_tokens, S - at));
      // Labels start as the block's tokens, written with input_ids in one pass (cheaper
      // than copying input_ids afterwards, which reads them back): token j goes to
      // labels[j - 1] when shifted (the block's first token is no position's target),
      // labels[j] otherwise.
      const int64_t lead = opt.shift_labels && at == 0 ? std::min<int64_t>(1, into_ids) : 0;
      copy_row(row, seg.start, lead, ids, tokens, seg.row);
      if (into_ids > lead) {
        copy_row(row, seg.start + lead, into_ids - lead, ids + at + lead, tokens, seg.row,
                 labels + at + lead - shift);
      }
      if (from_tokens > into_ids) copy_row(row, seg.start + into_ids, 1, &beyond, tokens, seg.row);
      if (from_tokens < seg.length) {  // the segment ends with the piece's EOS
        const int64_t eos_at = at + seg.length - 1;
        if (eos_at < S) {
          ids[eos_at] = eos;
          if (eos_at - shift >= 0) labels[eos_at - shift] = eos;
        } else {
          beyond = eos;
        }
      }
      at += seg.length;
    }
    const int64_t valid = at;  // real tokens of the block; the rest is padding
    if (valid < S) fill(ids + valid, S - valid, pad);
    if (opt.shift_labels) {
      // labels[0 .. valid - 2] were written with input_ids; padding is filled below.
      labels[S - 1] = beyond;
      // -100 where the target is padding, or (when masking) another document's first token.
      const int64_t last_target = valid - 1;  // labels[i] is real for i < valid - 1
      if (last_target < S) fill(labels + last_target, S - last_target, label_pad);
      if (opt.mask_across_documents) {
        for (size_t k = 1; k < starts.size(); ++k) {
          if (starts[k] - 1 < S) labels[starts[k] - 1] = label_pad;
        }
      }
    } else {
      // The model shifts: label i is token i, -100 on padding and (when masking) on every
      // document's first token, the target no earlier position may be trained towards;
      // in bestfit mode on every segment's first token, as DataCollatorWithFlattening
      // writes its examples (a chunk of a split document placed after other segments
      // follows another document). A concat row opening with the rest of a document
      // keeps that label: the model's shift drops a row's first label anyway.
      // labels[0 .. valid - 1] were written with input_ids.
      if (valid < S) fill(labels + valid, S - valid, label_pad);
      if (opt.mask_across_documents) {
        for (size_t k = 0; k < starts.size(); ++k) {
          const bool boundary = segments[k].start == 0 || opt.bestfit;
          if (boundary && starts[k] < S) labels[starts[k]] = label_pad;
        }
      }
    }
    if (source.loss_mask != nullptr) {
      // Label i targets block position i + 1 (shifted) or i; a segment's tokens are the
      // targets of the labels at their positions (less one when shifted).
      const int64_t back = opt.shift_labels ? 1 : 0;
      for (size_t k = 0; k < segments.size(); ++k) {
        const Segment& seg = segments[k];
        int64_t first = 0;  // the segment's first token with a label in this row
        if (starts[k] - back < 0) first = back - starts[k];
        const int64_t end = std::min(seg.length, S + back - starts[k]);
        if (end > first) {
          source.loss_mask->apply(seg.row, seg.start + first, end - first,
                                  labels + starts[k] - back + first, label_pad);
        }
      }
    }
    if (out.position_ids != nullptr) {
      Dst* pos = static_cast<Dst*>(out.position_ids) + r * S;
      for (size_t k = 0; k < segments.size(); ++k) {
        const int64_t end = std::min(starts[k] + segments[k].length, S);
        for (int64_t i = starts[k]; i < end; ++i) pos[i] = static_cast<Dst>(i - starts[k]);
      }
      for (int64_t i = valid; i < S; ++i) pos[i] = static_cast<Dst>(i - valid);
    }
    // Segments over the input positions: pieces starting before S, then the padding.
    for (size_t k = 0; k < segments.size(); ++k) {
      if (starts[k] >= S) continue;
      if (out.cu_seqlens != nullptr) {
        out.cu_seqlens[cu_length] = static_cast<int32_t>(r * S + starts[k]);
      }
      ++cu_length;
      max_seqlen = std::max(max_seqlen, std::min(segments[k].length, S - starts[k]));
    }
    if (valid < S) {
      if (out.cu_seqlens != nullptr) out.cu_seqlens[cu_length] = static_cast<int32_t>(r * S + valid);
      ++cu_length;
      max_seqlen = std::max(max_seqlen, S - valid);
    }
  }
  if (out.cu_seqlens != nullptr) out.cu_seqlens[cu_length] = static_cast<int32_t>(n * S);
  info->cu_seqlens_length = cu_length + 1;
  info->max_seqlen = max_seqlen;
}

}  // namespace

PackedBatchInfo PackedBatchAssembler::assemble(const PackPlan& plan, const int64_t* blocks,
                                               int64_t n, const PackedOutputs& out) const {
  PackedBatchInfo info;
  auto source_of = [&](int64_t r) {
    return RowSource{tokens_.get(), &options_, &plan, blocks[r], loss_mask_.get()};
  };
  if (out.type == OutType::kInt64) {
    write_batch<int64_t>(source_of, n, options_.seq_len, out, &info);
  } else {
    write_batch<int32_t>(source_of, n, options_.seq_len, out, &info);
  }
  return info;
}

int64_t PackedBatchAssembler::prefetch(const PackPlan& plan, const int64_t* blocks,
                                       int64_t n) const {
  std::vector<Segment> segments;
  PageRanges ranges;
  for (int64_t r = 0; r < n; ++r) {
    if (blocks[r] < 0 || blocks[r] >= plan.num_blocks()) {
      throw std::out_of_range("block " + std::to_string(blocks[r]) + " of a plan of " +
                              std::to_string(plan.num_blocks()) + " blocks");
    }
    plan.segments(*tokens_, blocks[r], &segments);
    for (const Segment& segment : segments) {
      const TokenRow row = tokens_->row(segment.row);
      // A piece is the row's tokens then EOS; EOS is not in the file.
      const int64_t end = std::min(segment.start + segment.length, row.length);
      if (row.data == nullptr || end <= segment.start) continue;
      const size_t item = token_size(row.type);
      ranges.add(static_cast<const char*>(row.data) + segment.start * item,
                 static_cast<size_t>(end - segment.start) * item);
    }
  }
  return ranges.advise(PageAdvice::kWillNeed);
}

PackedBatchInfo assemble_mixed(const std::vector<const PackedBatchAssembler*>& sources,
                               const std::vector<const PackPlan*>& plans,
                               const int64_t* plan_of_row, const int64_t* blocks, int64_t n,
                               const PackedOutputs& out) {
  if (sources.size() != plans.size() || sources.empty()) {
    throw std::invalid_argument("assemble_mixed needs one assembler per plan");
  }
  const int64_t S = sources[0]->options().seq_len;
  const bool shift = sources[0]->options().shift_labels;
  for (const PackedBatchAssembler* source : sources) {
    if (source->options().seq_len != S) {
      throw std::invalid_argument("mixed datasets must share seq_len");
    }
    if (source->options().shift_labels != shift) {
      throw std::invalid_argument("mixed datasets must share their labels' convention");
    }
  }
  for (int64_t r = 0; r < n; ++r) {
    if (plan_of_row[r] < 0 || plan_of_row[r] >= static_cast<int64_t>(plans.size())) {
      throw std::out_of_range("row " + std::to_string(r) + " names plan " +
                              std::to_string(plan_of_row[r]) + " of " +
                              std::to_string(plans.size()));
    }
  }
  PackedBatchInfo info;
  auto source_of = [&](int64_t r) {
    const PackedBatchAssembler* source = sources[plan_of_row[r]];
    return RowSource{&source->tokens(), &source->options(), plans[plan_of_row[r]], blocks[r],
                     source->loss_mask()};
  };
  if (out.type == OutType::kInt64) {
    write_batch<int64_t>(source_of, n, S, out, &info);
  } else {
    write_batch<int32_t>(source_of, n, S, out, &info);
  }
  return info;
}

void check_batches_divide(int64_t n, int64_t batches) {
  if (batches < 1 || n % batches != 0) {
    throw std::invalid_argument("batches must be a positive divisor of the " +
                                std::to_string(n) + " blocks, got " + std::to_string(batches));
  }
}

PackedOutputs batch_outputs(const PackedOutputs& out, int64_t seq_len, int64_t rows, int64_t j) {
  const int64_t row_bytes = j * rows * seq_len * element_size(out.type);
  auto shift = [row_bytes](void* p) {
    return p == nullptr ? nullptr : static_cast<char*>(p) + row_bytes;
  };
  return PackedOutputs{out.type, shift(out.input_ids), shift(out.labels),
                       shift(out.position_ids),
                       out.cu_seqlens == nullptr ? nullptr
                                                 : out.cu_seqlens + j * (rows * seq_len + 1)};
}

std::shared_ptr<Job> packed_job(std::shared_ptr<const PackedBatchAssembler> assembler,
                                std::shared_ptr<const PackPlan> plan, const int64_t* blocks,
                                int64_t n, int64_t batches, const PackedOutputs& out) {
  check_batches_divide(n, batches);
  const int64_t rows = n / batches;
  return make_job(batches, [assembler = std::move(assembler), plan = std::move(plan), blocks,
                            rows, out](int64_t j) -> BatchFigures {
    const PackedOutputs mine = batch_outputs(out, assembler->options().seq_len, rows, j);
    const PackedBatchInfo info = assembler->assemble(*plan, blocks + j * rows, rows, mine);
    return {info.cu_seqlens_length, info.max_seqlen};
  });
}

std::shared_ptr<Job> mixed_job(std::vector<std::shared_ptr<const PackedBatchAssembler>> sources,
                               std::vector<std::shared_ptr<const PackPlan>> plans,
                               const int64_t* plan_of_row, const int64_t* blocks, int64_t n,
                               const PackedOutputs& out) {
  // assemble_mixed() takes plain pointers; they are gathered once here, not per run.
  std::vector<const PackedBatchAssembler*> raw_sources;
  std::vector<const PackPlan*> raw_plans;
  raw_sources.reserve(sources.size());
  raw_plans.reserve(plans.size());
  for (const auto& source : sources) raw_sources.push_back(source.get());
  for (const auto& plan : plans) raw_plans.push_back(plan.get());
  return make_job(1, [sources = std::move(sources), plans = std::move(plans),
                      raw_sources = std::move(raw_sources), raw_plans = std::move(raw_plans),
                      plan_of_row, blocks, n, out](int64_t) -> BatchFigures {
    const PackedBatchInfo info =
        assemble_mixed(raw_sources, raw_plans, plan_of_row, blocks, n, out);
    return {info.cu_seqlens_length, info.max_seqlen};
  });
}

}  // namespace arrowloader
