// PackPlan and PackedBatchAssembler: packed batches, written on the calling thread or
// queued on a pool.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <utility>

#include "bind_checks.h"
#include "bind_pool.h"
#include "bindings.h"
#include "packed_batch.h"

namespace arrowloader {

void register_packed(py::module_& m) {
  py::class_<PackPlan, std::shared_ptr<PackPlan>>(
      m, "PackPlan", "The blocks of one packed epoch, for one document order.")
      .def_property_readonly("num_blocks", &PackPlan::num_blocks)
      .def_property_readonly("dropped_tokens", &PackPlan::dropped_tokens,
                             "Tokens (EOS included) left out of every block: the concat tail, "
                             "or what bestfit's overlong policy truncates or drops.")
      .def_property_readonly("overlong_pieces", &PackPlan::overlong_pieces,
                             "Pieces (document + EOS) longer than a block that bestfit split, "
                             "truncated or dropped.");

  py::class_<PackedBatchAssembler, std::shared_ptr<PackedBatchAssembler>>(
      m, "PackedBatchAssembler",
      "Packs documents (each followed by EOS) into rows of seq_len + 1 tokens and writes "
      "batches of them.")
      .def(py::init([](std::shared_ptr<TokenColumn> tokens, int64_t seq_len, int64_t eos_token_id,
                       bool bestfit, bool mask_across_documents, int64_t pad_token_id,
                       int64_t label_pad_id, bool shift_labels, int64_t max_pieces_per_block,
                       const std::string& overlong, std::shared_ptr<LossMask> loss_mask) {
             Overlong policy;
             if (overlong == "split") {
               policy = Overlong::kSplit;
             } else if (overlong == "truncate") {
               policy = Overlong::kTruncate;
             } else if (overlong == "drop") {
               policy = Overlong::kDrop;
             } else {
               throw std::invalid_argument("overlong must be 'split', 'truncate' or 'drop', got '" +
                                           overlong + "'");
             }
             tokens->freeze();
             PackOptions options{seq_len,      eos_token_id, bestfit,      mask_across_documents,
                                 pad_token_id, label_pad_id, shift_labels, max_pieces_per_block,
                                 policy};
             return std::make_shared<PackedBatchAssembler>(tokens, options, loss_mask);
           }),
           py::arg("tokens").none(false), py::arg("seq_len"), py::arg("eos_token_id"),
           py::arg("bestfit") = false, py::arg("mask_across_documents") = false,
           py::arg("pad_token_id") = 0, py::arg("label_pad_id") = -100,
           py::arg("shift_labels") = true, py::arg("max_pieces_per_block") = 0,
           py::arg("overlong") = "split", py::arg("loss_mask") = py::none(),
           "bestfit=False packs in 'concat' mode. shift_labels=True: blocks of seq_len + 1, "
           "labels = block[1:]; False: blocks of seq_len, labels = input_ids (the model "
           "shifts), -100 on padding and masked document starts. bestfit only: "
           "max_pieces_per_block (0: no cap) closes a block holding that many pieces; "
           "overlong ('split', 'truncate' or 'drop') is what becomes of a piece longer than "
           "a block. loss_mask (a LossMask over the same tokens): -100 on labels whose "
           "target it leaves out. Freezes the column.")
      .def(
          "plan",
          [](const PackedBatchAssembler& self, const Rows& order) {
            const int64_t* o = order.data();
            const int64_t n = order.shape(0);
            py::gil_scoped_release release;
            return std::const_pointer_cast<PackPlan>(self.plan(o, n));
          },
          py::arg("order"),
          "Plan an epoch whose documents come in `order` (int64 [n] global rows).")
      .def(
          "assemble",
          [](const PackedBatchAssembler& self, const PackPlan& plan, const py::object& blocks,
             const py::object& input_ids, const py::object& labels,
             const py::object& position_ids, const py::object& cu_seqlens) {
            const CheckedPackedBatch batch =
                check_packed_batch(self, blocks, input_ids, labels, position_ids, cu_seqlens);
            const int64_t* b = batch.blocks.data();
            const int64_t n = batch.blocks.shape(0);
            PackedBatchInfo info;
            {
              py::gil_scoped_release release;
              info = self.assemble(plan, b, n, batch.outputs);
            }
            return py::make_tuple(info.cu_seqlens_length, info.max_seqlen);
          },
          py::arg("plan"), py::arg("blocks"), py::arg("input_ids").noconvert(),
          py::arg("labels").noconvert(), py::arg("position_ids").noconvert() = py::none(),
          py::arg("cu_seqlens").noconvert() = py::none(),
          "Write blocks (int64 [n]) of plan as one batch on the calling thread (GIL released). "
          "input_ids, labels, position_ids: int64 or int32 [n, seq_len]; cu_seqlens: int32 "
          "[n * seq_len + 1], of which the returned count is used. Returns "
          "(cu_seqlens entries, max_seqlen).")
      .def(
          "submit",
          [](const std::shared_ptr<PackedBatchAssembler>& self,
             const std::shared_ptr<ThreadPool>& pool, const std::shared_ptr<PackPlan>& plan,
             const py::object& blocks, const py::object& input_ids, const py::object& labels,
             const py::object& position_ids, const py::object& cu_seqlens, int64_t batches) {
            CheckedPackedBatch batch = check_packed_batch(*self, blocks, input_ids, labels,
                                                          position_ids, cu_seqlens, batches);
            auto job = packed_job(self, plan, batch.blocks.data(), batch.blocks.shape(0),
                                  batches, batch.outputs);
            return submit_job(pool, std::move(job), std::move(batch.keepalive));
          },
          py::arg("pool").none(false), py::arg("plan").none(false), py::arg("blocks"),
          py::arg("input_ids").noconvert(),
          py::arg("labels").noconvert(), py::arg("position_ids").noconvert() = py::none(),
          py::arg("cu_seqlens").noconvert() = py::none(), py::arg("batches") = 1,
          "Like assemble(), but queued on pool; returns a Ticket whose result(batch=j) is "
          "(cu_seqlens entries, max_seqlen) of batch j. With batches=k the n blocks are k "
          "consecutive batches of n / k rows, written in one job: input_ids, labels, "
          "position_ids hold them back to back ([n, seq_len]); cu_seqlens is int32 "
          "[n * seq_len + k], batch j's run of n / k * seq_len + 1 entries starting at "
          "j * (n / k * seq_len + 1).")
      .def(
          "prefetch",
          [](const PackedBatchAssembler& self, const PackPlan& plan, const py::object& blocks_in) {
            const Rows blocks =
                index_array(blocks_in, "blocks must be a 1-D sequence of int64 block indices");
            const int64_t* b = blocks.data();
            const int64_t n = blocks.shape(0);
            py::gil_scoped_release release;
            return self.prefetch(plan, b, n);
          },
          py::arg("plan"), py::arg("blocks"),
          "Ask the kernel to start reading the token pages of blocks (int64 [n]) of plan "
          "(MADV_WILLNEED); returns the bytes of pages advised. Raises IndexError for a "
          "block outside the plan.");
}

}  // namespace arrowloader
