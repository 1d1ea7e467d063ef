// ThreadPool and Ticket.
#include "bind_pool.h"

#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>

#include "bindings.h"
#include "errors.h"

namespace arrowloader {

Ticket::~Ticket() {
  // In a forked child no thread will ever run or finish the job, and its lock may
  // be held by a thread that no longer exists: leave it alone.
  if (pool_->orphaned()) return;
  // The job never takes the GIL, so waiting here while holding it cannot
  // deadlock; a running job finishes within one batch's work.
  if (!job_->cancel()) job_->wait(-1.0);
}

bool Ticket::wait(double timeout) {
  check_not_orphaned();
  return wait_interruptibly(timeout);
}

py::tuple Ticket::result(double timeout, int64_t batch) {
  job_->check_batch(batch);
  check_not_orphaned();
  if (!wait_interruptibly(timeout)) {
    std::ostringstream msg;
    msg << "DataLoader timed out after " << timeout << " seconds waiting for a batch";
    throw TimeoutError(msg.str());
  }
  const BatchFigures figures = job_->result(batch);
  return py::make_tuple(figures[0], figures[1]);
}

void Ticket::cancel() {
  if (pool_->orphaned()) return;
  if (!job_->cancel()) {
    py::gil_scoped_release release;
    job_->wait(-1.0);
  }
}

// Waits for the job with the GIL released, in slices, running Python's signal
// handlers between them: Ctrl-C (KeyboardInterrupt) or any handler that raises ends
// the wait at once, whatever the job is doing. Returns whether the job is done.
bool Ticket::wait_interruptibly(double timeout) {
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

void Ticket::check_not_orphaned() const {
  if (pool_->orphaned()) {
    throw std::runtime_error(
        "this batch was being assembled by threads of the parent process, which do not "
        "exist after a fork; create the iterator in the process that uses it");
  }
}

std::unique_ptr<Ticket> submit_job(const std::shared_ptr<ThreadPool>& pool,
                                   std::shared_ptr<Job> job, py::object keepalive) {
  // A pool started before a fork has no threads in the child: a job queued there
  // would never run.
  if (pool->orphaned()) {
    throw std::runtime_error(
        "this loader's threads belong to the parent process; create the iterator after "
        "the fork");
  }
  auto ticket = std::make_unique<Ticket>(job, std::move(keepalive), pool);
  pool->submit(std::move(job));
  return ticket;
}

void register_pool(py::module_& m) {
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
      .def_property_readonly("num_threads", &ThreadPool::num_threads);

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
}

}  // namespace arrowloader
