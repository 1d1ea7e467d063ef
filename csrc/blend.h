// Deterministic blending of several datasets by weight.
#pragma once

#include <cstdint>

namespace arrowloader {

// Mixed samples [start, start + count): out_source[i] is the dataset each comes from and
// out_index[i] how many samples of that dataset came before it. Sample j goes to the
// dataset d with the largest deficit weights[d] * (j + 1) - taken_d (ties: the lowest
// d). With D datasets, after any prefix of j samples dataset d has had between
// weights[d] * j - (H_D - 1) and weights[d] * j + (1 - 1/D) samples (H_D = 1 + 1/2 + ...
// + 1/D), so any window of N samples is within H_D - 1/D of weights[d] * N (see
// arrowloader/mixed.py). Reaching `start` costs O(start * num_weights) and no other
// state: a run resumes from the count alone.
void blend(const double* weights, int64_t num_weights, int64_t start, int64_t count,
           int64_t* out_source, int64_t* out_index);

// As blend(), continuing from taken[d]: how many of the first `start` samples came from
// each dataset (they must sum to `start`, as blend_counts() gives them); updated to the
// counts of the first start + count. Costs O(count * num_weights) whatever `start`.
void blend_from(const double* weights, int64_t num_weights, int64_t start, int64_t* taken,
                int64_t count, int64_t* out_source, int64_t* out_index);

// counts[d]: how many of the first `samples` mixed samples come from dataset d.
void blend_counts(const double* weights, int64_t num_weights, int64_t samples, int64_t* counts);

}  // namespace arrowloader
