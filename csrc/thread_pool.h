// A fixed pool of named native threads running Jobs in submission order.
//
// A Job is one unit of work with its own completion state, so a consumer can
// wait for exactly the batch it needs next while later ones are still being
// assembled. Exceptions thrown by the work are caught on the worker thread and
// rethrown by Job::rethrow_if_failed() on the waiting thread: an exception that
// escaped a std::thread would terminate the process.
#pragma once

#include <condition_variable>
#include <deque>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace arrowloader {

class Job {
 public:
  explicit Job(std::function<void()> work) : work_(std::move(work)) {}

  // Runs the work unless the job was cancelled first; never throws.
  void run();
  // Marks a job that has not started as cancelled and done. A job already
  // running is left to finish. Returns true if the work will never run.
  bool cancel();
  // Waits until the job is done; a negative timeout waits forever. Returns
  // whether it is done.
  bool wait(double timeout_seconds);
  bool done();
  // Rethrows the work's exception, or CancelledError if it was cancelled.
  void rethrow_if_failed();

 private:
  enum class State { kQueued, kRunning, kDone };

  std::function<void()> work_;
  std::mutex mutex_;
  std::condition_variable cv_;
  State state_ = State::kQueued;
  bool cancelled_ = false;
  std::exception_ptr error_;
};

class ThreadPool {
 public:
  // Starts `num_threads` threads named "<name>-<i>" (visible in top/gdb).
  ThreadPool(int num_threads, const std::string& name);
  // Cancels queued jobs and joins the threads (jobs already running finish).
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void submit(std::shared_ptr<Job> job);
  // Same as the destructor, callable early; idempotent.
  void shutdown();
  int num_threads() const { return state_ ? static_cast<int>(state_->threads.size()) : 0; }
  // True in a process forked after this pool started: its threads do not exist there,
  // and a lock one of them held at the fork stays locked forever.
  bool orphaned() const;

 private:
  // Everything the threads touch. In a forked child it is leaked, not destroyed: the
  // condition variable still counts the parent's waiting threads, and glibc's
  // pthread_cond_destroy would wait for them forever.
  struct State {
    std::mutex mutex;
    std::condition_variable cv;
    std::deque<std::shared_ptr<Job>> queue;
    bool stopping = false;
    std::vector<std::thread> threads;
  };

  static void worker_loop(State* state);

  std::unique_ptr<State> state_;
  const long owner_pid_;
};

}  // namespace arrowloader
