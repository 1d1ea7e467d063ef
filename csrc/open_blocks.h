// The open blocks of a best-fit packing, found by their remaining room.
//
// Best fit asks, for every piece, for the open block with the least room that still holds
// it, ties going to the block opened first. Rooms are integers in [1, block_size], so the
// blocks are kept in one bucket per room value (a min-heap of block numbers: the first
// opened on top) and a two-level bitmap of the non-empty buckets answers "the smallest
// room >= length" with a few word scans. An ordered set of (room, block) pairs gives the
// same answers, but allocates a tree node per insertion, which made planning an epoch of
// a few hundred thousand documents cost tens of milliseconds.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <vector>

namespace arrowloader {

class OpenBlocks {
 public:
  explicit OpenBlocks(int64_t block_size)
      : buckets_(static_cast<size_t>(block_size) + 1),
        words_(static_cast<size_t>(block_size) / 64 + 1, 0),
        summary_(words_.size() / 64 + 1, 0) {}

  // Opens (or reopens) `block` with `room` positions left, 1 <= room <= block_size.
  void insert(int64_t room, int64_t block) {
    std::vector<int64_t>& bucket = buckets_[static_cast<size_t>(room)];
    bucket.push_back(block);
    std::push_heap(bucket.begin(), bucket.end(), std::greater<int64_t>());
    mark(room);
  }

  // Removes and returns the first-opened block among those with the least room >= length,
  // or -1 when no open block has that much room.
  int64_t take_fitting(int64_t length) {
    const int64_t room = first_at_least(length);
    if (room < 0) return -1;
    std::vector<int64_t>& bucket = buckets_[static_cast<size_t>(room)];
    std::pop_heap(bucket.begin(), bucket.end(), std::greater<int64_t>());
    const int64_t block = bucket.back();
    bucket.pop_back();
    if (bucket.empty()) unmark(room);
    return block;
  }

 private:
  void mark(int64_t room) {
    const size_t word = static_cast<size_t>(room) / 64;
    words_[word] |= uint64_t{1} << (room % 64);
    summary_[word / 64] |= uint64_t{1} << (word % 64);
  }

  void unmark(int64_t room) {
    const size_t word = static_cast<size_t>(room) / 64;
    words_[word] &= ~(uint64_t{1} << (room % 64));
    if (words_[word] == 0) summary_[word / 64] &= ~(uint64_t{1} << (word % 64));
  }

  // The smallest marked room >= length, or -1.
  int64_t first_at_least(int64_t length) const {
    if (length >= static_cast<int64_t>(buckets_.size())) return -1;
    size_t word = static_cast<size_t>(length) / 64;
    const uint64_t here = words_[word] & (~uint64_t{0} << (length % 64));
    if (here != 0) return static_cast<int64_t>(word * 64 + lowest_bit(here));
    // The next non-empty word after `word`, through the summary.
    size_t group = word / 64;
    const unsigned shift = static_cast<unsigned>(word % 64) + 1;
    uint64_t later = shift == 64 ? 0 : summary_[group] & (~uint64_t{0} << shift);
    while (later == 0) {
      if (++group == summary_.size()) return -1;
      later = summary_[group];
    }
    word = group * 64 + lowest_bit(later);
    return static_cast<int64_t>(word * 64 + lowest_bit(words_[word]));
  }

  static unsigned lowest_bit(uint64_t bits) {
#if defined(__GNUC__) || defined(__clang__)
    return static_cast<unsigned>(__builtin_ctzll(bits));
#else
    unsigned n = 0;
    while ((bits & 1) == 0) {
      bits >>= 1;
      ++n;
    }
    return n;
#endif
  }

  std::vector<std::vector<int64_t>> buckets_;  // buckets_[room]: min-heap of block numbers
  std::vector<uint64_t> words_;                // bit r: buckets_[r] is not empty
  std::vector<uint64_t> summary_;              // bit w: words_[w] is not zero
};

}  // namespace arrowloader
