#include "batch_plans.h"

#include <algorithm>
#include <numeric>
#include <stdexcept>
#include <string>
#include <utility>

#include "permutation.h"

namespace arrowloader {

namespace {

// Random streams of one epoch's plan (permutation.h): the row order, then the batch order.
uint64_t rows_stream(uint64_t epoch) { return 2 * epoch; }
uint64_t batches_stream(uint64_t epoch) { return 2 * epoch + 1; }

void check_split(const RankSplit& split) {
  if (split.world_size < 1 || split.rank < 0 || split.rank >= split.world_size) {
    throw std::invalid_argument("rank " + std::to_string(split.rank) +
                                " is not in range(world_size=" +
                                std::to_string(split.world_size) + ")");
  }
}

void check_lengths(const int64_t* lengths, int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    if (lengths[i] < 0) {
      throw std::invalid_argument("lengths: row " + std::to_string(i) + " has length " +
                                  std::to_string(lengths[i]) + "; lengths must be >= 0");
    }
  }
}

// The plan of one rank over the epoch's `order`: its share (RankSplit) of the global
// batches, where the batch played k-th globally is order[begins[g] .. begins[g + 1]) for
// g = batch_order[k] (batch_order empty: g = k).
BatchPlan rank_plan(std::vector<int64_t>&& order, const std::vector<int64_t>& begins,
                    const std::vector<int64_t>& batch_order, const RankSplit& split) {
  const auto total = static_cast<int64_t>(begins.size()) - 1;
  const int64_t count = rank_batch_count(total, split);
  BatchPlan plan;
  plan.starts.resize(static_cast<size_t>(count));
  plan.ends.resize(static_cast<size_t>(count));
  for (int64_t k = 0; k < count; ++k) {
    const int64_t played = (split.rank + k * split.world_size) % total;
    const auto g = static_cast<size_t>(
        batch_order.empty() ? played : batch_order[static_cast<size_t>(played)]);
    plan.starts[static_cast<size_t>(k)] = begins[g];
    plan.ends[static_cast<size_t>(k)] = begins[g + 1];
  }
  plan.rows = std::move(order);
  return plan;
}

// A row and its length in one integer (lengths below 2^24, rows below 2^40), so that the
// epoch's permutation moves the lengths along with the rows: the shuffle's swaps do not
// depend on the values, so the rows come out exactly as seeded_permutation() orders them,
// and no random read of a length follows.
constexpr int kRowBits = 40;
constexpr uint64_t kRowMask = (uint64_t{1} << kRowBits) - 1;
constexpr int64_t kPackedLengthLimit = int64_t{1} << 24;

// Sorts order[0..m) by length, longest first, ties in their present order (stable).
// With `packed`, each entry is a length above a row (kRowBits) and the sorted entries are
// left as rows alone; else the lengths are read from `lengths` (indexed by row). The
// vectors are scratch space kept between megabatches.
void sort_megabatch(int64_t* order, int64_t m, bool packed, const int64_t* lengths,
                    std::vector<int64_t>& length, std::vector<int64_t>& count,
                    std::vector<int64_t>& sorted) {
  length.resize(static_cast<size_t>(m));
  if (packed) {
    for (int64_t k = 0; k < m; ++k) {
      const auto entry = static_cast<uint64_t>(order[k]);
      length[static_cast<size_t>(k)] = static_cast<int64_t>(entry >> kRowBits);
      order[k] = static_cast<int64_t>(entry & kRowMask);
    }
  } else {
    // Random reads, each requested kAhead rows before it is needed.
    constexpr int64_t kAhead = 16;
    for (int64_t k = 0; k < m; ++k) {
#if defined(__GNUC__) || defined(__clang__)
      if (k + kAhead < m) __builtin_prefetch(lengths + order[k + kAhead]);
#endif
      length[static_cast<size_t>(k)] = lengths[order[k]];
    }
  }
  if (m <= 1) return;
  const auto [low, high] = std::minmax_element(length.begin(), length.end());
  const int64_t longest = *high;
  const int64_t span = longest - *low;
  sorted.resize(static_cast<size_t>(m));
  if (span <= 4 * m + 1024) {
    // A counting sort over the megabatch's range of lengths: document lengths cluster,
    // so the range is rarely much wider than the megabatch.
    count.assign(static_cast<size_t>(span) + 2, 0);
    auto bucket = [&](int64_t k) {
      return static_cast<size_t>(longest - length[static_cast<size_t>(k)]);
    };
    for (int64_t k = 0; k < m; ++k) ++count[bucket(k) + 1];
    std::partial_sum(count.begin(), count.end(), count.begin());
    for (int64_t k = 0; k < m; ++k) sorted[static_cast<size_t>(count[bucket(k)]++)] = order[k];
  } else {
    std::vector<int64_t> position(static_cast<size_t>(m));
    std::iota(position.begin(), position.end(), int64_t{0});
    std::stable_sort(position.begin(), position.end(), [&length](int64_t a, int64_t b) {
      return length[static_cast<size_t>(a)] > length[static_cast<size_t>(b)];
    });
    for (int64_t k = 0; k < m; ++k) {
      sorted[static_cast<size_t>(k)] = order[position[static_cast<size_t>(k)]];
    }
  }
  std::copy(sorted.begin(), sorted.end(), order);
}

// Rows 0..n-1 sorted by key ascending, ties by row, with the runs of equal keys: a
// counting sort when the keys span a range no wider than the rows (the common case: keys
// are padded lengths, bounded by the budget), else a comparison sort.
struct KeyRuns {
  std::vector<int64_t> order;
  std::vector<int64_t> run_key;    // key of each run, ascending
  std::vector<int64_t> run_begin;  // where each run starts in order, runs + 1 entries
};

template <typename Key>
KeyRuns sort_by_key(int64_t n, Key key) {
  KeyRuns sorted;
  sorted.run_begin.push_back(0);
  if (n == 0) return sorted;
  int64_t largest = 0;
  for (int64_t r = 0; r < n; ++r) largest = std::max(largest, key(r));
  sorted.order.resize(static_cast<size_t>(n));
  if (largest < std::max<int64_t>(2 * n, 1 << 16)) {
    std::vector<int64_t> start(static_cast<size_t>(largest) + 2, 0);
    for (int64_t r = 0; r < n; ++r) ++start[static_cast<size_t>(key(r)) + 1];
    for (int64_t k = 0; k <= largest; ++k) {
      const int64_t rows = start[static_cast<size_t>(k) + 1];
      if (rows > 0) {
        sorted.run_key.push_back(k);
        sorted.run_begin.push_back(sorted.run_begin.back() + rows);
      }
    }
    std::partial_sum(start.begin(), start.end(), start.begin());
    for (int64_t r = 0; r < n; ++r) {
      sorted.order[static_cast<size_t>(start[static_cast<size_t>(key(r))]++)] = r;
    }
    return sorted;
  }
  std::iota(sorted.order.begin(), sorted.order.end(), int64_t{0});
  std::stable_sort(sorted.order.begin(), sorted.order.end(),
                   [&key](int64_t a, int64_t b) { return key(a) < key(b); });
  for (int64_t i = 0; i < n; ++i) {
    const int64_t k = key(sorted.order[static_cast<size_t>(i)]);
    if (i == 0 || k != sorted.run_key.back()) {
      if (i > 0) sorted.run_begin.push_back(i);
      sorted.run_key.push_back(k);
    }
  }
  sorted.run_begin.push_back(n);
  return sorted;
}

struct SortedByBudget {
  std::vector<int64_t> order;   // rows, ascending budget width
  std::vector<int64_t> begins;  // global batches over order, batches + 1 entries
};

// The token-budget epoch before its batches are shuffled: rows by ascending padded
// length, ties by row, each run of equal padded lengths then shuffled (in ascending
// order of length, with one generator) when `ties` is given; cut greedily into batches.
SortedByBudget sort_and_cut(const int64_t* lengths, int64_t n, const TokenBudgetOptions& options,
                            SeededRandom* ties) {
  if (options.max_tokens < 1) throw std::invalid_argument("max_tokens must be at least 1");
  if (options.max_rows < 0) throw std::invalid_argument("max_rows must be >= 0 (0: no limit)");
  if (options.pad_to_multiple_of < 1) {
    throw std::invalid_argument("pad_to_multiple_of must be at least 1");
  }
  // One pass for the extremes; a row is refused (by name) only if the longest is.
  int64_t shortest = 0;
  int64_t longest = 0;
  for (int64_t r = 0; r < n; ++r) {
    shortest = std::min(shortest, lengths[r]);
    longest = std::max(longest, lengths[r]);
  }
  if (shortest < 0) check_lengths(lengths, n);
  if (budget_width(longest, options) > options.max_tokens) {
    for (int64_t r = 0; r < n; ++r) {
      if (budget_width(lengths[r], options) > options.max_tokens) {
        throw std::invalid_argument(
            "row " + std::to_string(r) + " alone needs " +
            std::to_string(budget_width(lengths[r], options)) + " padded tokens (" +
            std::to_string(lengths[r]) + " tokens), more than max_tokens=" +
            std::to_string(options.max_tokens));
      }
    }
  }
  // Rows of one key pad to the same width, so their order within a batch is free.
  const int64_t multiple = options.pad_to_multiple_of;
  KeyRuns runs = multiple == 1
                     ? sort_by_key(n, [lengths](int64_t r) { return lengths[r]; })
                     : sort_by_key(n, [lengths, multiple](int64_t r) {
                         return (lengths[r] + multiple - 1) / multiple;
                       });
  const size_t num_runs = runs.run_key.size();
  if (ties != nullptr) {
    for (size_t run = 0; run < num_runs; ++run) {
      shuffle_in_place(*ties, runs.order.data() + runs.run_begin[run],
                       runs.run_begin[run + 1] - runs.run_begin[run]);
    }
  }
  SortedByBudget sorted;
  sorted.begins.push_back(0);
  int64_t count = 0;
  for (size_t run = 0; run < num_runs; ++run) {
    // Ascending, so a row of this run sets the batch's width if it joins.
    const int64_t width = std::max<int64_t>(1, runs.run_key[run] * multiple);
    const int64_t fits = options.max_tokens / width;
    for (int64_t i = runs.run_begin[run]; i < runs.run_begin[run + 1]; ++i) {
      const bool full = options.max_rows > 0 && count == options.max_rows;
      if (count > 0 && (full || count + 1 > fits)) {
        sorted.begins.push_back(i);
        count = 0;
      }
      ++count;
    }
  }
  if (n > 0) sorted.begins.push_back(n);
  sorted.order = std::move(runs.order);
  return sorted;
}

}  // namespace

int64_t rank_batch_count(int64_t total, const RankSplit& split) {
  check_split(split);
  if (total <= 0) return 0;
  return split.drop_last ? total / split.world_size
                         : (total + split.world_size - 1) / split.world_size;
}

int64_t length_grouped_batch_count(int64_t n, const LengthGroupOptions& options) {
  if (options.batch_size < 1) throw std::invalid_argument("batch_size must be at least 1");
  if (n < 0) throw std::invalid_argument("n must be >= 0");
  return options.drop_last ? n / options.batch_size
                           : (n + options.batch_size - 1) / options.batch_size;
}

BatchPlan plan_length_grouped(const int64_t* lengths, int64_t n,
                              const LengthGroupOptions& options, uint64_t seed,
                              uint64_t epoch, const RankSplit& split) {
  const int64_t total = length_grouped_batch_count(n, options);
  if (options.megabatch_size < 1) {
    throw std::invalid_argument("megabatch_size must be at least 1");
  }
  check_split(split);
  check_lengths(lengths, n);
  const int64_t longest = n ? *std::max_element(lengths, lengths + n) : 0;
  const bool packed = longest < kPackedLengthLimit && static_cast<uint64_t>(n) <= kRowMask;
  std::vector<int64_t> order(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    order[static_cast<size_t>(r)] =
        packed ? static_cast<int64_t>((static_cast<uint64_t>(lengths[r]) << kRowBits) |
                                      static_cast<uint64_t>(r))
               : r;
  }
  if (options.shuffle) {
    // seeded_permutation(seed, rows_stream(epoch), n), applied to the entries.
    SeededRandom rng(seed, rows_stream(epoch));
    shuffle_in_place(rng, order.data(), n);
  }
  const int64_t mega = options.megabatch_size;
  std::vector<int64_t> length;
  std::vector<int64_t> count;
  std::vector<int64_t> sorted;
  int64_t first_of_longest = 0;  // the first megabatch whose longest row is the longest
  for (int64_t begin = 0; begin < n; begin += mega) {
    sort_megabatch(order.data() + begin, std::min(mega, n - begin), packed, lengths, length,
                   count, sorted);
    if (lengths[order[static_cast<size_t>(begin)]] >
        lengths[order[static_cast<size_t>(first_of_longest)]]) {
      first_of_longest = begin;
    }
  }
  // The epoch's longest row first, so that a batch too large for memory fails at once.
  if (n > 0) std::swap(order[0], order[static_cast<size_t>(first_of_longest)]);
  std::vector<int64_t> begins(static_cast<size_t>(total) + 1);
  for (int64_t g = 0; g <= total; ++g) {
    begins[static_cast<size_t>(g)] = std::min(n, g * options.batch_size);
  }
  return rank_plan(std::move(order), begins, {}, split);
}

int64_t budget_width(int64_t longest, const TokenBudgetOptions& options) {
  const int64_t m = std::max<int64_t>(1, options.pad_to_multiple_of);
  return std::max<int64_t>(1, (longest / m + (longest % m != 0)) * m);
}

int64_t token_budget_batch_count(const int64_t* lengths, int64_t n,
                                 const TokenBudgetOptions& options) {
  return static_cast<int64_t>(sort_and_cut(lengths, n, options, nullptr).begins.size()) - 1;
}

BatchPlan plan_token_budget(const int64_t* lengths, int64_t n,
                            const TokenBudgetOptions& options, uint64_t seed, uint64_t epoch,
                            const RankSplit& split) {
  check_split(split);
  SeededRandom ties(seed, rows_stream(epoch));
  SortedByBudget sorted = sort_and_cut(lengths, n, options, options.shuffle ? &ties : nullptr);
  const int64_t total = static_cast<int64_t>(sorted.begins.size()) - 1;
  std::vector<int64_t> batch_order;
  if (options.shuffle) {
    batch_order.resize(static_cast<size_t>(total));
    seeded_permutation(seed, batches_stream(epoch), total, batch_order.data());
  }
  return rank_plan(std::move(sorted.order), sorted.begins, batch_order, split);
}

}  // namespace arrowloader
