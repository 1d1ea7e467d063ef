// Argument checks shared by the binding files (bind_*.cpp), the only translation units
// that include pybind11. Each runs with the GIL held and raises before any native work
// starts. A checked batch keeps the Python objects that own its buffers, so native code
// may write into them for as long as the batch, or the Ticket it is handed to, lives.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <initializer_list>
#include <string>

#include "packed_batch.h"
#include "padded_batch.h"

namespace arrowloader {

namespace py = pybind11;

// Rows, blocks and orders: int64 indices, C-contiguous; any integer sequence converts.
using Rows = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// The struct inside an Arrow C data interface PyCapsule called `name` (the two of
// __arrow_c_array__()); `what` names the argument in the TypeError.
template <typename T>
T* capsule_pointer(const py::object& capsule, const char* name, const char* what) {
  if (!PyCapsule_CheckExact(capsule.ptr())) {
    throw py::type_error(std::string(what) + " must be a PyCapsule from __arrow_c_array__()");
  }
  void* pointer = PyCapsule_GetPointer(capsule.ptr(), name);
  if (pointer == nullptr) throw py::error_already_set();
  return static_cast<T*>(pointer);
}

// `indices` as 1-D int64; ValueError(`message`) for anything that is not.
Rows index_array(const py::object& indices, const char* message);

// Checks an output buffer: a writeable, C-contiguous numpy array of exactly the given
// dtype and shape, named `name` in the error. Never converts: a converted temporary
// would receive the writes and the caller's buffer would stay untouched.
void* output_pointer(const py::handle& obj, const char* name, const py::dtype& dtype,
                     std::initializer_list<int64_t> shape);

// The output element type of `dtype`, int64 or int32; any other raises
// TypeError("<expected>, got <dtype>").
OutType out_type(const py::dtype& dtype, const char* expected);

struct CheckedPaddedBatch {
  Rows rows;
  PaddedOutputs outputs;
  py::tuple keepalive;

  PaddedBatch batch() const { return {rows.data(), rows.shape(0), outputs}; }
};

// The arguments of PaddedBatchAssembler.assemble() / submit() for `assembler`.
CheckedPaddedBatch check_padded_batch(const PaddedBatchAssembler& assembler,
                                      const py::object& rows, const py::object& input_ids,
                                      const py::object& attention_mask,
                                      const py::object& causal_labels, const py::object& labels);

struct CheckedPackedBatch {
  Rows blocks;
  PackedOutputs outputs;
  py::tuple keepalive;
};

// The arguments of PackedBatchAssembler.assemble() / submit() for `assembler`: `batches`
// consecutive batches of n / batches blocks each, held back to back by the outputs,
// cu_seqlens one [n / batches * seq_len + 1] run per batch.
CheckedPackedBatch check_packed_batch(const PackedBatchAssembler& assembler,
                                      const py::object& blocks, const py::object& input_ids,
                                      const py::object& labels, const py::object& position_ids,
                                      const py::object& cu_seqlens, int64_t batches = 1);

}  // namespace arrowloader
