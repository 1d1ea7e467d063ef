// The only translation unit that sees Python. Every function here checks its
// arguments while holding the GIL, takes raw pointers, then releases the GIL
// and calls the core; nothing touches Python after the release.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <array>
#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "arrow_c_abi.h"
#include "blend.h"
#include "columns.h"
#include "errors.h"
#include "packed_batch.h"
#include "padded_batch.h"
#include "permutation.h"
#include "thread_pool.h"

namespace py = pybind11;
using namespace arrowloader;

namespace {

template <typename T>
T* capsule_pointer(const py::object& capsule, const char* name, const char* what) {
  if (!PyCapsule_CheckExact(capsule.ptr())) {
    throw py::type_error(std::string(what) + " must be a PyCapsule from __arrow_c_array__()");
  }
  void* pointer = PyCapsule_GetPointer(capsule.ptr(), name);
  if (pointer == nullptr) throw py::error_already_set();
  return static_cast<T*>(pointer);
}

using Rows = py::array_t<int64_t, py::array::c_style | py::array::forcecast>;

// Checks an output buffer: a writeable, C-contiguous numpy array of exactly
// the given dtype and shape. Never converts: a converted temporary would
// receive the writes and the caller's buffer would stay untouched.
void* output_pointer(const py::handle& obj, const char* name, const py::dtype& dtype,
                     const std::vector<int64_t>& shape) {
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
  bool same = array.ndim() == static_cast<py::ssize_t>(shape.size());
  for (size_t i = 0; same && i < shape.size(); ++i) same = array.shape(i) == shape[i];
  if (!same) {
    std::string want = "[";
    for (size_t i = 0; i < shape.size(); ++i) want += (i ? ", " : "") + std::to_string(shape[i]);
    std::string got = "[";
    for (py::ssize_t i = 0; i < array.ndim(); ++i) {
      got += (i ? ", " : "") + std::to_string(array.shape(i));
    }
    throw std::invalid_argument(std::string(name) + " must have shape " + want + "], got " + got +
                                "]");
  }
  return array.mutable_data();
}

// Everything one batch needs, checked, with the Python objects that own the
// buffers kept alive for as long as native code may write into them.
struct CheckedBatch {
  Rows rows;
  PaddedOutputs outputs;
  py::tuple keepalive;
};

CheckedBatch check_batch(const PaddedBatchAssembler& assembler, const py::object& rows_in,
                         const py::object& input_ids, const py::object& attention_mask,
                         const py::object& causal_labels, const py::object& labels) {
  CheckedBatch batch;
  batch.rows = Rows::ensure(rows_in);
  if (!batch.rows || batch.rows.ndim() != 1) {
    throw std::invalid_argument("rows must be a 1-D sequence of int64 indices");
  }
  const int64_t n = batch.rows.shape(0);
  if (!py::isinstance<py::array>(input_ids)) {
    throw py::type_error("input_ids must be a numpy array (use tensor.numpy())");
  }
  auto ids = py::reinterpret_borrow<py::array>(input_ids);
  if (ids.ndim() != 2) throw std::invalid_argument("input_ids must be 2-D [batch, width]");
  const int64_t width = ids.shape(1);
  py::dtype dtype = ids.dtype();
  PaddedOutputs& out = batch.outputs;
  if (dtype.is(py::dtype::of<int64_t>())) {
    out.type = OutType::kInt64;
  } else if (dtype.is(py::dtype::of<int32_t>())) {
    out.type = OutType::kInt32;
    if (assembler.options().pad_token_id < INT32_MIN || assembler.options().pad_token_id > INT32_MAX) {
      throw std::invalid_argument("pad_token_id does not fit in int32 output");
    }
  } else {
    throw py::type_error("input_ids must have dtype int64 or int32, got " +
                         std::string(py::str(dtype)));
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
    out.labels = static_cast<int64_t*>(
        output_pointer(labels, "labels", py::dtype::of<int64_t>(), {n}));
  }
  batch.keepalive = py::make_tuple(batch.rows, input_ids, attention_mask, causal_labels, labels);
  return batch;
}

struct CheckedPackedBatch {
  Rows blocks;
  PackedOutputs outputs;
  py::tuple keepalive;
};

// `batches` consecutive batches of n / batches blocks each: the outputs hold them back
// to back, cu_seqlens one [n / batches * seq_len + 1] run per batch.
CheckedPackedBatch check_packed_batch(const PackedBatchAssembler& assembler,
                                      const py::object& blocks_in, const py::object& input_ids,
                                      const py::object& labels, const py::object& position_ids,
                                      const py::object& cu_seqlens, int64_t batches = 1) {
  CheckedPackedBatch batch;
  batch.blocks = Rows::ensure(blocks_in);
  if (!batch.blocks || batch.blocks.ndim() != 1) {
    throw std::invalid_argument("blocks must be a 1-D sequence of int64 block indices");
  }
  const int64_t n = batch.blocks.shape(0);
  if (batches < 1 || n % batches != 0) {
    throw std::invalid_argument("batches must be a positive divisor of the " +
                                std::to_string(n) + " blocks, got " + std::to_string(batches));
  }
  const int64_t seq_len = assembler.options().seq_len;
  if (!py::isinstance<py::array>(input_ids)) {
    throw py::type_error("input_ids must be a numpy array (use tensor.numpy())");
  }
  py::dtype dtype = py::reinterpret_borrow<py::array>(input_ids).dtype();
  PackedOutputs& out = batch.outputs;
  if (dtype.is(py::dtype::of<int64_t>())) {
    out.type = OutType::kInt64;
  } else if (dtype.is(py::dtype::of<int32_t>())) {
    out.type = OutType::kInt32;
    const PackOptions& o = assembler.options();
    for (int64_t id : {o.eos_token_id, o.pad_token_id}) {
      if (id < INT32_MIN || id > INT32_MAX) {
        throw std::invalid_argument("eos_token_id and pad_token_id must fit in int32 output");
      }
    }
  } else {
    throw py::type_error("input_ids must have dtype int64 or int32, got " +
                         std::string(py::str(dtype)));
  }
  out.input_ids = output_pointer(input_ids, "input_ids", dtype, {n, seq_len});
  out.labels = output_pointer(labels, "labels", dtype, {n, seq_len});
  if (!position_ids.is_none()) {
    out.position_ids = output_pointer(position_ids, "position_ids", dtype, {n, seq_len});
  }
  if (!cu_seqlens.is_none()) {
    out.cu_seqlens = static_cast<int32_t*>(
        output_pointer(cu_seqlens, "cu_seqlens", py::dtype::of<int32_t>(),
                       {n * seq_len + batches}));
  }
  batch.keepalive = py::make_tuple(batch.blocks, input_ids, labels, position_ids, cu_seqlens);
  return batch;
}

// Raises unless `pool`'s threads exist in this process: a pool started before a fork
// has none in the child, so a job queued there would never run.
void check_owned(const ThreadPool& pool) {
  if (pool.orphaned()) {
    throw std::runtime_error(
        "this loader's threads belong to the parent process; create the iterator after "
        "the fork");
  }
}

// What a queued job reports back: two figures per batch it writes (a job may write
// several consecutive batches), and the first batch whose writing failed. The batches
// before a failure are complete and are handed over; that batch and the ones after it
// raise its error.
struct JobResults {
  explicit JobResults(int64_t batches) : values(static_cast<size_t>(batches), {0, 0}) {}

  // Calls write(j, &values[j]) for j = 0 .. batches - 1 in order, on the worker thread;
  // stops at the first exception and records it.
  template <typename Write>
  void run(const Write& write) {
    for (size_t j = 0; j < values.size(); ++j) {
      try {
        write(static_cast<int64_t>(j), &values[j]);
      } catch (...) {
        failed_at = static_cast<int64_t>(j);
        error = std::current_exception();
        return;
      }
    }
  }

  std::vector<std::array<int64_t, 2>> values;
  int64_t failed_at = -1;
  std::exception_ptr error;
};

// A job (one or more batches) being assembled on a pool. Holds the output buffers
// alive; its destructor cancels the job or waits for it, so native code never writes
// into freed memory whatever order Python drops things in.
class Ticket {
 public:
  Ticket(std::shared_ptr<Job> job, py::tuple keepalive, std::shared_ptr<JobResults> results,
         std::shared_ptr<ThreadPool> pool)
      : job_(std::move(job)),
        keepalive_(std::move(keepalive)),
        results_(std::move(results)),
        pool_(std::move(pool)) {}
  ~Ticket() {
    // In a forked child no thread will ever run or finish the job, and its lock may
    // be held by a thread that no longer exists: leave it alone.
    if (pool_->orphaned()) return;
    // The job never takes the GIL, so waiting here while holding it cannot
    // deadlock; a running job finishes within one batch's work.
    if (!job_->cancel()) job_->wait(-1.0);
  }
  Ticket(const Ticket&) = delete;
  Ticket& operator=(const Ticket&) = delete;

  bool wait(double timeout) {
    check_not_orphaned();
    return wait_interruptibly(timeout);
  }
  int64_t batches() const { return static_cast<int64_t>(results_->values.size()); }
  // Waits up to timeout seconds (negative: forever), then returns the two values of the
  // job's batch `batch` or raises that batch's error (TimeoutError if not done).
  py::tuple result(double timeout, int64_t batch) {
    if (batch < 0 || batch >= batches()) {
      throw py::index_error("batch " + std::to_string(batch) + " of a job of " +
                            std::to_string(batches()) + " batches");
    }
    check_not_orphaned();
    if (!wait_interruptibly(timeout)) {
      std::ostringstream msg;
      msg << "DataLoader timed out after " << timeout << " seconds waiting for a batch";
      throw TimeoutError(msg.str());
    }
    job_->rethrow_if_failed();
    if (results_->failed_at >= 0 && batch >= results_->failed_at) {
      std::rethrow_exception(results_->error);
    }
    const std::array<int64_t, 2>& values = results_->values[static_cast<size_t>(batch)];
    return py::make_tuple(values[0], values[1]);
  }
  bool done() { return job_->done(); }
  void cancel() {
    if (pool_->orphaned()) return;
    if (!job_->cancel()) {
      py::gil_scoped_release release;
      job_->wait(-1.0);
    }
  }

 private:
  // Waits for the job with the GIL released, in slices, running Python's signal
  // handlers between them: Ctrl-C (KeyboardInterrupt) or any handler that raises ends
  // the wait at once, whatever the job is doing. Returns whether the job is done.
  bool wait_interruptibly(double timeout) {
    // A job already done (the usual case when the threads keep ahead of the consumer)
    // needs no wait: skip releasing and re-taking the GIL.
    if (job_->done()) return true;
    constexpr double kSlice = 0.05;  // seconds between signal checks
    using Clock = std::chrono::steady_clock;
    const auto deadline = Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                             std::chrono::duration<double>(std::max(timeout, 0.0)));
    for (;;) {
      double slice = kSlice;
      if (timeout >= 0) {
        const double left = std::chrono::duration<double>(deadline - Clock::now()).count();
        slice = std::max(0.0, std::min(slice, left));
      }
      bool done;
      {
        py::gil_scoped_release release;
        done = job_->wait(slice);
      }
      if (done) return true;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
      if (timeout >= 0 && Clock::now() >= deadline) return false;
    }
  }

  void check_not_orphaned() const {
    if (pool_->orphaned()) {
      throw std::runtime_error(
          "this batch was being assembled by threads of the parent process, which do not "
          "exist after a fork; create the iterator in the process that uses it");
    }
  }

  std::shared_ptr<Job> job_;
  py::tuple keepalive_;
  std::shared_ptr<JobResults> results_;
  std::shared_ptr<ThreadPool> pool_;
};

void register_errors(py::module_& m) {
  // Concrete Python classes live in arrowloader.errors (they inherit both
  // ArrowLoaderError and a builtin); native exceptions are mapped onto them.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CorpusFormatError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("CorpusFormatError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const CancelledError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("LoaderClosedError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const TimeoutError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("LoaderTimeoutError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "Native core of arrowloader: zero-copy Arrow column views, batch assembly and a "
      "thread pool. Internal; use the arrowloader package.";
  register_errors(m);

  py::class_<TokenColumn, std::shared_ptr<TokenColumn>>(
      m, "TokenColumn",
      "A list<int32|int64|uint16|uint32> (or large_list) column spread over many Arrow "
      "arrays, read in place.")
      .def(py::init<std::string>(), py::arg("name"))
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
          "truncation_loss",
          [](const TokenColumn& self, int64_t max_length) {
            py::gil_scoped_release release;
            return self.truncation_loss(max_length);
          },
          py::arg("max_length"),
          "(tokens, rows) that truncating every row to max_length would drop / shorten.");

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

  py::class_<ThreadPool, std::shared_ptr<ThreadPool>>(
      m, "ThreadPool", "Native threads that assemble batches with the GIL released.")
      .def(py::init<int, const std::string&>(), py::arg("num_threads"),
           py::arg("name") = "arrowloader",
           "Start num_threads threads named '<name>-<i>'.")
      .def(
          "shutdown",
          [](ThreadPool& self) {
            py::gil_scoped_release release;
            self.shutdown();
          },
          "Cancel queued batches and join the threads (running ones finish). Idempotent.")
      .def_property_readonly("num_threads", &ThreadPool::num_threads)
      .def(
          "submit_sleep",
          [](const std::shared_ptr<ThreadPool>& pool, double seconds) {
            if (!(seconds >= 0)) throw std::invalid_argument("seconds must be >= 0");
            if (pool->orphaned()) {
              throw std::runtime_error("this pool's threads belong to the parent process");
            }
            auto results = std::make_shared<JobResults>(1);
            auto job = std::make_shared<Job>([seconds] {
              std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
            });
            auto ticket = std::make_unique<Ticket>(job, py::tuple(), results, pool);
            pool->submit(job);
            return ticket;
          },
          py::arg("seconds"),
          "Queue a job that only sleeps `seconds` (a batch that takes that long, for tests "
          "of waiting, timeouts, cancellation and interrupts); returns its Ticket.");

  py::class_<Ticket, std::unique_ptr<Ticket>>(
      m, "Ticket", "A batch being assembled; keeps its output buffers alive until done.")
      .def("wait", [](Ticket& self, std::optional<double> timeout) {
             return self.wait(timeout.has_value() ? *timeout : -1.0);
           },
           py::arg("timeout") = py::none(),
           "Wait (GIL released) up to timeout seconds (None: forever); return whether done.")
      .def("result", [](Ticket& self, std::optional<double> timeout, int64_t batch) {
             return self.result(timeout.has_value() ? *timeout : -1.0, batch);
           },
           py::arg("timeout") = py::none(), py::arg("batch") = 0,
           "Wait up to timeout seconds (None: forever), then return the two figures of the "
           "job's batch `batch` or raise its error (LoaderTimeoutError when not done in "
           "time). Padded batches: (truncated tokens, 0); packed: (cu_seqlens entries, "
           "max_seqlen).")
      .def_property_readonly("batches", &Ticket::batches, "Batches the job writes.")
      .def("cancel", &Ticket::cancel, "Cancel if not started, else wait for it to finish.")
      .def_property_readonly("done", &Ticket::done);

  py::class_<PaddedBatchAssembler, std::shared_ptr<PaddedBatchAssembler>>(
      m, "PaddedBatchAssembler",
      "Gathers, truncates and pads batches of token rows into caller-owned buffers.")
      .def(py::init([](std::shared_ptr<TokenColumn> tokens, std::shared_ptr<ScalarColumn> labels,
                       int64_t max_length, bool truncate_left, bool pad_left,
                       bool pad_to_max_length, int64_t pad_to_multiple_of, int64_t pad_token_id,
                       int64_t label_pad_id) {
             tokens->freeze();
             if (labels) labels->freeze();
             PadOptions options{max_length,         truncate_left, pad_left,
                                pad_to_max_length, pad_to_multiple_of,
                                pad_token_id,       label_pad_id};
             return std::make_shared<PaddedBatchAssembler>(tokens, labels, options);
           }),
           py::arg("tokens"), py::arg("labels") = py::none(), py::arg("max_length") = -1,
           py::arg("truncate_left") = false, py::arg("pad_left") = false,
           py::arg("pad_to_max_length") = false, py::arg("pad_to_multiple_of") = 0,
           py::arg("pad_token_id") = 0, py::arg("label_pad_id") = -100,
           "max_length < 0 keeps whole rows; pad_to_multiple_of 0 does not round. Freezes the "
           "columns.")
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
          "assemble",
          [](const PaddedBatchAssembler& self, const py::object& rows,
             const py::object& input_ids, const py::object& attention_mask,
             const py::object& causal_labels, const py::object& labels) {
            CheckedBatch batch =
                check_batch(self, rows, input_ids, attention_mask, causal_labels, labels);
            const int64_t* r = batch.rows.data();
            const int64_t n = batch.rows.shape(0);
            py::gil_scoped_release release;
            return self.assemble(r, n, batch.outputs);
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
            CheckedBatch batch =
                check_batch(*self, rows, input_ids, attention_mask, causal_labels, labels);
            const int64_t* r = batch.rows.data();
            const int64_t n = batch.rows.shape(0);
            auto results = std::make_shared<JobResults>(1);
            auto job = std::make_shared<Job>([self, r, n, out = batch.outputs, results] {
              results->run([&](int64_t, std::array<int64_t, 2>* values) {
                (*values)[0] = self->assemble(r, n, out);
              });
            });
            check_owned(*pool);
            auto ticket = std::make_unique<Ticket>(job, batch.keepalive, results, pool);
            pool->submit(job);
            return ticket;
          },
          py::arg("pool"), py::arg("rows"), py::arg("input_ids").noconvert(),
          py::arg("attention_mask").noconvert() = py::none(),
          py::arg("causal_labels").noconvert() = py::none(),
          py::arg("labels").noconvert() = py::none(),
          "Like assemble(), but queued on pool; returns a Ticket.")
      .def(
          "submit_batches",
          [](const std::shared_ptr<PaddedBatchAssembler>& self,
             const std::shared_ptr<ThreadPool>& pool, const py::sequence& batches) {
            const auto count = static_cast<int64_t>(py::len(batches));
            if (count < 1) throw std::invalid_argument("submit_batches needs at least one batch");
            std::vector<CheckedBatch> checked;
            checked.reserve(static_cast<size_t>(count));
            py::list keepalive;
            for (const py::handle& item : batches) {
              py::tuple args = py::reinterpret_borrow<py::object>(item).cast<py::tuple>();
              if (args.size() != 5) {
                throw std::invalid_argument(
                    "each batch is (rows, input_ids, attention_mask, causal_labels, labels)");
              }
              checked.push_back(check_batch(*self, args[0], args[1], args[2], args[3], args[4]));
              keepalive.append(checked.back().keepalive);
            }
            check_owned(*pool);
            struct Planned {
              const int64_t* rows;
              int64_t n;
              PaddedOutputs out;
            };
            std::vector<Planned> planned;
            for (const CheckedBatch& batch : checked) {
              planned.push_back({batch.rows.data(), batch.rows.shape(0), batch.outputs});
            }
            auto results = std::make_shared<JobResults>(count);
            auto job = std::make_shared<Job>([self, planned = std::move(planned), results] {
              results->run([&](int64_t j, std::array<int64_t, 2>* values) {
                const Planned& batch = planned[static_cast<size_t>(j)];
                (*values)[0] = self->assemble(batch.rows, batch.n, batch.out);
              });
            });
            auto ticket =
                std::make_unique<Ticket>(job, py::tuple(std::move(keepalive)), results, pool);
            pool->submit(job);
            return ticket;
          },
          py::arg("pool"), py::arg("batches"),
          "Queue several batches as one job: batches is a sequence of (rows, input_ids, "
          "attention_mask, causal_labels, labels) tuples, each as submit() takes them. "
          "Returns a Ticket whose result(batch=j) is batch j's (truncated tokens, 0).")
      .def(
          "gather",
          [](const PaddedBatchAssembler& self, const Rows& rows, const py::dtype& dtype) {
            const int64_t n = rows.shape(0);
            const int64_t* r = rows.data();
            py::array_t<int64_t> lengths(n);
            int64_t* len = lengths.mutable_data();
            int64_t total = 0;
            {
              py::gil_scoped_release release;
              for (int64_t i = 0; i < n; ++i) total += (len[i] = self.kept_length(r[i]));
            }
            OutType type;
            if (dtype.is(py::dtype::of<int64_t>())) {
              type = OutType::kInt64;
            } else if (dtype.is(py::dtype::of<int32_t>())) {
              type = OutType::kInt32;
            } else {
              throw py::type_error("dtype must be int64 or int32");
            }
            py::array flat(dtype, std::vector<py::ssize_t>{total});
            void* data = flat.mutable_data();
            {
              py::gil_scoped_release release;
              self.gather(r, n, type, data);
            }
            return py::make_tuple(flat, lengths);
          },
          py::arg("rows"), py::arg("dtype"),
          "Kept (truncated, unpadded) tokens of rows (int64 [n]) back to back: returns "
          "(flat: dtype [sum(lengths)], lengths: int64 [n]).")
      .def_property_readonly("truncated_tokens", &PaddedBatchAssembler::truncated_tokens,
                             "Tokens dropped by truncation in gather() calls so far.")
      .def_property_readonly("num_rows", &PaddedBatchAssembler::num_rows);

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

  py::class_<PackPlan, std::shared_ptr<PackPlan>>(
      m, "PackPlan", "The blocks of one packed epoch, for one document order.")
      .def_property_readonly("num_blocks", &PackPlan::num_blocks)
      .def_property_readonly("dropped_tokens", &PackPlan::dropped_tokens,
                             "Tokens (EOS included) left out of every block: the concat tail.");

  py::class_<PackedBatchAssembler, std::shared_ptr<PackedBatchAssembler>>(
      m, "PackedBatchAssembler",
      "Packs documents (each followed by EOS) into rows of seq_len + 1 tokens and writes "
      "batches of them.")
      .def(py::init([](std::shared_ptr<TokenColumn> tokens, int64_t seq_len, int64_t eos_token_id,
                       bool bestfit, bool mask_across_documents, int64_t pad_token_id,
                       int64_t label_pad_id) {
             tokens->freeze();
             PackOptions options{seq_len,      eos_token_id, bestfit, mask_across_documents,
                                 pad_token_id, label_pad_id};
             return std::make_shared<PackedBatchAssembler>(tokens, options);
           }),
           py::arg("tokens"), py::arg("seq_len"), py::arg("eos_token_id"),
           py::arg("bestfit") = false, py::arg("mask_across_documents") = false,
           py::arg("pad_token_id") = 0, py::arg("label_pad_id") = -100,
           "bestfit=False packs in 'concat' mode. Freezes the column.")
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
            CheckedPackedBatch batch =
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
            check_owned(*pool);
            const int64_t* b = batch.blocks.data();
            const int64_t rows = batch.blocks.shape(0) / batches;
            auto results = std::make_shared<JobResults>(batches);
            std::shared_ptr<const PackPlan> held = plan;
            auto job = std::make_shared<Job>([self, held, b, rows, out = batch.outputs, results] {
              const int64_t S = self->options().seq_len;
              const int64_t item = out.type == OutType::kInt64 ? 8 : 4;
              results->run([&](int64_t j, std::array<int64_t, 2>* values) {
                // Batch j: rows [j * rows, (j + 1) * rows) of the outputs.
                const int64_t row_bytes = j * rows * S * item;
                auto shift = [row_bytes](void* p) {
                  return p == nullptr ? nullptr : static_cast<char*>(p) + row_bytes;
                };
                PackedOutputs mine{out.type, shift(out.input_ids), shift(out.labels),
                                   shift(out.position_ids),
                                   out.cu_seqlens == nullptr
                                       ? nullptr
                                       : out.cu_seqlens + j * (rows * S + 1)};
                const PackedBatchInfo info = self->assemble(*held, b + j * rows, rows, mine);
                *values = {info.cu_seqlens_length, info.max_seqlen};
              });
            });
            auto ticket = std::make_unique<Ticket>(job, batch.keepalive, results, pool);
            pool->submit(job);
            return ticket;
          },
          py::arg("pool"), py::arg("plan"), py::arg("blocks"), py::arg("input_ids").noconvert(),
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
            Rows blocks = Rows::ensure(blocks_in);
            if (!blocks || blocks.ndim() != 1) {
              throw std::invalid_argument("blocks must be a 1-D sequence of int64 block indices");
            }
            const int64_t* b = blocks.data();
            const int64_t n = blocks.shape(0);
            py::gil_scoped_release release;
            return self.prefetch(plan, b, n);
          },
          py::arg("plan"), py::arg("blocks"),
          "Ask the kernel to start reading the token pages of blocks (int64 [n]) of plan "
          "(MADV_WILLNEED); returns the bytes of pages advised. Raises IndexError for a "
          "block outside the plan.");

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
        CheckedPackedBatch batch =
            check_packed_batch(*sources[0], blocks, input_ids, labels, position_ids, cu_seqlens);
        Rows plan_of_row = Rows::ensure(plan_of_row_in);
        if (!plan_of_row || plan_of_row.ndim() != 1 ||
            plan_of_row.shape(0) != batch.blocks.shape(0)) {
          throw std::invalid_argument("plan_of_row must be int64 [n], one per block");
        }
        check_owned(*pool);
        const int64_t* b = batch.blocks.data();
        const int64_t* p = plan_of_row.data();
        const int64_t n = batch.blocks.shape(0);
        auto results = std::make_shared<JobResults>(1);
        auto job = std::make_shared<Job>([sources, plans, p, b, n, out = batch.outputs, results] {
          results->run([&](int64_t, std::array<int64_t, 2>* values) {
            std::vector<const PackedBatchAssembler*> raw_sources;
            std::vector<const PackPlan*> raw_plans;
            for (const auto& source : sources) raw_sources.push_back(source.get());
            for (const auto& plan : plans) raw_plans.push_back(plan.get());
            const PackedBatchInfo info = assemble_mixed(raw_sources, raw_plans, p, b, n, out);
            *values = {info.cu_seqlens_length, info.max_seqlen};
          });
        });
        py::tuple keepalive = py::make_tuple(batch.keepalive, plan_of_row);
        auto ticket = std::make_unique<Ticket>(job, keepalive, results, pool);
        pool->submit(job);
        return ticket;
      },
      py::arg("pool"), py::arg("sources"), py::arg("plans"), py::arg("plan_of_row"),
      py::arg("blocks"), py::arg("input_ids").noconvert(), py::arg("labels").noconvert(),
      py::arg("position_ids").noconvert() = py::none(),
      py::arg("cu_seqlens").noconvert() = py::none(),
      "Queue a batch whose row r is block blocks[r] of plans[plan_of_row[r]], packed by "
      "sources[plan_of_row[r]] (int64 [n] each); outputs as PackedBatchAssembler.submit. "
      "Returns a Ticket whose result() is (cu_seqlens entries, max_seqlen).");
}
