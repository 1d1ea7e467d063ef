// The binding files, one per capability; module.cpp calls each register_*() once, in
// this order (a class is registered before the signatures that name it).
#pragma once

#include <pybind11/pybind11.h>

namespace arrowloader {

void register_errors(pybind11::module_& m);  // bind_errors.cpp
void register_columns(pybind11::module_& m);  // bind_columns.cpp: columns, permutations
void register_pool(pybind11::module_& m);  // bind_pool.cpp: ThreadPool, Ticket
void register_padded(pybind11::module_& m);  // bind_padded.cpp: PaddedBatchAssembler
void register_packed(pybind11::module_& m);  // bind_packed.cpp: PackPlan, PackedBatchAssembler
void register_blend(pybind11::module_& m);  // bind_blend.cpp: blending, mixed batches
void register_plans(pybind11::module_& m);  // bind_plans.cpp: length-grouped, token-budget plans
#ifdef ARROWLOADER_TEST_HOOKS
void register_test_hooks(pybind11::module_& m);  // bind_test_hooks.cpp
#endif

}  // namespace arrowloader
