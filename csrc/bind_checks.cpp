#include "bind_checks.h"

#include <climits>
#include <stdexcept>
#include <vector>

namespace arrowloader {

namespace {

bool fits_int32(int64_t value) { return value >= INT32_MIN && value <= INT32_MAX; }

std::string shape_text(const int64_t* sizes, size_t n) {
  std::string text = "[";
  for (size_t i = 0; i < n; ++i) text += (i ? ", " : "") + std::to_string(sizes[i]);
  return text + "]";
}

// input_ids, whose dtype the other token outputs share.
py::array input_ids_array(const py::object& input_ids) {
  if (!py::isinstance<py::array>(input_ids)) {
    throw py::type_error("input_ids must be a numpy array (use tensor.numpy())");
  }
  return py::reinterpret_borrow<py::array>(input_ids);
}

constexpr const char* kInputIdsTypes = "input_ids must have dtype int64 or int32";

}  // namespace

Rows index_array(const py::object& indices, const char* message) {
  Rows rows = Rows::ensure(indices);
  if (!rows || rows.ndim() != 1) throw std::invalid_argument(message);
  return rows;
}

void* output_pointer(const py::handle& obj, const char* name, const py::dtype& dtype,
                     std::initializer_list<int64_t> shape) {
  if (!py::isinstance<py::array>(obj)) {
    throw py::type_error(std::string(name) + " must be a numpy array (use tensor.numpy()), got " +
                         std::string(py::str(py::type::of(obj))));
  }
  auto array = py::reinterpret_borrow<py::array>(obj);
  if (!array.dtype().is(dtype)) {
    throw py::type_error(std::string(name) + " must have dtype " + std::string(py::str(dtype)) +
                         ", got " + std::string(py::str(array.dtype())));
  }
  if (!array.writeable()) throw std::invalid_argument(std::string(name) + " is read-only");
  if (!(array.flags() & py::array::c_style)) {
    throw std::invalid_argument(std::string(name) + " must be C-contiguous");
  }
  const int64_t* want = shape.begin();
  bool same = array.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = array.shape(i) == want[i];
  if (!same) {
    std::vector<int64_t> got(array.shape(), array.shape() + array.ndim());
    throw std::invalid_argument(std::string(name) + " must have shape " +
                                shape_text(want, shape.size()) + ", got " +
                                shape_text(got.data(), got.size()));
  }
  return array.mutable_data();
}

OutType out_type(const py::dtype& dtype, const char* expected) {
  if (dtype.is(py::dtype::of<int64_t>())) return OutType::kInt64;
  if (dtype.is(py::dtype::of<int32_t>())) return OutType::kInt32;
  throw py::type_error(std::string(expected) + ", got " + std::string(py::str(dtype)));
}

CheckedPaddedBatch check_padded_batch(const PaddedBatchAssembler& assembler,
                                      const py::object& rows, const py::object& input_ids,
                                      const py::object& attention_mask,
                                      const py::object& causal_labels, const py::object& labels) {
  CheckedPaddedBatch batch;
  batch.rows = index_array(rows, "rows must be a 1-D sequence of int64 indices");
  const int64_t n = batch.rows.shape(0);
  const py::array ids = input_ids_array(input_ids);
  if (ids.ndim() != 2) throw std::invalid_argument("input_ids must be 2-D [batch, width]");
  const int64_t width = ids.shape(1);
  const py::dtype dtype = ids.dtype();
  PaddedOutputs& out = batch.outputs;
  out.type = out_type(dtype, kInputIdsTypes);
  if (out.type == OutType::kInt32 && !fits_int32(assembler.options().pad_token_id)) {
    throw std::invalid_argument("pad_token_id does not fit in int32 output");
  }
  out.width = width;
  out.input_ids = output_pointer(input_ids, "input_ids", dtype, {n, width});
  if (!attention_mask.is_none()) {
    out.attention_mask = output_pointer(attention_mask, "attention_mask", dtype, {n, width});
  }
  if (!causal_labels.is_none()) {
    out.causal_labels = output_pointer(causal_labels, "causal_labels", dtype, {n, width});
  }
  if (!labels.is_none()) {
    if (!assembler.has_labels()) {
      throw std::invalid_argument("labels given but the assembler has no label column");
    }
    out.labels =
        static_cast<int64_t*>(output_pointer(labels, "labels", py::dtype::of<int64_t>(), {n}));
  }
  batch.keepalive = py::make_tuple(batch.rows, input_ids, attention_mask, causal_labels, labels);
  return batch;
}

CheckedPackedBatch check_packed_batch(const PackedBatchAssembler& assembler,
                                      const py::object& blocks, const py::object& input_ids,
                                      const py::object& labels, const py::object& position_ids,
                                      const py::object& cu_seqlens, int64_t batches) {
  CheckedPackedBatch batch;
  batch.blocks = index_array(blocks, "blocks must be a 1-D sequence of int64 block indices");
  const int64_t n = batch.blocks.shape(0);
  check_batches_divide(n, batches);
  const PackOptions& options = assembler.options();
  const int64_t seq_len = options.seq_len;
  const py::dtype dtype = input_ids_array(input_ids).dtype();
  PackedOutputs& out = batch.outputs;
  out.type = out_type(dtype, kInputIdsTypes);
  if (out.type == OutType::kInt32 &&
      !(fits_int32(options.eos_token_id) && fits_int32(options.pad_token_id))) {
    throw std::invalid_argument("eos_token_id and pad_token_id must fit in int32 output");
  }
  out.input_ids = output_pointer(input_ids, "input_ids", dtype, {n, seq_len});
  out.labels = output_pointer(labels, "labels", dtype, {n, seq_len});
  if (!position_ids.is_none()) {
    out.position_ids = output_pointer(position_ids, "position_ids", dtype, {n, seq_len});
  }
  if (!cu_seqlens.is_none()) {
    out.cu_seqlens = static_cast<int32_t*>(output_pointer(
        cu_seqlens, "cu_seqlens", py::dtype::of<int32_t>(), {n * seq_len + batches}));
  }
  batch.keepalive = py::make_tuple(batch.blocks, input_ids, labels, position_ids, cu_seqlens);
  return batch;
}

}  // namespace arrowloader
