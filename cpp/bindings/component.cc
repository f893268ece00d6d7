// svd::Component as _core.Component. Parameters are numpy views of the C++
// storage (no copies); the view keeps its component alive.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>

#include "bindings/bindings.h"
#include "nnet1/component.h"
#include "nnet1/errors.h"

namespace svd_py {
namespace {

using CompPtr = std::shared_ptr<svd::Component>;

py::array block_view(svd::FloatBlock& b, py::handle owner) {
  if (b.is_matrix())
    return py::array_t<float>({b.rows, b.cols}, {b.cols * 4, int64_t{4}}, b.data.data(), owner);
  return py::array_t<float>({static_cast<int64_t>(b.data.size())}, {int64_t{4}}, b.data.data(), owner);
}

void assign_block(svd::FloatBlock& b, const py::array& value, const char* what) {
  auto a = py::array_t<float, py::array::c_style | py::array::forcecast>::ensure(value);
  if (!a) {
    PyErr_Clear();
    throw svd::Error(std::string(what) + " must be an array of numbers, got an array of dtype " +
                     py::str(value.attr("dtype")).cast<std::string>());
  }
  std::vector<int64_t> want = b.is_matrix() ? std::vector<int64_t>{b.rows, b.cols}
                                            : std::vector<int64_t>{static_cast<int64_t>(b.data.size())};
  std::vector<int64_t> got(a.shape(), a.shape() + a.ndim());
  if (got != want) {
    auto fmt = [](const std::vector<int64_t>& s) {
      std::string r = "(";
      for (size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
      return r + (s.size() == 1 ? ",)" : ")");
    };
    throw svd::Error(std::string(what) + " must have shape " + fmt(want) + ", got " + fmt(got) +
                     " (a component's dims are fixed; build a new component to change them)");
  }
  if (!b.data.empty()) std::memcpy(b.data.data(), a.data(), b.data.size() * 4);
}

int param_index(const svd::Component& c, const char* name) {
  const auto& names = svd::kind_info(c.kind).param_names;
  for (size_t i = 0; i < names.size(); ++i)
    if (std::strcmp(names[i], name) == 0 && i < c.params.size()) return static_cast<int>(i);
  return -1;
}

svd::Kind kind_by_name(const std::string& name) {
  for (int k = 0; k <= static_cast<int>(svd::Kind::Unknown); ++k) {
    auto kind = static_cast<svd::Kind>(k);
    if (name == svd::kind_info(kind).name) return kind;
  }
  throw svd::Error("unknown component kind '" + name + "'");
}

}  // namespace

void BindComponent(py::module_& m) {
  py::class_<svd::Component, CompPtr> cls(m, "Component");
  cls.def_property_readonly("kind", [](const svd::Component& c) { return std::string(svd::kind_info(c.kind).name); })
      .def_readonly("marker", &svd::Component::marker)
      .def_readonly("input_dim", &svd::Component::input_dim)
      .def_readonly("output_dim", &svd::Component::output_dim)
      .def_property_readonly("modelled", [](const svd::Component& c) { return svd::is_modelled(c.kind); })
      .def_property_readonly("num_params", [](const svd::Component& c) -> py::object {
        int64_t n = c.num_params();
        return n < 0 ? py::object(py::none()) : py::object(py::int_(n));
      })
      .def_property_readonly("param_names", [](const svd::Component& c) {
        std::vector<std::string> names;
        const auto& all = svd::kind_info(c.kind).param_names;
        for (size_t i = 0; i < all.size() && i < c.params.size(); ++i) names.emplace_back(all[i]);
        return names;
      })
      .def("param", [](py::object self, int i) {
        auto& c = self.cast<svd::Component&>();
        if (i < 0 || i >= static_cast<int>(c.params.size())) throw py::index_error("no such parameter");
        return block_view(c.params[i], self);
      })
      .def("set_param", [](svd::Component& c, int i, const py::array& value) {
        if (i < 0 || i >= static_cast<int>(c.params.size())) throw py::index_error("no such parameter");
        assign_block(c.params[i], value, svd::kind_info(c.kind).param_names[i]);
      })
      .def_property_readonly("coefs", [](const svd::Component& c) {
        py::dict d;
        for (const auto& cf : c.coefs) d[py::str(cf.first)] = cf.second;
        return d;
      })
      .def("set_coef", [](svd::Component& c, const std::string& token, float value) {
        for (auto& cf : c.coefs)
          if (cf.first == token) {
            cf.second = value;
            return;
          }
        throw svd::Error(std::string(svd::kind_info(c.kind).name) + " has no coefficient " + token);
      })
      .def_property_readonly("ints", [](py::object self) -> py::object {
        auto& c = self.cast<svd::Component&>();
        if (svd::kind_info(c.kind).layout != svd::Layout::IntVector) return py::none();
        return py::array_t<int32_t>({static_cast<int64_t>(c.ints.size())}, {int64_t{4}}, c.ints.data(), self);
      })
      .def_property_readonly("raw", [](const svd::Component& c) -> py::object {
        if (svd::is_modelled(c.kind)) return py::none();
        return py::bytes(c.raw);
      })
      .def_property_readonly("raw_binary", [](const svd::Component& c) {
        return c.raw_encoding == svd::Encoding::Binary;
      })
      .def("copy", [](const svd::Component& c) { return std::make_shared<svd::Component>(c); })
      .def("check", &svd::Component::check);

  m.def("param_index", [](const svd::Component& c, const std::string& name) { return param_index(c, name.c_str()); });
  m.def("make_affine", [](int32_t out, int32_t in) {
    if (out < 0 || in < 0) throw svd::Error("dims must be non-negative");
    return std::make_shared<svd::Component>(svd::make_affine(out, in));
  });
  m.def("make_linear", [](int32_t out, int32_t in) {
    if (out < 0 || in < 0) throw svd::Error("dims must be non-negative");
    return std::make_shared<svd::Component>(svd::make_linear(out, in));
  });
  m.def("make_simple", [](const std::string& kind, int32_t dim) {
    if (dim < 0) throw svd::Error("dims must be non-negative");
    try {
      return std::make_shared<svd::Component>(svd::make_simple(kind_by_name(kind), dim));
    } catch (const std::invalid_argument& e) {
      throw svd::Error(e.what());
    }
  });
  m.def("kind_of_marker", [](const std::string& marker) {
    return std::string(svd::kind_info(svd::kind_from_marker(marker)).name);
  });
}

}  // namespace svd_py
