// nn/ensemble as _core.combine_specialists: section 5.3's combination of a
// generalist's and its specialists' posteriors (svdistill.specialists.combine).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "bindings/bindings.h"
#include "nn/ensemble.h"
#include "nnet1/errors.h"

namespace svd_py {

void BindEnsemble(py::module_& m) {
  m.def("combine_specialists",
        [](const py::array& generalist, const std::vector<py::array>& specialists,
           const std::vector<std::vector<int32_t>>& classes, int top_n, double tolerance, int max_iterations) {
          using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
          FArray g = FArray::ensure(generalist);
          if (!g || g.ndim() != 2) throw svd::Error("the generalist's posteriors must be a 2-D (frames x classes) array");
          const int64_t frames = g.shape(0), C = g.shape(1);
          if (specialists.size() != classes.size())
            throw svd::Error("got " + std::to_string(specialists.size()) + " specialists' posteriors for " +
                             std::to_string(classes.size()) + " class lists");
          std::vector<FArray> keep;
          std::vector<const float*> ptrs;
          for (size_t i = 0; i < specialists.size(); ++i) {
            FArray a = FArray::ensure(specialists[i]);
            const int64_t want = static_cast<int64_t>(classes[i].size()) + 1;
            if (!a || a.ndim() != 2 || a.shape(0) != frames || a.shape(1) != want)
              throw svd::Error("specialist " + std::to_string(i) + "'s posteriors must be " + std::to_string(frames) +
                               " x " + std::to_string(want) + " (its classes and the dustbin)");
            ptrs.push_back(a.data());
            keep.push_back(std::move(a));
          }
          svd::CombineOptions opt;
          opt.top_n = top_n;
          opt.tolerance = tolerance;
          opt.max_iterations = max_iterations;
          svd::CombineResult r;
          {
            py::gil_scoped_release nogil;
            r = svd::combine_specialists(g.data(), frames, C, ptrs, classes, opt);
          }
          py::array_t<float> q({frames, C});
          std::copy(r.posteriors.begin(), r.posteriors.end(), q.mutable_data());
          py::array_t<int32_t> its(frames), act(frames);
          std::copy(r.iterations.begin(), r.iterations.end(), its.mutable_data());
          std::copy(r.active.begin(), r.active.end(), act.mutable_data());
          return py::make_tuple(q, its, act, r.unconverged);
        },
        py::arg("generalist"), py::arg("specialists"), py::arg("classes"), py::arg("top_n"), py::arg("tolerance"),
        py::arg("max_iterations"),
        "(posteriors, iterations per frame, active specialists per frame, unconverged frames): q minimising "
        "KL(p_g || q) + sum over active specialists of KL(p_m || q restricted to its classes + dustbin).");
}

}  // namespace svd_py
