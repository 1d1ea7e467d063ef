// Deterministic blending of several datasets by weight.
#pragma once

#include <cstdint>

namespace arrowloader {

// Mixed samples [start, start + count): out_source[i] is the dataset each comes from and
// out_index[i] how many samples of that dataset came before it. Sample j goes to the
// dataset d with the largest deficit weights[d] * (j + 1) - taken_d (ties: the lowest
// d), so after any prefix of j samples every dataset has had within one sample of
// weights[d] * j, and any window of samples is within two of its share. Reaching `start`
// costs O(start * num_weights) and no other state: a run resumes from the count alone.
void blend(const double* weights, int64_t num_weights, int64_t start, int64_t count,
           int64_t* out_source, int64_t* out_index);

// counts[d]: how many of the first `samples` mixed samples come from dataset d.
void blend_counts(const double* weights, int64_t num_weights, int64_t samples, int64_t* counts);

}  // namespace arrowloader
