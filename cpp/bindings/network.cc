// svd::Network as _core.Network: a model kept in the core for repeated
// forward passes (weights shared with the components, never converted again).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "nn/forward.h"
#include "nnet1/errors.h"

namespace svd_py {

void BindNetwork(py::module_& m) {
  py::class_<svd::Network, std::shared_ptr<svd::Network>>(m, "Network")
      .def(py::init<std::vector<std::shared_ptr<svd::Component>>, size_t>(), py::arg("components"),
           py::arg("transform_count") = 0)
      .def_property_readonly("input_dim", &svd::Network::input_dim)
      .def_property_readonly("output_dim", &svd::Network::output_dim)
      .def_property_readonly("size", &svd::Network::size)
      .def("forward",
           [](const svd::Network& net, const py::array& feats, int64_t upto) {
             auto f = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(feats);
             if (!f || f.ndim() != 2)
               throw svd::Error("features must be a 2-D array (frames x dims)");
             if (f.shape(1) != net.input_dim())
               throw svd::Error("features have " + std::to_string(f.shape(1)) + " dims but the network expects " +
                                std::to_string(net.input_dim()));
             const float* p = f.data();
             const int64_t frames = f.shape(0);
             auto* out = new svd::MatF();
             {
               py::gil_scoped_release nogil;
               *out = net.forward(p, frames, upto < 0 ? net.size() : static_cast<size_t>(upto));
             }
             py::capsule free_it(out, [](void* q) { delete static_cast<svd::MatF*>(q); });
             return py::array_t<float>({static_cast<int64_t>(out->rows()), static_cast<int64_t>(out->cols())},
                                       {static_cast<int64_t>(out->cols()) * 4, int64_t{4}}, out->data(), free_it);
           },
           py::arg("feats"), py::arg("upto") = -1);
  m.def("can_forward", [](const svd::Component& c) { return svd::can_forward(c.kind); });
}

}  // namespace svd_py
