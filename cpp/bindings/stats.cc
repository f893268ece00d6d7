// nn/stats as _core.compare_logits: the fidelity statistics of `svdistill
// compare` and of the calibrated budget's measured loss (distill's CV columns
// use the same per-block function inside the Trainer).
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "nn/stats.h"
#include "nnet1/errors.h"

namespace svd_py {

void BindStats(py::module_& m) {
  m.def("compare_logits",
        [](const py::array& teacher, const py::array& student, const std::vector<int32_t>& blocks) {
          using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
          FArray t = FArray::ensure(teacher), s = FArray::ensure(student);
          if (!t || !s || t.ndim() != 2 || s.ndim() != 2)
            throw svd::Error("teacher and student logits must be 2-D arrays of numbers");
          if (t.shape(0) != s.shape(0) || t.shape(1) != s.shape(1))
            throw svd::Error("teacher and student logits differ in shape");
          const float* pt = t.data();
          const float* ps = s.data();
          const int64_t frames = t.shape(0), dim = t.shape(1);
          svd::FidelityStats st;
          {
            py::gil_scoped_release nogil;
            st = svd::compare_logits(pt, ps, frames, dim, blocks);
          }
          py::dict d;
          d["frames"] = st.frames;
          d["blocks"] = st.blocks;
          d["agree"] = st.agree;
          d["kl"] = st.kl;
          d["cross_entropy"] = st.cross_entropy;
          d["teacher_entropy"] = st.teacher_entropy;
          d["max_abs_diff"] = st.max_abs_diff;
          return d;
        },
        py::arg("teacher"), py::arg("student"), py::arg("blocks"),
        "Sums over frames of KL(q || p) and the rest, per softmax block, q and p the exact softmaxes "
        "of the teacher's and the student's logits (in double)");
}

}  // namespace svd_py
