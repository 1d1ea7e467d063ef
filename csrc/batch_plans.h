// Batch plans: which rows each batch of an epoch holds, computed in one pass over a
// length per row (a document's kept token count), for (seed, epoch) alone.
//
// Two policies:
// - length-grouped (the semantics of Hugging Face's LengthGroupedSampler): the epoch's
//   permutation is cut into megabatches, each sorted by length, longest first (ties keep
//   the permutation's order); the longest row of the epoch is swapped into the first
//   batch; batches are consecutive runs of batch_size rows.
// - token budget: rows sorted by padded length (ties in a random order), cut greedily
//   into batches whose rows x padded width stays within max_tokens (and max_rows); the
//   batches are then shuffled.
//
// Both then split the epoch's global batches between ranks the same way (RankSplit), so
// that every rank plays the same number of batches.
#pragma once

#include <cstdint>
#include <vector>

namespace arrowloader {

// One rank's share of an epoch's global batches B: with drop_last the last B % W are
// dropped; without, the list is made a multiple of W long by repeating its first batches
// (as many times as needed). Rank r then takes batches r, r + W, r + 2W, ...
struct RankSplit {
  int64_t rank = 0;
  int64_t world_size = 1;
  bool drop_last = false;
};

// Batches each rank plays of an epoch of `total` global batches.
int64_t rank_batch_count(int64_t total, const RankSplit& split);

// One rank's batches of one epoch: the k-th batch it plays is rows[starts[k] ..
// ends[k]). `rows` is the whole epoch's order (every rank's batches lie in it, so no rank
// copies its share out: a batch repeated to even out the ranks is the same span again).
struct BatchPlan {
  std::vector<int64_t> rows;
  std::vector<int64_t> starts;
  std::vector<int64_t> ends;
};

struct LengthGroupOptions {
  int64_t batch_size = 1;
  int64_t megabatch_size = 1;  // rows sorted together
  bool shuffle = true;         // false: megabatches of 0..n-1 in order
  bool drop_last = false;      // drop a last batch shorter than batch_size
};

// Global batches of a length-grouped epoch of n rows.
int64_t length_grouped_batch_count(int64_t n, const LengthGroupOptions& options);

// lengths[0..n): one per row, >= 0 (throws std::invalid_argument naming the row).
BatchPlan plan_length_grouped(const int64_t* lengths, int64_t n,
                              const LengthGroupOptions& options, uint64_t seed,
                              uint64_t epoch, const RankSplit& split);

struct TokenBudgetOptions {
  int64_t max_tokens = 0;          // batch rows x padded width <= max_tokens
  int64_t max_rows = 0;            // 0: no limit
  int64_t pad_to_multiple_of = 1;  // the padded width is a multiple of this
  bool shuffle = true;             // false: batches by ascending length, ties by row
};

// Padded width of a batch whose longest row has `longest` tokens, as the budget counts
// it: rounded up to the multiple, and at least 1 (a batch of empty rows still costs a
// token a row, so no batch holds more than max_tokens rows).
int64_t budget_width(int64_t longest, const TokenBudgetOptions& options);

// Global batches of a token-budget epoch: the same for every (seed, epoch), as the
// sorted lengths are. Throws std::invalid_argument naming the first row whose own
// budget_width() exceeds max_tokens.
int64_t token_budget_batch_count(const int64_t* lengths, int64_t n,
                                 const TokenBudgetOptions& options);

BatchPlan plan_token_budget(const int64_t* lengths, int64_t n,
                            const TokenBudgetOptions& options, uint64_t seed, uint64_t epoch,
                            const RankSplit& split);

}  // namespace arrowloader
