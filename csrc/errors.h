// Exception types of the native core. bind_errors.cpp maps each onto the Python
// class of the same name in arrowloader.errors; std::invalid_argument and
// std::out_of_range keep pybind11's mapping (ValueError, IndexError).
#pragma once

#include <stdexcept>
#include <string>

namespace arrowloader {

// The corpus itself is malformed: bad offsets, nulls, unsupported types,
// values that do not fit the requested output type.
class CorpusFormatError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A request was cancelled because its loader shut down before it ran.
class CancelledError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A batch was not ready within the loader's timeout.
class TimeoutError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace arrowloader
