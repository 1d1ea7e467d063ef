// Test hooks, compiled only with the CMake option ARROWLOADER_TEST_HOOKS (setup.py turns
// it on for ARROWLOADER_TEST_HOOKS=1 in the environment; .ci/run does): they are not
// part of the module a user installs.
#include <pybind11/pybind11.h>

#include <chrono>
#include <memory>
#include <stdexcept>
#include <thread>

#include "bind_pool.h"
#include "bindings.h"
#include "job.h"
#include "thread_pool.h"

namespace arrowloader {

void register_test_hooks(py::module_& m) {
  auto pool_class =
      py::reinterpret_borrow<py::class_<ThreadPool, std::shared_ptr<ThreadPool>>>(
          m.attr("ThreadPool"));
  pool_class.def(
      "submit_sleep",
      [](const std::shared_ptr<ThreadPool>& pool, double seconds) {
        if (!(seconds >= 0)) throw std::invalid_argument("seconds must be >= 0");
        auto job = make_job(1, [seconds](int64_t) -> BatchFigures {
          std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
          return {0, 0};
        });
        return submit_job(pool, std::move(job), py::tuple());
      },
      py::arg("seconds"),
      "Queue a job that only sleeps `seconds` (a batch that takes that long, for tests "
      "of waiting, timeouts, cancellation and interrupts); returns its Ticket.");
}

}  // namespace arrowloader
