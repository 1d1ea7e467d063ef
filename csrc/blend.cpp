#include "blend.h"

#include <algorithm>
#include <stdexcept>
#include <vector>

namespace arrowloader {

namespace {

// Runs the blending rule over samples [begin, end), calling take(j, d, index) for each;
// taken[d] holds the counts of the first `begin` samples and is updated.
template <typename Take>
void run_blend(const double* weights, int64_t num_weights, int64_t begin, int64_t end,
               int64_t* taken, Take take) {
  if (num_weights < 1) throw std::invalid_argument("blend needs at least one weight");
  if (begin < 0 || end < begin) throw std::invalid_argument("blend: negative sample count");
  for (int64_t j = begin; j < end; ++j) {
    int64_t best = 0;
    double best_deficit = weights[0] * static_cast<double>(j + 1) - static_cast<double>(taken[0]);
    for (int64_t d = 1; d < num_weights; ++d) {
      const double deficit =
          weights[d] * static_cast<double>(j + 1) - static_cast<double>(taken[d]);
      if (deficit > best_deficit) {
        best = d;
        best_deficit = deficit;
      }
    }
    take(j, best, taken[best]);
    ++taken[best];
  }
}

}  // namespace

void blend(const double* weights, int64_t num_weights, int64_t start, int64_t count,
           int64_t* out_source, int64_t* out_index) {
  if (start < 0 || count < 0) throw std::invalid_argument("blend: negative start or count");
  std::vector<int64_t> taken(static_cast<size_t>(std::max<int64_t>(num_weights, 0)), 0);
  blend_counts(weights, num_weights, start, taken.data());
  blend_from(weights, num_weights, start, taken.data(), count, out_source, out_index);
}

void blend_from(const double* weights, int64_t num_weights, int64_t start, int64_t* taken,
                int64_t count, int64_t* out_source, int64_t* out_index) {
  if (start < 0 || count < 0) throw std::invalid_argument("blend: negative start or count");
  run_blend(weights, num_weights, start, start + count, taken,
            [&](int64_t j, int64_t d, int64_t index) {
              out_source[j - start] = d;
              out_index[j - start] = index;
            });
}

void blend_counts(const double* weights, int64_t num_weights, int64_t samples, int64_t* counts) {
  for (int64_t d = 0; d < num_weights; ++d) counts[d] = 0;
  run_blend(weights, num_weights, 0, samples, counts, [](int64_t, int64_t, int64_t) {});
}

}  // namespace arrowloader
