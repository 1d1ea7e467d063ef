#include "thread_pool.h"

#include <pthread.h>
#include <unistd.h>

#include <stdexcept>
#include <string>

#include "job.h"

namespace arrowloader {

ThreadPool::ThreadPool(int num_threads, const std::string& name)
    : state_(std::make_unique<State>()), owner_pid_(getpid()) {
  if (num_threads < 1) {
    throw std::invalid_argument("a thread pool needs at least one thread, got " +
                                std::to_string(num_threads));
  }
  state_->threads.reserve(static_cast<size_t>(num_threads));
  try {
    for (int i = 0; i < num_threads; ++i) {
      State* state = state_.get();
      state_->threads.emplace_back([state] { worker_loop(state); });
      // Linux limits thread names to 15 characters.
      std::string thread_name = (name + "-" + std::to_string(i)).substr(0, 15);
      pthread_setname_np(state_->threads.back().native_handle(), thread_name.c_str());
    }
  } catch (...) {
    shutdown();
    throw;
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

bool ThreadPool::orphaned() const { return getpid() != owner_pid_; }

void ThreadPool::submit(std::shared_ptr<Job> job) {
  if (!state_) {
    job->cancel();
    return;
  }
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    if (state_->stopping) {
      job->cancel();
      return;
    }
    state_->queue.push_back(std::move(job));
  }
  state_->cv.notify_one();
}

void ThreadPool::shutdown() {
  if (!state_) return;
  if (orphaned()) {
    state_.release();  // see State: leaked on purpose in a forked child
    return;
  }
  std::deque<std::shared_ptr<Job>> abandoned;
  {
    std::lock_guard<std::mutex> lock(state_->mutex);
    state_->stopping = true;
    abandoned.swap(state_->queue);
  }
  state_->cv.notify_all();
  for (auto& job : abandoned) job->cancel();
  for (auto& thread : state_->threads) {
    if (thread.joinable()) thread.join();
  }
  state_.reset();
}

void ThreadPool::worker_loop(State* state) {
  for (;;) {
    std::shared_ptr<Job> job;
    {
      std::unique_lock<std::mutex> lock(state->mutex);
      state->cv.wait(lock, [state] { return state->stopping || !state->queue.empty(); });
      if (state->queue.empty()) return;  // stopping and nothing left
      job = std::move(state->queue.front());
      state->queue.pop_front();
    }
    job->run();
  }
}

}  // namespace arrowloader
