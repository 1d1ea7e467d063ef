// Seeded permutations that depend on nothing but (seed, stream, n): not on the library
// version, the platform, the thread count or timing. Document and block orders of packed
// epochs and the orders of batch plans are drawn here, so a run resumes into exactly the
// order it left.
#pragma once

#include <cstdint>

namespace arrowloader {

// The random numbers behind every seeded order: a SplitMix64 generator (Steele, Lea,
// Flood 2014; tiny, well mixed, fully specified, so orders never change under our users'
// feet) seeded from (seed, stream).
class SeededRandom {
 public:
  SeededRandom(uint64_t seed, uint64_t stream);
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0, unbiased.
  uint64_t below(uint64_t bound);

 private:
  explicit SeededRandom(uint64_t state) : state_(state) {}
  uint64_t state_;
};

// Shuffles values[0..n) uniformly in place (Fisher-Yates: for i from n - 1 down to 1,
// swap entries i and below(i + 1)), drawing from `rng`.
void shuffle_in_place(SeededRandom& rng, int64_t* values, int64_t n);

// Writes a uniformly random permutation of [0, n) to out[0..n): the identity shuffled by
// shuffle_in_place() with SeededRandom(seed, stream).
void seeded_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out);

}  // namespace arrowloader
