// cpp/linalg as _core functions: SVDs (GIL released, results handed to numpy
// without copies) and the rank policies.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "linalg/blas.h"
#include "linalg/compress.h"
#include "linalg/rank_policy.h"
#include "linalg/svd.h"
#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd_py {
namespace {

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;

// Moves an Eigen matrix to the heap and lends its buffer to numpy.
py::array to_numpy(svd::MatF&& m) {
  auto* owned = new svd::MatF(std::move(m));
  py::capsule free_it(owned, [](void* p) { delete static_cast<svd::MatF*>(p); });
  return py::array_t<float>({static_cast<int64_t>(owned->rows()), static_cast<int64_t>(owned->cols())},
                            {static_cast<int64_t>(owned->cols()) * 4, int64_t{4}}, owned->data(), free_it);
}

py::array to_numpy(std::vector<double>&& v) {
  auto* owned = new std::vector<double>(std::move(v));
  py::capsule free_it(owned, [](void* p) { delete static_cast<std::vector<double>*>(p); });
  return py::array_t<double>({static_cast<int64_t>(owned->size())}, {int64_t{8}}, owned->data(), free_it);
}

FArray matrix_arg(const py::array& a) {
  FArray f = FArray::ensure(a);
  if (!f) throw svd::Error("expected an array of numbers");
  if (f.ndim() != 2) throw svd::Error("expected a 2-D matrix, got " + std::to_string(f.ndim()) + " dimensions");
  return f;
}

// "auto", "direct" or "gram": tests force a route; the API leaves it to the cost model.
svd::SketchRoute sketch_route(const std::string& name) {
  if (name == "auto") return svd::SketchRoute::Auto;
  if (name == "direct") return svd::SketchRoute::Direct;
  if (name == "gram") return svd::SketchRoute::Gram;
  throw svd::Error("route must be 'auto', 'direct' or 'gram', got '" + name + "'");
}

py::tuple result_tuple(svd::SvdResult&& r) {
  double total = r.total_energy;
  int64_t sketch = r.sketch;
  const char* route = r.route;
  return py::make_tuple(to_numpy(std::move(r.u)), to_numpy(std::move(r.s)), to_numpy(std::move(r.vt)), total,
                        sketch, route);
}

}  // namespace

void BindLinalg(py::module_& m) {
  m.def("truncated_svd",
        [](const py::array& a, int64_t k, const std::string& method, int64_t oversamples, int n_iter,
           uint64_t seed, const std::string& route) {
          FArray f = matrix_arg(a);
          const int64_t rows = f.shape(0), cols = f.shape(1);
          const float* p = f.data();
          svd::SvdResult r;
          {
            py::gil_scoped_release nogil;
            svd::SvdMethod m;
            if (method == "exact") m = svd::SvdMethod::Exact;
            else if (method == "randomized") m = svd::SvdMethod::Randomized;
            else if (method == "auto") m = svd::SvdMethod::Auto;
            else throw svd::Error("method must be 'auto', 'exact' or 'randomized', got '" + method + "'");
            if (svd::resolve_method(m, k, rows, cols, oversamples) == svd::SvdMethod::Exact) {
              r = svd::exact_svd(p, rows, cols, k);
            } else {
              r = svd::randomized_svd(p, rows, cols, k, {oversamples, n_iter, seed, sketch_route(route)});
            }
          }
          return result_tuple(std::move(r));
        },
        py::arg("a"), py::arg("k"), py::arg("method"), py::arg("oversamples") = -1, py::arg("n_iter") = -1,
        py::arg("seed") = 0, py::arg("route") = "auto");
  m.def("adaptive_energy_svd",
        [](const py::array& a, double energy, int64_t oversamples, int n_iter, uint64_t seed,
           const std::string& route) {
          FArray f = matrix_arg(a);
          const int64_t rows = f.shape(0), cols = f.shape(1);
          const float* p = f.data();
          svd::SvdResult r;
          {
            py::gil_scoped_release nogil;
            r = svd::adaptive_energy_svd(p, rows, cols, energy, {oversamples, n_iter, seed, sketch_route(route)});
          }
          return result_tuple(std::move(r));
        },
        py::arg("a"), py::arg("energy"), py::arg("oversamples") = -1, py::arg("n_iter") = -1,
        py::arg("seed") = 0, py::arg("route") = "auto");
  m.def("singular_values", [](const py::array& a) {
    FArray f = matrix_arg(a);
    const int64_t rows = f.shape(0), cols = f.shape(1);
    const float* p = f.data();
    std::vector<double> s;
    {
      py::gil_scoped_release nogil;
      s = svd::singular_values(p, rows, cols);
    }
    return to_numpy(std::move(s));
  });
  m.def("frobenius_sq", [](const py::array& a) {
    FArray f = FArray::ensure(a);
    const float* p = f.data();
    const int64_t n = f.size();
    py::gil_scoped_release nogil;
    return svd::frobenius_sq(p, n);
  });

  m.def("energy_rank", &svd::energy_rank, py::arg("s"), py::arg("fraction"), py::arg("total_energy") = -1.0);
  m.def("nuclear_rank", &svd::nuclear_rank, py::arg("s"), py::arg("fraction"));
  m.def("round_rank", &svd::round_rank, py::arg("k"), py::arg("multiple"), py::arg("out"), py::arg("in"));
  m.def("worth_factoring", &svd::worth_factoring, py::arg("k"), py::arg("out"), py::arg("in"),
        py::arg("min_gain"), py::arg("per_rank") = 0);
  m.def("factored_params", &svd::factored_params, py::arg("k"), py::arg("out"), py::arg("in"),
        py::arg("per_rank") = 0);
  m.def("break_even_rank", &svd::break_even_rank, py::arg("out"), py::arg("in"), py::arg("per_rank") = 0);
  m.def("budget_ranks",
        [](const std::vector<std::tuple<int64_t, int64_t, std::vector<double>>>& layers, double budget,
           double min_gain, int64_t round_to, int64_t per_rank) {
          std::vector<svd::LayerSpectrum> specs;
          for (const auto& [out, in, s] : layers) specs.push_back({out, in, s, -1});
          py::gil_scoped_release nogil;
          return svd::budget_ranks(specs, budget, min_gain, round_to, per_rank);
        },
        py::arg("layers"), py::arg("budget_params"), py::arg("min_gain"), py::arg("round_to"),
        py::arg("per_rank") = 0);

  m.def("set_num_threads", [](int n) {
    svd::set_num_threads(n);
    svd::blas::set_threads(0);
  });
  m.def("get_num_threads", &svd::num_threads);
  m.def("blas_core", &svd::blas::core_name);
}

}  // namespace svd_py
