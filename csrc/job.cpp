#include "job.h"

#include <chrono>
#include <stdexcept>
#include <string>

#include "errors.h"

namespace arrowloader {

Job::Job(int64_t batches) {
  if (batches < 1) {
    throw std::invalid_argument("a job writes at least one batch, got " +
                                std::to_string(batches));
  }
  figures_.assign(static_cast<size_t>(batches), BatchFigures{0, 0});
}

void Job::run() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cancelled_) return;  // cancel() already marked it done
    state_ = State::kRunning;
  }
  // Only this thread touches figures_ until the job is marked done; a waiter reads
  // them after seeing kDone under the lock.
  int64_t failed_at = -1;
  std::exception_ptr error;
  for (size_t j = 0; j < figures_.size(); ++j) {
    try {
      figures_[j] = write(static_cast<int64_t>(j));
    } catch (...) {
      failed_at = static_cast<int64_t>(j);
      error = std::current_exception();
      break;
    }
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    failed_at_ = failed_at;
    error_ = error;
    state_ = State::kDone;
    release();
  }
  cv_.notify_all();
}

bool Job::cancel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != State::kQueued) return state_ == State::kDone && cancelled_;
    cancelled_ = true;
    state_ = State::kDone;
    release();
  }
  cv_.notify_all();
  return true;
}

bool Job::wait(double timeout_seconds) {
  std::unique_lock<std::mutex> lock(mutex_);
  auto is_done = [this] { return state_ == State::kDone; };
  if (timeout_seconds < 0) {
    cv_.wait(lock, is_done);
    return true;
  }
  return cv_.wait_for(lock, std::chrono::duration<double>(timeout_seconds), is_done);
}

bool Job::done() {
  std::lock_guard<std::mutex> lock(mutex_);
  return state_ == State::kDone;
}

void Job::check_batch(int64_t batch) const {
  if (batch < 0 || batch >= batches()) {
    throw std::out_of_range("batch " + std::to_string(batch) + " of a job of " +
                            std::to_string(batches()) + " batches");
  }
}

BatchFigures Job::result(int64_t batch) {
  check_batch(batch);
  std::lock_guard<std::mutex> lock(mutex_);
  if (state_ != State::kDone) throw std::logic_error("Job::result() before the job is done");
  if (cancelled_) throw CancelledError("the batch was cancelled because its loader was closed");
  if (failed_at_ >= 0 && batch >= failed_at_) std::rethrow_exception(error_);
  return figures_[static_cast<size_t>(batch)];
}

}  // namespace arrowloader
