// Declarations shared by the binding files; each Bind*() registers one family.
#pragma once

#include <pybind11/pybind11.h>

namespace svd_py {
namespace py = pybind11;

void BindErrors(py::module_& m);
void BindCalibration(py::module_& m);
void BindComponent(py::module_& m);
void BindCompress(py::module_& m);
void BindEnsemble(py::module_& m);
void BindIo(py::module_& m);
void BindLinalg(py::module_& m);
void BindNetwork(py::module_& m);
void BindTrainer(py::module_& m);
void BindStats(py::module_& m);

}  // namespace svd_py
