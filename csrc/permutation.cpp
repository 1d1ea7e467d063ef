#include "permutation.h"

namespace arrowloader {

namespace {

__extension__ typedef unsigned __int128 uint128;

}  // namespace

SeededRandom::SeededRandom(uint64_t seed, uint64_t stream) : state_(0) {
  // Two rounds of mixing keep (seed, stream) pairs that differ in one bit far apart.
  SeededRandom mix(seed ^ (stream * 0xD1B54A32D192ED03ULL));
  state_ = mix.next() ^ mix.next();
}

uint64_t SeededRandom::below(uint64_t bound) {
  // Multiply-shift with rejection of the biased low range (Lemire 2019).
  uint128 product = static_cast<uint128>(next()) * bound;
  uint64_t low = static_cast<uint64_t>(product);
  if (low < bound) {
    const uint64_t threshold = (0 - bound) % bound;
    while (low < threshold) {
      product = static_cast<uint128>(next()) * bound;
      low = static_cast<uint64_t>(product);
    }
  }
  return static_cast<uint64_t>(product >> 64);
}

void shuffle_in_place(SeededRandom& rng, int64_t* values, int64_t n) {
  // The swap partner j of step i depends on the generator alone, not on the array, so
  // partners are drawn kAhead steps early (in the same order) and their entries requested
  // from memory meanwhile: for 10M entries (80 MB) each swap was otherwise a wait on a
  // random read.
  constexpr int64_t kAhead = 16;
  int64_t partner[kAhead];
  auto draw = [&](int64_t i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(values + j, 1);
#endif
    partner[i % kAhead] = j;
  };
  for (int64_t i = n - 1; i > 0 && i > n - 1 - kAhead; --i) draw(i);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = partner[i % kAhead];
    if (i - kAhead > 0) draw(i - kAhead);
    const int64_t t = values[i];
    values[i] = values[j];
    values[j] = t;
  }
}

void seeded_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out) {
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  SeededRandom rng(seed, stream);
  shuffle_in_place(rng, out, n);
}

}  // namespace arrowloader
