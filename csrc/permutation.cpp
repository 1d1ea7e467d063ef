#include "permutation.h"

namespace arrowloader {

namespace {

__extension__ typedef unsigned __int128 uint128;

// SplitMix64 (Steele, Lea, Flood 2014): a tiny, well-mixed 64-bit generator whose
// output is fully specified, so orders never change under our users' feet.
class SplitMix64 {
 public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next() {
    uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  // Uniform in [0, bound), bound > 0: multiply-shift with rejection of the biased
  // low range (Lemire 2019).
  uint64_t below(uint64_t bound) {
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

 private:
  uint64_t state_;
};

}  // namespace

void seeded_permutation(uint64_t seed, uint64_t stream, int64_t n, int64_t* out) {
  // Two rounds of mixing keep (seed, stream) pairs that differ in one bit far apart.
  SplitMix64 mix(seed ^ (stream * 0xD1B54A32D192ED03ULL));
  SplitMix64 rng(mix.next() ^ mix.next());
  for (int64_t i = 0; i < n; ++i) out[i] = i;
  // Fisher-Yates. The swap partner j of step i depends on the generator alone, not on
  // the array, so partners are drawn kAhead steps early (in the same order) and their
  // entries requested from memory meanwhile: for 10M entries (80 MB) each swap was
  // otherwise a wait on a random read.
  constexpr int64_t kAhead = 16;
  int64_t partner[kAhead];
  auto draw = [&](int64_t i) {
    const auto j = static_cast<int64_t>(rng.below(static_cast<uint64_t>(i) + 1));
#if defined(__GNUC__) || defined(__clang__)
    __builtin_prefetch(out + j, 1);
#endif
    partner[i % kAhead] = j;
  };
  for (int64_t i = n - 1; i > 0 && i > n - 1 - kAhead; --i) draw(i);
  for (int64_t i = n - 1; i > 0; --i) {
    const int64_t j = partner[i % kAhead];
    if (i - kAhead > 0) draw(i - kAhead);
    const int64_t t = out[i];
    out[i] = out[j];
    out[j] = t;
  }
}

}  // namespace arrowloader
