// Seeded permutations that depend on nothing but (seed, stream, n): not on the library
// version, the platform, the thread count or timing. Document and block orders of packed
// epochs are drawn here, so a run resumes into exactly the order it left.
#pragma once

#include <cstdint>

namespace arrowloader {

// Writes a uniformly random permutation of [0, n) to out[0..n), drawn with a
// SplitMix64 generator seeded from (seed, stream) and a Fisher-Yates shuffle with
// unbiased bounded draws.
void seeded_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out);

}  // namespace arrowloader
