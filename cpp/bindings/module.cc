// The private compiled module svdistill._core: only the Bind*() calls.
#include "bindings/bindings.h"
#include "nnet1/byte_source.h"

PYBIND11_MODULE(_core, m) {
  m.doc() = "svdistill's C++ core (private: use the svdistill package)";
  svd_py::BindErrors(m);
  svd_py::BindComponent(m);
  svd_py::BindIo(m);
  svd_py::BindLinalg(m);
  svd_py::BindNetwork(m);
  svd_py::BindTrainer(m);
  m.attr("have_zlib") = svd::have_zlib();
}
