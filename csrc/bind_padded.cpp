// PaddedBatchAssembler: padded batches, written on the calling thread or queued on a pool.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "bind_checks.h"
#include "bind_pool.h"
#include "bindings.h"
#include "padded_batch.h"

namespace arrowloader {

namespace {

// PaddedBatchAssembler.submit_batches(): several batches, each checked as submit() checks
// its arguments, in one job.
std::unique_ptr<Ticket> submit_padded_batches(const std::shared_ptr<PaddedBatchAssembler>& self,
                                              const std::shared_ptr<ThreadPool>& pool,
                                              const py::sequence& batches) {
  const auto count = static_cast<int64_t>(py::len(batches));
  if (count < 1) throw std::invalid_argument("submit_batches needs at least one batch");
  std::vector<PaddedBatch> planned;
  planned.reserve(static_cast<size_t>(count));
  py::list keepalive;
  for (const py::handle& item : batches) {
    py::tuple args = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
    if (args.size() != 5) {
      throw std::invalid_argument(
          "each batch is (rows, input_ids, attention_mask, causal_labels, labels)");
    }
    CheckedPaddedBatch checked =
        check_padded_batch(*self, args[0], args[1], args[2], args[3], args[4]);
    planned.push_back(checked.batch());
    keepalive.append(std::move(checked.keepalive));
  }
  return submit_job(pool, padded_job(self, std::move(planned)),
                    py::tuple(std::move(keepalive)));
}

// PaddedBatchAssembler.gather() (labels = false) and gather_labels().
auto gather_kept_tokens(const PaddedBatchAssembler& self, const Rows& rows,
                        const py::dtype& dtype, bool labels) {
  const int64_t n = rows.shape(0);
  const int64_t* r = rows.data();
  py::array_t<int64_t> lengths(n);
  int64_t* len = lengths.mutable_data();
  int64_t total = 0;
  {
    py::gil_scoped_release release;
    for (int64_t i = 0; i < n; ++i) total += (len[i] = self.kept_length(r[i]));
  }
  const OutType type = out_type(dtype, "dtype must be int64 or int32");
  py::array flat(dtype, std::vector<py::ssize_t>{total});
  void* data = flat.mutable_data();
  {
    py::gil_scoped_release release;
    if (labels) {
      self.gather_labels(r, n, type, data);
    } else {
      self.gather(r, n, type, data);
    }
  }
  return py::make_tuple(flat, lengths);
}

}  // namespace

void register_padded(py::module_& m) {
  py::class_<PaddedBatchAssembler, std::shared_ptr<PaddedBatchAssembler>>(
      m, "PaddedBatchAssembler",
      "Gathers, truncates and pads batches of token rows into caller-owned buffers.")
      .def(py::init([](std::shared_ptr<TokenColumn> tokens, std::shared_ptr<ScalarColumn> labels,
                       int64_t max_length, bool truncate_left, bool pad_left,
                       bool pad_to_max_length, int64_t pad_to_multiple_of, int64_t pad_token_id,
                       int64_t label_pad_id, std::shared_ptr<LossMask> loss_mask) {
             tokens->freeze();
             if (labels) labels->freeze();
             PadOptions options{max_length,         truncate_left, pad_left,
                                pad_to_max_length, pad_to_multiple_of,
                                pad_token_id,       label_pad_id};
             return std::make_shared<PaddedBatchAssembler>(tokens, labels, options, loss_mask);
           }),
           py::arg("tokens").none(false), py::arg("labels") = py::none(),
           py::arg("max_length") = -1,
           py::arg("truncate_left") = false, py::arg("pad_left") = false,
           py::arg("pad_to_max_length") = false, py::arg("pad_to_multiple_of") = 0,
           py::arg("pad_token_id") = 0, py::arg("label_pad_id") = -100,
           py::arg("loss_mask") = py::none(),
           "max_length < 0 keeps whole rows; pad_to_multiple_of 0 does not round. loss_mask "
           "(a LossMask over the same tokens): causal labels are label_pad_id where it leaves "
           "a token out. Freezes the columns.")
      .def(
          "width",
          [](const PaddedBatchAssembler& self, const Rows& rows) {
            const int64_t* r = rows.data();
            const int64_t n = rows.shape(0);
            py::gil_scoped_release release;
            return self.width(r, n);
          },
          py::arg("rows"), "Padded width of the batch of rows (int64 [n]).")
      .def(
          "widths",
          [](const PaddedBatchAssembler& self, const Rows& rows, int64_t batch_size) {
            if (batch_size < 1) throw std::invalid_argument("batch_size must be at least 1");
            const int64_t n = rows.shape(0);
            py::array_t<int64_t> out((n + batch_size - 1) / batch_size);
            const int64_t* r = rows.data();
            int64_t* o = out.mutable_data();
            py::gil_scoped_release release;
            self.widths(r, n, batch_size, o);
            return out;
          },
          py::arg("rows"), py::arg("batch_size"),
          "Widths of consecutive batches of batch_size rows (int64 [n]) -> int64 "
          "[ceil(n / batch_size)]; the last batch may be short.")
      .def(
          "batch_widths",
          [](const PaddedBatchAssembler& self, const Rows& rows, const Rows& starts,
             const Rows& ends) {
            const int64_t n = rows.shape(0);
            const int64_t batches = starts.shape(0);
            if (ends.shape(0) != batches) {
              throw std::invalid_argument("starts and ends must have the same length, got " +
                                          std::to_string(batches) + " and " +
                                          std::to_string(ends.shape(0)));
            }
            const int64_t* s = starts.data();
            const int64_t* e = ends.data();
            for (int64_t b = 0; b < batches; ++b) {
              if (s[b] < 0 || s[b] > e[b] || e[b] > n) {
                throw std::invalid_argument(
                    "batch " + std::to_string(b) + " spans rows[" + std::to_string(s[b]) + ":" +
                    std::to_string(e[b]) + "], not within the " + std::to_string(n) + " rows");
              }
            }
            py::array_t<int64_t> out(batches);
            const int64_t* r = rows.data();
            int64_t* w = out.mutable_data();
            py::gil_scoped_release release;
            self.widths_at(r, s, e, batches, w);
            return out;
          },
          py::arg("rows"), py::arg("starts"), py::arg("ends"),
          "Widths of the batches rows[starts[b]:ends[b]] (rows int64 [n]; starts, ends int64 "
          "[batches], each span within rows) -> int64 [batches].")
      .def(
          "kept_lengths",
          [](const PaddedBatchAssembler& self) {
            py::array_t<int64_t> out(self.num_rows());
            int64_t* o = out.mutable_data();
            py::gil_scoped_release release;
            self.kept_lengths(o);
            return out;
          },
          "Tokens every row keeps after truncation: int64 [num_rows].")
      .def(
          "assemble",
          [](const PaddedBatchAssembler& self, const py::object& rows,
             const py::object& input_ids, const py::object& attention_mask,
             const py::object& causal_labels, const py::object& labels) {
            const CheckedPaddedBatch checked =
                check_padded_batch(self, rows, input_ids, attention_mask, causal_labels, labels);
            const PaddedBatch batch = checked.batch();
            py::gil_scoped_release release;
            return self.assemble(batch.rows, batch.n, batch.out);
          },
          py::arg("rows"), py::arg("input_ids").noconvert(),
          py::arg("attention_mask").noconvert() = py::none(),
          py::arg("causal_labels").noconvert() = py::none(),
          py::arg("labels").noconvert() = py::none(),
          "Assemble one batch on the calling thread (GIL released). rows: int64 [n]; "
          "input_ids, attention_mask, causal_labels: int64 or int32 [n, width], all one dtype; "
          "labels: int64 [n]. Returns the number of tokens truncation dropped.")
      .def(
          "submit",
          [](const std::shared_ptr<PaddedBatchAssembler>& self,
             const std::shared_ptr<ThreadPool>& pool,
             const py::object& rows, const py::object& input_ids,
             const py::object& attention_mask, const py::object& causal_labels,
             const py::object& labels) {
            CheckedPaddedBatch checked =
                check_padded_batch(*self, rows, input_ids, attention_mask, causal_labels, labels);
            return submit_job(pool, padded_job(self, {checked.batch()}),
                              std::move(checked.keepalive));
          },
          py::arg("pool").none(false), py::arg("rows"), py::arg("input_ids").noconvert(),
          py::arg("attention_mask").noconvert() = py::none(),
          py::arg("causal_labels").noconvert() = py::none(),
          py::arg("labels").noconvert() = py::none(),
          "Like assemble(), but queued on pool; returns a Ticket.")
      .def("submit_batches", &submit_padded_batches, py::arg("pool").none(false),
           py::arg("batches"),
           "Queue several batches as one job: batches is a sequence of (rows, input_ids, "
           "attention_mask, causal_labels, labels) tuples, each as submit() takes them. "
           "Returns a Ticket whose result(batch=j) is batch j's (truncated tokens, 0).")
      .def(
          "gather",
          [](const PaddedBatchAssembler& self, const Rows& rows, const py::dtype& dtype) {
            return gather_kept_tokens(self, rows, dtype, false);
          },
          py::arg("rows"), py::arg("dtype"),
          "Kept (truncated, unpadded) tokens of rows (int64 [n]) back to back: returns "
          "(flat: dtype [sum(lengths)], lengths: int64 [n]).")
      .def(
          "gather_labels",
          [](const PaddedBatchAssembler& self, const Rows& rows, const py::dtype& dtype) {
            return gather_kept_tokens(self, rows, dtype, true);
          },
          py::arg("rows"), py::arg("dtype"),
          "Causal labels of the kept tokens of rows (int64 [n]) back to back, as gather() "
          "lays them out: the tokens, label_pad_id where the loss mask leaves them out. "
          "Counts no truncated tokens. Returns (flat: dtype [sum(lengths)], lengths: int64 "
          "[n]).")
      .def_property_readonly("truncated_tokens", &PaddedBatchAssembler::truncated_tokens,
                             "Tokens dropped by truncation in gather() calls so far.")
      .def_property_readonly("num_rows", &PaddedBatchAssembler::num_rows);
}

}  // namespace arrowloader
