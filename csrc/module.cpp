// The extension module arrowloader._C. The bindings are split by capability
// (bindings.h); each checks its arguments while holding the GIL, takes raw pointers,
// then releases the GIL and calls the core, and touches no Python after the release.
#include <pybind11/pybind11.h>

#include "bindings.h"

#ifndef ARROWLOADER_VERSION
#error "ARROWLOADER_VERSION must be defined (CMakeLists.txt takes it from pyproject.toml)"
#endif

PYBIND11_MODULE(_C, m) {
  m.doc() =
      "Native core of arrowloader: zero-copy Arrow column views, batch assembly and a "
      "thread pool. Internal; use the arrowloader package.";
  m.attr("__version__") = ARROWLOADER_VERSION;
  arrowloader::register_errors(m);
  arrowloader::register_columns(m);
  arrowloader::register_pool(m);
  arrowloader::register_padded(m);
  arrowloader::register_packed(m);
  arrowloader::register_blend(m);
  arrowloader::register_plans(m);
#ifdef ARROWLOADER_TEST_HOOKS
  arrowloader::register_test_hooks(m);
#endif
}
