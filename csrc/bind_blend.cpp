// Blending datasets by weight, and queueing batches mixed from several packed datasets.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <utility>
#include <vector>

#include "bind_checks.h"
#include "bind_pool.h"
#include "bindings.h"
#include "blend.h"
#include "packed_batch.h"

namespace arrowloader {

void register_blend(py::module_& m) {
  m.def(
      "blend",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& weights,
         int64_t start, int64_t count, const py::object& taken_in) {
        if (weights.ndim() != 1) throw std::invalid_argument("weights must be 1-D");
        if (count < 0) throw std::invalid_argument("count must be >= 0");
        if (start < 0) throw std::invalid_argument("start must be >= 0");
        const int64_t d = weights.shape(0);
        int64_t* taken = nullptr;
        if (!taken_in.is_none()) {
          if (!py::isinstance<py::array_t<int64_t>>(taken_in)) {
            throw std::invalid_argument("taken must be an int64 array [len(weights)]");
          }
          auto array = taken_in.cast<py::array_t<int64_t>>();
          if (array.ndim() != 1 || array.shape(0) != d || !array.writeable() ||
              !(array.flags() & py::array::c_style)) {
            throw std::invalid_argument(
                "taken must be a writeable, contiguous int64 array [len(weights)]");
          }
          taken = array.mutable_data();
          int64_t sum = 0;
          for (int64_t k = 0; k < d; ++k) {
            if (taken[k] < 0) throw std::invalid_argument("taken: negative count");
            sum += taken[k];
          }
          if (sum != start) {
            throw std::invalid_argument("taken must sum to start (counts of the first start "
                                        "samples, as blend_counts() gives them)");
          }
        }
        py::array_t<int64_t> source(count);
        py::array_t<int64_t> index(count);
        const double* w = weights.data();
        int64_t* s = source.mutable_data();
        int64_t* i = index.mutable_data();
        {
          py::gil_scoped_release release;
          if (taken == nullptr) {
            blend(w, d, start, count, s, i);
          } else {
            blend_from(w, d, start, taken, count, s, i);
          }
        }
        return py::make_tuple(source, index);
      },
      py::arg("weights"), py::arg("start"), py::arg("count"), py::arg("taken") = py::none(),
      "Mixed samples [start, start + count) of datasets weighted by `weights` (float64 [D], "
      "summing to 1): returns (dataset int64 [count], index within it int64 [count]). "
      "Without `taken` it replays samples [0, start); with `taken` (int64 [D], the counts of "
      "the first `start` samples, updated in place to those of the first start + count) it "
      "costs O(count) alone.");

  m.def(
      "blend_counts",
      [](const py::array_t<double, py::array::c_style | py::array::forcecast>& weights,
         int64_t samples) {
        if (weights.ndim() != 1) throw std::invalid_argument("weights must be 1-D");
        const int64_t d = weights.shape(0);
        py::array_t<int64_t> counts(d);
        const double* w = weights.data();
        int64_t* c = counts.mutable_data();
        {
          py::gil_scoped_release release;
          blend_counts(w, d, samples, c);
        }
        return counts;
      },
      py::arg("weights"), py::arg("samples"),
      "How many of the first `samples` mixed samples each dataset gave: int64 [D].");

  m.def(
      "submit_mixed",
      [](const std::shared_ptr<ThreadPool>& pool,
         const std::vector<std::shared_ptr<PackedBatchAssembler>>& sources,
         const std::vector<std::shared_ptr<PackPlan>>& plans, const py::object& plan_of_row_in,
         const py::object& blocks, const py::object& input_ids, const py::object& labels,
         const py::object& position_ids, const py::object& cu_seqlens) {
        if (sources.empty() || sources.size() != plans.size()) {
          throw std::invalid_argument("submit_mixed needs one assembler per plan");
        }
        for (size_t d = 0; d < sources.size(); ++d) {
          if (sources[d] == nullptr || plans[d] == nullptr) {
            throw py::type_error("submit_mixed: sources and plans must not hold None");
          }
        }
        CheckedPackedBatch batch =
            check_packed_batch(*sources[0], blocks, input_ids, labels, position_ids, cu_seqlens);
        Rows plan_of_row = Rows::ensure(plan_of_row_in);
        if (!plan_of_row || plan_of_row.ndim() != 1 ||
            plan_of_row.shape(0) != batch.blocks.shape(0)) {
          throw std::invalid_argument("plan_of_row must be int64 [n], one per block");
        }
        auto job = mixed_job({sources.begin(), sources.end()}, {plans.begin(), plans.end()},
                             plan_of_row.data(), batch.blocks.data(), batch.blocks.shape(0),
                             batch.outputs);
        return submit_job(pool, std::move(job), py::make_tuple(batch.keepalive, plan_of_row));
      },
      py::arg("pool").none(false), py::arg("sources"), py::arg("plans"),
      py::arg("plan_of_row"),
      py::arg("blocks"), py::arg("input_ids").noconvert(), py::arg("labels").noconvert(),
      py::arg("position_ids").noconvert() = py::none(),
      py::arg("cu_seqlens").noconvert() = py::none(),
      "Queue a batch whose row r is block blocks[r] of plans[plan_of_row[r]], packed by "
      "sources[plan_of_row[r]] (int64 [n] each); outputs as PackedBatchAssembler.submit. "
      "Returns a Ticket whose result() is (cu_seqlens entries, max_seqlen).");
}

}  // namespace arrowloader
