// Data-aware compression: svd::Calibration (one streaming pass collecting
// layers' input statistics) and the whitening functions as _core names.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "linalg/whiten.h"
#include "nn/calibration.h"
#include "nnet1/errors.h"

namespace svd_py {
namespace {

using FArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

template <class M>
py::array owned_matrix(M&& m) {
  using Scalar = typename std::decay_t<M>::Scalar;
  auto* p = new std::decay_t<M>(std::forward<M>(m));
  py::capsule free_it(p, [](void* q) { delete static_cast<std::decay_t<M>*>(q); });
  const int64_t s = static_cast<int64_t>(sizeof(Scalar));
  return py::array_t<Scalar>({static_cast<int64_t>(p->rows()), static_cast<int64_t>(p->cols())},
                             {static_cast<int64_t>(p->cols()) * s, s}, p->data(), free_it);
}

py::array owned_vector(std::vector<double>&& v) {
  auto* p = new std::vector<double>(std::move(v));
  py::capsule free_it(p, [](void* q) { delete static_cast<std::vector<double>*>(q); });
  return py::array_t<double>({static_cast<int64_t>(p->size())}, {int64_t{8}}, p->data(), free_it);
}

FArray float_matrix(const py::array& a, const char* what) {
  FArray f = FArray::ensure(a);
  if (!f || f.ndim() != 2) throw svd::Error(std::string(what) + " must be a 2-D array of numbers");
  return f;
}

svd::MatD covariance_arg(const py::array& a) {
  DArray d = DArray::ensure(a);
  if (!d || d.ndim() != 2) throw svd::Error("a covariance must be a 2-D array of numbers");
  return Eigen::Map<const svd::MatD>(d.data(), d.shape(0), d.shape(1));
}

}  // namespace

void BindCalibration(py::module_& m) {
  py::class_<svd::Calibration>(m, "Calibration")
      .def(py::init<std::vector<std::shared_ptr<svd::Component>>, size_t, std::vector<int64_t>>(),
           py::arg("components"), py::arg("transform_count"), py::arg("positions"))
      .def_property_readonly("input_dim", &svd::Calibration::input_dim)
      .def_property_readonly("frames", &svd::Calibration::frames)
      .def("add",
           [](svd::Calibration& c, const py::array& feats, int64_t use) {
             FArray f = float_matrix(feats, "features");
             if (f.shape(1) != c.input_dim())
               throw svd::Error("features have " + std::to_string(f.shape(1)) + " dims but the network expects " +
                                std::to_string(c.input_dim()));
             const float* p = f.data();
             const int64_t frames = f.shape(0);
             py::gil_scoped_release nogil;
             c.add(p, frames, use);
           },
           py::arg("feats"), py::arg("use"))
      .def("stats",
           [](const svd::Calibration& c, size_t i) {
             const svd::MomentAccumulator& s = c.stats(i);
             std::vector<double> mean;
             svd::MatD cov;
             {
               py::gil_scoped_release nogil;
               mean = s.mean();
               cov = s.covariance();
             }
             return py::make_tuple(s.count(), owned_vector(std::move(mean)), owned_matrix(std::move(cov)));
           },
           py::arg("i"), "(frames, mean, covariance) of the inputs at the i-th position, in float64");

  py::class_<svd::MomentAccumulator>(m, "Moments")
      .def(py::init<int64_t>(), py::arg("dim"))
      .def_property_readonly("dim", &svd::MomentAccumulator::dim)
      .def_property_readonly("count", &svd::MomentAccumulator::count)
      .def("add",
           [](svd::MomentAccumulator& acc, const py::array& x) {
             FArray f = float_matrix(x, "rows");
             if (f.shape(1) != acc.dim())
               throw svd::Error("rows of " + std::to_string(f.shape(1)) + " dims for moments of " +
                                std::to_string(acc.dim()));
             const float* p = f.data();
             const int64_t n = f.shape(0);
             py::gil_scoped_release nogil;
             acc.add(p, n, acc.dim());
           },
           py::arg("x"))
      .def("mean", [](const svd::MomentAccumulator& acc) { return owned_vector(acc.mean()); })
      .def("covariance", [](const svd::MomentAccumulator& acc) {
        svd::MatD c;
        {
          py::gil_scoped_release nogil;
          c = acc.covariance();
        }
        return owned_matrix(std::move(c));
      });
  // The inputs of components `positions` (ascending) of a network, in one pass
  // over one utterance: what --refine pairs between the input model and its student.
  m.def("component_inputs",
        [](const svd::Network& net, const py::array& feats, const std::vector<int64_t>& positions) {
          FArray f = float_matrix(feats, "features");
          if (f.shape(1) != net.input_dim())
            throw svd::Error("features have " + std::to_string(f.shape(1)) + " dims but the network expects " +
                             std::to_string(net.input_dim()));
          for (size_t i = 0; i < positions.size(); ++i)
            if (positions[i] < 0 || positions[i] >= static_cast<int64_t>(net.size()) ||
                (i && positions[i] <= positions[i - 1]))
              throw svd::Error("positions must be ascending component indices");
          const int64_t frames = f.shape(0);
          std::vector<svd::MatF> outs;
          {
            py::gil_scoped_release nogil;
            svd::MatF cur = Eigen::Map<const svd::MatF>(f.data(), frames, f.shape(1));
            svd::MatF next;
            size_t want = 0;
            for (size_t i = 0; want < positions.size(); ++i) {
              if (static_cast<int64_t>(i) == positions[want]) {
                outs.push_back(cur);
                ++want;
                if (want == positions.size()) break;
              }
              const svd::Component& c = net.component(i);
              next.resize(frames, c.output_dim);
              svd::Network::run(c, cur.data(), frames, next.data());
              std::swap(cur, next);
            }
          }
          py::list r;
          for (auto& o : outs) r.append(owned_matrix(std::move(o)));
          return r;
        },
        py::arg("network"), py::arg("feats"), py::arg("positions"));

  py::class_<svd::Whitening>(m, "Whitening")
      .def_readonly("ridge", &svd::Whitening::ridge)
      .def_property_readonly("dim", [](const svd::Whitening& w) { return w.r.rows(); });
  m.def("whitening",
        [](const py::array& covariance, double relative_ridge) {
          svd::MatD cov = covariance_arg(covariance);
          py::gil_scoped_release nogil;
          return svd::whitening(cov, relative_ridge);
        },
        py::arg("covariance"), py::arg("relative_ridge") = svd::kWhiteningRidge);
  m.attr("WHITENING_RIDGE") = svd::kWhiteningRidge;
  m.def("whiten_weight",
        [](const py::array& w, const svd::Whitening& wh) {
          FArray f = float_matrix(w, "the weight matrix");
          const float* p = f.data();
          const int64_t out = f.shape(0), in = f.shape(1);
          double energy = 0;
          svd::MatF m;
          {
            py::gil_scoped_release nogil;
            m = svd::whiten_weight(p, out, in, wh, &energy);
          }
          return py::make_tuple(owned_matrix(std::move(m)), energy);
        },
        py::arg("w"), py::arg("whitening"), "(W R^T, ||W R^T||_F^2)");
  m.def("unwhiten_rows",
        [](const py::array& vt, const svd::Whitening& wh) {
          svd::MatF v = Eigen::Map<const svd::MatF>(float_matrix(vt, "vt").data(), vt.shape(0), vt.shape(1));
          {
            py::gil_scoped_release nogil;
            svd::unwhiten_rows(v, wh);
          }
          return owned_matrix(std::move(v));
        },
        py::arg("vt"), py::arg("whitening"));
  m.def("output_error_energy",
        [](const py::array& w, const py::object& b, const py::object& a, const py::array& covariance,
           const py::object& mean) {
          FArray wf = float_matrix(w, "the weight matrix");
          const int64_t out = wf.shape(0), in = wf.shape(1);
          FArray bf, af;
          int64_t k = 0;
          if (!b.is_none()) {
            bf = float_matrix(b, "the out x k factor");
            af = float_matrix(a, "the k x in factor");
            k = bf.shape(1);
            if (bf.shape(0) != out || af.shape(0) != k || af.shape(1) != in)
              throw svd::Error("factors of shapes that do not make the weight matrix's");
          }
          svd::MatD cov = covariance_arg(covariance);
          std::vector<double> mu;
          if (!mean.is_none()) mu = mean.cast<std::vector<double>>();
          const float* pw = wf.data();
          const float* pb = k ? bf.data() : nullptr;
          const float* pa = k ? af.data() : nullptr;
          py::gil_scoped_release nogil;
          return svd::output_error_energy(pw, pb, pa, out, k, in, cov, mean.is_none() ? nullptr : &mu);
        },
        py::arg("w"), py::arg("b"), py::arg("a"), py::arg("covariance"), py::arg("mean") = py::none(),
        "E||(W - B A) x - c||^2: mean None: the bias absorbs the mean error; else it counts (plain SVD)");
}

}  // namespace svd_py
