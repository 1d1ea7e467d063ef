// A job: one or more batches written in order by one pool thread, with its own
// completion state, so a consumer can wait for exactly the job it needs next while
// later ones are still being assembled.
//
// Every batch reports two figures (padded batches: truncated tokens and 0; packed
// batches: cu_seqlens entries and the longest segment). The first batch that throws
// ends the job: the batches before it are complete and are handed over, that batch and
// the ones after it raise its exception. Exceptions are caught on the worker thread and
// rethrown by result() on the waiting thread: an exception that escaped a std::thread
// would terminate the process.
#pragma once

#include <array>
#include <condition_variable>
#include <cstdint>
#include <exception>
#include <memory>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

namespace arrowloader {

using BatchFigures = std::array<int64_t, 2>;

class Job {
 public:
  virtual ~Job() = default;
  Job(const Job&) = delete;
  Job& operator=(const Job&) = delete;

  int64_t batches() const { return static_cast<int64_t>(figures_.size()); }
  // Writes the batches unless the job was cancelled first; never throws.
  void run();
  // Marks a job that has not started as cancelled and done. A job already running is
  // left to finish. Returns true if the work will never run.
  bool cancel();
  // Waits until the job is done; a negative timeout waits forever. Returns whether it
  // is done.
  bool wait(double timeout_seconds);
  bool done();
  // Throws std::out_of_range unless 0 <= batch < batches().
  void check_batch(int64_t batch) const;
  // The figures of batch `batch` of a done job. Throws CancelledError if the job was
  // cancelled, and the exception of the first batch that failed for that batch and
  // every one after it.
  BatchFigures result(int64_t batch);

 protected:
  explicit Job(int64_t batches);

 private:
  // Writes batch `batch`; throws on failure.
  virtual BatchFigures write(int64_t batch) = 0;
  // Drops what the work holds once it will not run again, so the owners of its
  // buffers go as soon as the job is done, not when the last waiter lets go of it.
  virtual void release() noexcept = 0;

  enum class State { kQueued, kRunning, kDone };

  std::vector<BatchFigures> figures_;
  std::mutex mutex_;
  std::condition_variable cv_;
  State state_ = State::kQueued;
  bool cancelled_ = false;
  int64_t failed_at_ = -1;
  std::exception_ptr error_;
};

// A job whose batch j is written by write(j) -> BatchFigures. The work is held by
// value: one allocation for the job and one for its figures, whatever it captures.
template <typename Write>
class BatchJob final : public Job {
 public:
  BatchJob(int64_t batches, Write write) : Job(batches), write_(std::move(write)) {}

 private:
  BatchFigures write(int64_t batch) override { return (*write_)(batch); }
  void release() noexcept override { write_.reset(); }

  std::optional<Write> write_;
};

template <typename Write>
std::shared_ptr<Job> make_job(int64_t batches, Write write) {
  return std::make_shared<BatchJob<Write>>(batches, std::move(write));
}

}  // namespace arrowloader
