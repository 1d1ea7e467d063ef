// Native exceptions (errors.h) mapped onto arrowloader.errors.
#include <pybind11/pybind11.h>

#include "bindings.h"
#include "errors.h"

namespace py = pybind11;

namespace arrowloader {

void register_errors(py::module_&) {
  // Concrete Python classes live in arrowloader.errors (they inherit both
  // ArrowLoaderError and a builtin); native exceptions are mapped onto them.
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const CorpusFormatError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("CorpusFormatError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const CancelledError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("LoaderClosedError");
      PyErr_SetString(cls.ptr(), e.what());
    } catch (const TimeoutError& e) {
      py::object cls = py::module_::import("arrowloader.errors").attr("LoaderTimeoutError");
      PyErr_SetString(cls.ptr(), e.what());
    }
  });
}

}  // namespace arrowloader
