// Batch plans (batch_plans.h): one rank's batches of an epoch, planned over a length per
// row with the GIL released, returned as numpy arrays that own the plan's memory.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <utility>
#include <vector>

#include "batch_plans.h"
#include "bind_checks.h"
#include "bindings.h"

namespace arrowloader {

namespace {

// `values` as a 1-D int64 array, without a copy: the array owns the vector.
py::array_t<int64_t> owning_array(std::vector<int64_t>&& values) {
  auto* owned = new std::vector<int64_t>(std::move(values));
  py::capsule release(owned, [](void* p) { delete static_cast<std::vector<int64_t>*>(p); });
  return py::array_t<int64_t>({static_cast<py::ssize_t>(owned->size())}, owned->data(),
                              release);
}

py::tuple as_arrays(BatchPlan&& plan) {
  return py::make_tuple(owning_array(std::move(plan.rows)), owning_array(std::move(plan.starts)),
                        owning_array(std::move(plan.ends)));
}

}  // namespace

void register_plans(py::module_& m) {
  m.def(
      "rank_batch_count",
      [](int64_t total, int64_t rank, int64_t world_size, bool drop_last) {
        return rank_batch_count(total, RankSplit{rank, world_size, drop_last});
      },
      py::arg("total"), py::arg("rank"), py::arg("world_size"), py::arg("drop_last"),
      "Batches each rank plays of an epoch of `total` global batches: total // world_size "
      "with drop_last (the last total % world_size dropped), else ceil(total / "
      "world_size) (the first batches repeated to fill the last round).");
  m.def(
      "length_grouped_batch_count",
      [](int64_t n, int64_t batch_size, bool drop_last) {
        LengthGroupOptions options;
        options.batch_size = batch_size;
        options.drop_last = drop_last;
        return length_grouped_batch_count(n, options);
      },
      py::arg("n"), py::arg("batch_size"), py::arg("drop_last"),
      "Global batches of a length-grouped epoch of n rows.");
  m.def(
      "plan_length_grouped",
      [](const Rows& lengths, int64_t batch_size, int64_t megabatch_size, bool shuffle,
         bool drop_last, uint64_t seed, uint64_t epoch, int64_t rank, int64_t world_size) {
        const LengthGroupOptions options{batch_size, megabatch_size, shuffle, drop_last};
        const RankSplit split{rank, world_size, drop_last};
        const int64_t* l = lengths.data();
        const int64_t n = lengths.shape(0);
        BatchPlan plan;
        {
          py::gil_scoped_release release;
          plan = plan_length_grouped(l, n, options, seed, epoch, split);
        }
        return as_arrays(std::move(plan));
      },
      py::arg("lengths"), py::arg("batch_size"), py::arg("megabatch_size"), py::arg("shuffle"),
      py::arg("drop_last"), py::arg("seed"), py::arg("epoch"), py::arg("rank"),
      py::arg("world_size"),
      "One rank's length-grouped batches of an epoch. lengths: int64 [n], one per row. "
      "Returns (rows: int64 [n], the epoch's order; starts, ends: int64 [batches]): the "
      "rank's batch k is rows[starts[k]:ends[k]].");
  m.def(
      "token_budget_batch_count",
      [](const Rows& lengths, int64_t max_tokens, int64_t max_rows, int64_t pad_to_multiple_of) {
        const TokenBudgetOptions options{max_tokens, max_rows, pad_to_multiple_of, false};
        const int64_t* l = lengths.data();
        const int64_t n = lengths.shape(0);
        py::gil_scoped_release release;
        return token_budget_batch_count(l, n, options);
      },
      py::arg("lengths"), py::arg("max_tokens"), py::arg("max_rows"),
      py::arg("pad_to_multiple_of"),
      "Global batches of a token-budget epoch (the same for every seed and epoch). lengths: "
      "int64 [n]; max_rows 0: no limit.");
  m.def(
      "plan_token_budget",
      [](const Rows& lengths, int64_t max_tokens, int64_t max_rows, int64_t pad_to_multiple_of,
         bool shuffle, bool drop_last, uint64_t seed, uint64_t epoch, int64_t rank,
         int64_t world_size) {
        const TokenBudgetOptions options{max_tokens, max_rows, pad_to_multiple_of, shuffle};
        const RankSplit split{rank, world_size, drop_last};
        const int64_t* l = lengths.data();
        const int64_t n = lengths.shape(0);
        BatchPlan plan;
        {
          py::gil_scoped_release release;
          plan = plan_token_budget(l, n, options, seed, epoch, split);
        }
        return as_arrays(std::move(plan));
      },
      py::arg("lengths"), py::arg("max_tokens"), py::arg("max_rows"),
      py::arg("pad_to_multiple_of"), py::arg("shuffle"), py::arg("drop_last"), py::arg("seed"),
      py::arg("epoch"), py::arg("rank"), py::arg("world_size"),
      "One rank's token-budget batches of an epoch. lengths: int64 [n], one per row; "
      "max_rows 0: no limit. Returns (rows: int64 [n], the epoch's order; starts, ends: "
      "int64 [batches]): the rank's batch k is rows[starts[k]:ends[k]].");
}

}  // namespace arrowloader
