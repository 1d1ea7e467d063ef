// A fixed pool of named native threads running Jobs (job.h) in submission order.
#pragma once

#include <condition_variable>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace arrowloader {

class Job;

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
