// TokenColumn, ScalarColumn and seeded permutations.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

#include "arrow_c_abi.h"
#include "bind_checks.h"
#include "bindings.h"
#include "columns.h"
#include "loss_mask.h"
#include "permutation.h"

namespace arrowloader {

namespace {

void register_token_column(py::module_& m) {
  py::class_<TokenColumn, std::shared_ptr<TokenColumn>>(
      m, "TokenColumn",
      "A list<int32|int64|uint16|uint32> (or large_list) column spread over many Arrow "
      "arrays, read in place.")
      .def(py::init<std::string, bool>(), py::arg("name"), py::arg("narrow") = false,
           "narrow=True also accepts list<int8|uint8|bool> (a mask or token type ids beside "
           "the tokens).")
      .def(
          "add_chunk",
          [](TokenColumn& self, const py::object& schema, const py::object& array,
             const std::string& file, int64_t first_row_in_file, bool check_offsets) {
            auto* s = capsule_pointer<ArrowSchema>(schema, "arrow_schema", "schema");
            auto* a = capsule_pointer<ArrowArray>(array, "arrow_array", "array");
            ChunkOrigin origin{file, first_row_in_file};
            py::gil_scoped_release release;
            self.add_chunk(s, a, std::move(origin), check_offsets);
          },
          py::arg("schema"), py::arg("array"), py::arg("file"), py::arg("first_row_in_file"),
          py::arg("check_offsets") = true,
          "Import one array (the two PyCapsules of __arrow_c_array__()) without copying, "
          "check nulls and offsets in one pass, and append it. `file` and `first_row_in_file` "
          "name the rows in error messages. check_offsets=False skips the pass over the "
          "offsets (only for files an index cache vouches for); the first and last offsets "
          "are still checked. Raises CorpusFormatError.")
      .def(
          "check_chunk_offsets",
          [](TokenColumn& self, size_t begin, size_t end) {
            py::gil_scoped_release release;
            self.check_chunk_offsets(begin, end);
          },
          py::arg("begin"), py::arg("end"),
          "Run the offsets pass over chunks [begin, end), e.g. ones added with "
          "check_offsets=False. Raises CorpusFormatError naming file, column and row.")
      .def(
          "hold_region",
          [](TokenColumn& self, const py::object& schema, const py::object& array) {
            auto* s = capsule_pointer<ArrowSchema>(schema, "arrow_schema", "schema");
            auto* a = capsule_pointer<ArrowArray>(array, "arrow_array", "array");
            self.hold_region(s, a);
          },
          py::arg("schema"), py::arg("array"),
          "Keep a uint8 array over a region of memory (the two PyCapsules of "
          "__arrow_c_array__(); typically a whole memory-mapped file) alive with the column. "
          "Chunks added afterwards whose buffers all lie inside it keep no Arrow objects of "
          "their own.")
      .def_property("vocab_size", &TokenColumn::vocab_size, &TokenColumn::set_vocab_size,
                    "Token ids copied out must lie in [0, vocab_size) (CorpusFormatError "
                    "naming the row otherwise); 0 checks nothing. Settable until frozen.")
      .def_property_readonly("held_arrays", &TokenColumn::held_arrays,
                             "Imported arrays the column keeps alive.")
      .def(
          "advise_random_access",
          [](const TokenColumn& self) {
            py::gil_scoped_release release;
            return self.advise_random_access();
          },
          "Tell the kernel the held regions (mapped files) are read in random order "
          "(MADV_RANDOM: no read-around on page faults). Returns the regions advised.")
      .def_property_readonly("name", &TokenColumn::name)
      .def_property_readonly("num_rows", &TokenColumn::num_rows, "Rows over all chunks.")
      .def_property_readonly("num_tokens", &TokenColumn::num_tokens, "Tokens over all rows.")
      .def_property_readonly("num_chunks", &TokenColumn::num_chunks)
      .def_property_readonly("checked_chunks", &TokenColumn::checked_chunks,
                             "Chunks whose offsets were checked so far.")
      .def(
          "token_offsets",
          [](const std::shared_ptr<TokenColumn>& self) {
            const std::vector<int64_t>* sums;
            {
              py::gil_scoped_release release;
              sums = &self->token_offsets();
            }
            // A read-only view of the column's own prefix sums: no copy, and the
            // column (their owner) lives as long as the array.
            py::array_t<int64_t> out({static_cast<py::ssize_t>(sums->size())}, sums->data(),
                                     py::cast(self));
            out.attr("setflags")(py::arg("write") = false);
            return out;
          },
          "Token prefix sums: int64 [num_rows + 1], entry r = tokens in rows before r (row "
          "r's length is entry r + 1 minus entry r). Built on the first call (8 bytes a row, "
          "kept with the column), a read-only view afterwards. The column cannot take more "
          "chunks once they exist.")
      .def_property_readonly("has_token_offsets", &TokenColumn::has_token_offsets,
                             "Whether token_offsets() was built already.")
      .def(
          "lengths",
          [](const TokenColumn& self, const Rows& rows) {
            py::array_t<int64_t> out(rows.shape(0));
            const int64_t* r = rows.data();
            int64_t* o = out.mutable_data();
            const int64_t n = rows.shape(0);
            py::gil_scoped_release release;
            for (int64_t i = 0; i < n; ++i) {
              self.check_index(r[i]);
              o[i] = self.row_length(r[i]);
            }
            return out;
          },
          py::arg("rows"), "Token counts of rows (int64 [n]) -> int64 [n].")
      .def(
          "describe_row",
          [](const TokenColumn& self, int64_t row) {
            self.check_index(row);
            return self.describe_row(row);
          },
          py::arg("row"),
          "Where global row `row` is, for messages: \"<file>: column '<name>' row <n>\" (the "
          "row within its file).")
      .def(
          "truncation_loss",
          [](const TokenColumn& self, int64_t max_length) {
            py::gil_scoped_release release;
            return self.truncation_loss(max_length);
          },
          py::arg("max_length"),
          "(tokens, rows) that truncating every row to max_length would drop / shorten.");
}

void register_scalar_column(py::module_& m) {
  py::class_<ScalarColumn, std::shared_ptr<ScalarColumn>>(
      m, "ScalarColumn", "An integer column spread over many Arrow arrays, read as int64.")
      .def(py::init<std::string>(), py::arg("name"))
      .def(
          "add_chunk",
          [](ScalarColumn& self, const py::object& schema, const py::object& array,
             const std::string& file, int64_t first_row_in_file) {
            auto* s = capsule_pointer<ArrowSchema>(schema, "arrow_schema", "schema");
            auto* a = capsule_pointer<ArrowArray>(array, "arrow_array", "array");
            ChunkOrigin origin{file, first_row_in_file};
            py::gil_scoped_release release;
            self.add_chunk(s, a, std::move(origin));
          },
          py::arg("schema"), py::arg("array"), py::arg("file"), py::arg("first_row_in_file"),
          "Import one integer array (int8 .. uint64) without copying; raises CorpusFormatError "
          "on nulls or uint64 values above int64's range.")
      .def(
          "values",
          [](const ScalarColumn& self, const Rows& rows) {
            const int64_t n = rows.shape(0);
            py::array_t<int64_t> out(n);
            const int64_t* r = rows.data();
            int64_t* o = out.mutable_data();
            for (int64_t i = 0; i < n; ++i) {
              if (r[i] < 0 || r[i] >= self.num_rows()) {
                throw std::out_of_range("index " + std::to_string(r[i]) +
                                        " is out of range for a column of " +
                                        std::to_string(self.num_rows()) + " rows");
              }
              o[i] = self.value(r[i]);
            }
            return out;
          },
          py::arg("rows"), "Values of rows (int64 [n]) as int64 [n].")
      .def_property_readonly("name", &ScalarColumn::name)
      .def_property_readonly("num_rows", &ScalarColumn::num_rows);
}

void register_loss_mask(py::module_& m) {
  py::class_<LossMask, std::shared_ptr<LossMask>>(
      m, "LossMask",
      "Which tokens of each row are in the loss (completion-only loss): a per-token mask "
      "column (1/true: in the loss, 0/false: label -100) or a per-row prompt length (the "
      "first tokens left out). A packed row's EOS counts as the row's last token does.")
      .def(py::init([](std::shared_ptr<TokenColumn> tokens, std::shared_ptr<TokenColumn> mask,
                       std::shared_ptr<ScalarColumn> prompt_lengths) {
             if ((mask == nullptr) == (prompt_lengths == nullptr)) {
               throw std::invalid_argument("LossMask takes one of mask and prompt_lengths");
             }
             tokens->freeze();
             if (mask != nullptr) {
               mask->freeze();
               return std::make_shared<LossMask>(tokens, mask);
             }
             prompt_lengths->freeze();
             py::gil_scoped_release release;  // checks every row
             return std::make_shared<LossMask>(tokens, prompt_lengths);
           }),
           py::arg("tokens").none(false), py::arg("mask") = py::none(),
           py::arg("prompt_lengths") = py::none(),
           "tokens: the token column; mask: a narrow list column row-aligned with it (its "
           "row lengths checked by the caller), or prompt_lengths: an integer column, every "
           "row checked here (CorpusFormatError for one below 0 or beyond its row). Freezes "
           "the columns.")
      .def_property_readonly("column", &LossMask::column,
                             "The column the mask comes from.");
}

}  // namespace

void register_columns(py::module_& m) {
  register_token_column(m);
  register_scalar_column(m);
  register_loss_mask(m);
  m.def(
      "seeded_permutation",
      [](uint64_t seed, uint64_t stream, int64_t n) {
        if (n < 0) throw std::invalid_argument("n must be >= 0");
        py::array_t<int64_t> out(n);
        int64_t* o = out.mutable_data();
        py::gil_scoped_release release;
        seeded_permutation(seed, stream, n, o);
        return out;
      },
      py::arg("seed"), py::arg("stream"), py::arg("n"),
      "A permutation of range(n) (int64 [n]) that depends only on (seed, stream, n).");
}

}  // namespace arrowloader
