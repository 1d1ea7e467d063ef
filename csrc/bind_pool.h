// Python's handle on queued work: a Ticket owns one Job (job.h) and the Python objects
// that own its buffers. submit_job() is the one way a binding queues work on a pool.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <memory>

#include "job.h"
#include "thread_pool.h"

namespace arrowloader {

namespace py = pybind11;

// A job (one or more batches) being assembled on a pool. Holds the output buffers
// alive; its destructor cancels the job or waits for it, so native code never writes
// into freed memory whatever order Python drops things in.
class Ticket {
 public:
  Ticket(std::shared_ptr<Job> job, py::object keepalive, std::shared_ptr<ThreadPool> pool)
      : job_(std::move(job)), keepalive_(std::move(keepalive)), pool_(std::move(pool)) {}
  ~Ticket();
  Ticket(const Ticket&) = delete;
  Ticket& operator=(const Ticket&) = delete;

  // Waits (GIL released) up to timeout seconds (negative: forever); returns whether done.
  bool wait(double timeout);
  // Waits up to timeout seconds (negative: forever), then returns the two figures of the
  // job's batch `batch` or raises that batch's error (TimeoutError if not done). A job
  // already done is answered without releasing the GIL.
  py::tuple result(double timeout, int64_t batch);
  int64_t batches() const { return job_->batches(); }
  bool done() { return job_->done(); }
  // Cancels the job if it has not started, else waits (GIL released) for it to finish.
  void cancel();

 private:
  bool wait_interruptibly(double timeout);
  void check_not_orphaned() const;

  std::shared_ptr<Job> job_;
  py::object keepalive_;
  std::shared_ptr<ThreadPool> pool_;
};

// Queues `job` on `pool` and returns its Ticket, which keeps `keepalive` (the owners of
// the job's buffers) alive. Raises if the pool's threads belong to a parent process.
std::unique_ptr<Ticket> submit_job(const std::shared_ptr<ThreadPool>& pool,
                                   std::shared_ptr<Job> job, py::object keepalive);

}  // namespace arrowloader
