#include "thread_pool.h"

#include <pthread.h>
#include <unistd.h>

#include <chrono>
#include <stdexcept>

#include "errors.h"

namespace arrowloader {

void Job::run() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (cancelled_) return;  // cancel() already marked it done
    state_ = State::kRunning;
  }
  std::exception_ptr error;
  try {
    work_();
  } catch (...) {
    error = std::current_exception();
  }
  {
    std::lock_guard<std::mutex> lock(mutex_);
    error_ = error;
    state_ = State::kDone;
    work_ = nullptr;  // drop captured state promptly
  }
  cv_.notify_all();
}

bool Job::cancel() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (state_ != State::kQueued) return state_ == State::kDone && cancelled_;
    cancelled_ = true;
    state_ = State::kDone;
    work_ = nullptr;
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

void Job::rethrow_if_failed() {
  std::lock_guard<std::mutex> lock(mutex_);
  if (error_) std::rethrow_exception(error_);
  if (cancelled_) throw CancelledError("the batch was cancelled because its loader was closed");
}

ThreadPool::ThreadPool(int num_threads, const std::string& name) : owner_pid_(getpid()) {
  if (num_threads < 1) {
    throw std::invalid_argument("a thread pool needs at least one thread, got " +
                                std::to_string(num_threads));
  }
  threads_.reserve(static_cast<size_t>(num_threads));
  try {
    for (int i = 0; i < num_threads; ++i) {
      threads_.emplace_back([this] { worker_loop(); });
      // Linux limits thread names to 15 characters.
      std::string thread_name = (name + "-" + std::to_string(i)).substr(0, 15);
      pthread_setname_np(threads_.back().native_handle(), thread_name.c_str());
    }
  } catch (...) {
    shutdown();
    throw;
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::submit(std::shared_ptr<Job> job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      job->cancel();
      return;
    }
    queue_.push_back(std::move(job));
  }
  cv_.notify_one();
}

bool ThreadPool::is_shut_down() {
  std::lock_guard<std::mutex> lock(mutex_);
  return stopping_;
}

bool ThreadPool::orphaned() const { return getpid() != owner_pid_; }

void ThreadPool::shutdown() {
  if (orphaned()) {
    // In a forked child the threads are gone and joining them is undefined; their
    // handles are leaked on purpose (destroying a joinable std::thread terminates).
    new std::vector<std::thread>(std::move(threads_));
    threads_.clear();
    return;
  }
  std::deque<std::shared_ptr<Job>> abandoned;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stopping_ = true;
    abandoned.swap(queue_);
  }
  cv_.notify_all();
  for (auto& job : abandoned) job->cancel();
  for (auto& thread : threads_) {
    if (thread.joinable() && thread.get_id() != std::this_thread::get_id()) thread.join();
  }
  threads_.clear();
}

void ThreadPool::worker_loop() {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      cv_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping and nothing left
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    job->run();
  }
}

}  // namespace arrowloader
