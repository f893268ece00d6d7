// svd::Trainer as _core.Trainer: one minibatch per call, GIL released.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include "bindings/bindings.h"
#include "nn/train.h"
#include "nnet1/errors.h"

namespace svd_py {
namespace {

using FloatArray = py::array_t<float, py::array::c_style | py::array::forcecast>;
using IntArray = py::array_t<int32_t, py::array::c_style | py::array::forcecast>;

FloatArray frames_of(const svd::Trainer& t, const py::array& x) {
  auto f = FloatArray::ensure(x);
  if (!f || f.ndim() != 2) throw svd::Error("features must be a 2-D array (frames x dims)");
  if (f.shape(1) != t.input_dim())
    throw svd::Error("features have " + std::to_string(f.shape(1)) + " dims but the student expects " +
                     std::to_string(t.input_dim()));
  return f;
}

// Labels: None, or one pdf id per frame in [-1, output_dim) (-1: no label).
IntArray labels_of(const svd::Trainer& t, const py::object& labels, int64_t frames) {
  if (labels.is_none()) return IntArray();
  auto l = IntArray::ensure(labels);
  if (!l || l.ndim() != 1 || l.shape(0) != frames)
    throw svd::Error("labels must be a 1-D array with one pdf id per frame (" + std::to_string(frames) + ")");
  const int32_t* p = l.data();
  for (int64_t i = 0; i < frames; ++i)
    if (p[i] < -1 || p[i] >= t.output_dim())
      throw svd::Error("label " + std::to_string(p[i]) + " at frame " + std::to_string(i) +
                       " is outside the student's " + std::to_string(t.output_dim()) + " outputs");
  return l;
}

// One minibatch as the core wants it; the arrays keep the data alive.
struct Batch {
  FloatArray x;
  IntArray labels_array;
  const int32_t* labels = nullptr;
  int64_t frames() const { return x.shape(0); }
};

Batch batch_of(const svd::Trainer& t, const py::array& x, const py::object& labels) {
  Batch b;
  b.x = frames_of(t, x);
  b.labels_array = labels_of(t, labels, b.frames());
  if (!labels.is_none()) b.labels = b.labels_array.data();
  return b;
}

py::dict stats_dict(const svd::BatchStats& s) {
  py::dict d;
  d["frames"] = s.frames;
  d["objective"] = s.objective;
  d["kl_t"] = s.kl_t;
  d["kl"] = s.kl;
  d["hard_ce"] = s.hard_ce;
  d["agree"] = s.agree;
  d["blocks"] = s.blocks;
  d["correct"] = s.correct;
  d["labelled"] = s.labelled;
  return d;
}

// Float blocks as a list of 1-D float32 arrays (copies).
py::list float_arrays(const std::vector<std::vector<float>>& blocks) {
  py::list out;
  for (const auto& v : blocks) out.append(py::array_t<float>(static_cast<py::ssize_t>(v.size()), v.data()));
  return out;
}

svd::LossOptions loss_options(float temperature, float hard_weight, bool average_logits) {
  if (!(temperature > 0.f)) throw svd::Error("temperature must be > 0");
  if (!(hard_weight >= 0.f && hard_weight <= 1.f)) throw svd::Error("hard_weight must be in [0, 1]");
  return svd::LossOptions{temperature, hard_weight, average_logits};
}

}  // namespace

void BindTrainer(py::module_& m) {
  py::class_<svd::Trainer>(m, "Trainer")
      .def(py::init<std::vector<std::shared_ptr<svd::Component>>, std::vector<std::shared_ptr<svd::Network>>>(),
           py::arg("student"), py::arg("teachers"))
      .def_property_readonly("input_dim", &svd::Trainer::input_dim)
      .def_property_readonly("output_dim", &svd::Trainer::output_dim)
      .def("train",
           [](svd::Trainer& t, const py::array& x, const py::object& labels, float learn_rate, float momentum,
              float l2, bool adam, float beta1, float beta2, float epsilon, float temperature, float hard_weight,
              bool average_logits) {
             Batch b = batch_of(t, x, labels);
             svd::OptimizerOptions opt{adam, learn_rate, momentum, l2, beta1, beta2, epsilon};
             svd::LossOptions lo = loss_options(temperature, hard_weight, average_logits);
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.train(b.x.data(), b.frames(), b.labels, opt, lo);
             }
             return stats_dict(s);
           },
           py::arg("x"), py::arg("labels") = py::none(), py::arg("learn_rate") = 0.008f, py::arg("momentum") = 0.f,
           py::arg("l2") = 0.f, py::arg("adam") = false, py::arg("beta1") = 0.9f, py::arg("beta2") = 0.999f,
           py::arg("epsilon") = 1e-8f, py::arg("temperature") = 1.f, py::arg("hard_weight") = 0.f,
           py::arg("average_logits") = false)
      .def("evaluate",
           [](svd::Trainer& t, const py::array& x, const py::object& labels, float temperature, float hard_weight,
              bool average_logits) {
             Batch b = batch_of(t, x, labels);
             svd::LossOptions lo = loss_options(temperature, hard_weight, average_logits);
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.evaluate(b.x.data(), b.frames(), b.labels, lo);
             }
             return stats_dict(s);
           },
           py::arg("x"), py::arg("labels") = py::none(), py::arg("temperature") = 1.f, py::arg("hard_weight") = 0.f,
           py::arg("average_logits") = false)
      .def("gradients",
           [](svd::Trainer& t, const py::array& x, const py::object& labels, float temperature, float hard_weight,
              bool average_logits) {
             Batch b = batch_of(t, x, labels);
             svd::LossOptions lo = loss_options(temperature, hard_weight, average_logits);
             std::vector<std::vector<float>> grads;
             svd::MatF dx;
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.gradients(b.x.data(), b.frames(), b.labels, lo, &grads, &dx);
             }
             py::list g = float_arrays(grads);
             py::array_t<float> dxa({static_cast<py::ssize_t>(dx.rows()), static_cast<py::ssize_t>(dx.cols())});
             std::copy(dx.data(), dx.data() + dx.size(), dxa.mutable_data());
             return py::make_tuple(g, dxa, stats_dict(s));
           },
           py::arg("x"), py::arg("labels") = py::none(), py::arg("temperature") = 1.f, py::arg("hard_weight") = 0.f,
           py::arg("average_logits") = false,
           "Gradients of the summed objective w.r.t. each trainable parameter block (flattened, in component "
           "order) and the input, without an update.")
      .def("reset_optimizer", &svd::Trainer::reset_optimizer)
      .def("optimizer_state",
           [](const svd::Trainer& t) {
             const svd::Trainer::OptimizerState st = t.optimizer_state();
             return py::make_tuple(float_arrays(st.first), float_arrays(st.second), st.step);
           },
           "(first moments, second moments, Adam step): per slot a float32 array, empty before its first update.")
      .def("set_optimizer_state",
           [](svd::Trainer& t, const std::vector<FloatArray>& first, const std::vector<FloatArray>& second,
              int64_t step) {
             svd::Trainer::OptimizerState st;
             for (const auto& a : first) st.first.emplace_back(a.data(), a.data() + a.size());
             for (const auto& a : second) st.second.emplace_back(a.data(), a.data() + a.size());
             st.step = step;
             t.set_optimizer_state(st);
           },
           py::arg("first"), py::arg("second"), py::arg("step"))
      .def_property_readonly(
          "slots",
          [](const svd::Trainer& t) {
            py::list out;
            for (const auto& s : t.slot_info()) {
              py::dict d;
              d["component"] = s.component;
              d["param"] = s.param;
              d["coef"] = s.coef;
              d["momentum"] = s.momentum;
              d["decay"] = s.decay;
              d["max_norm"] = s.max_norm;
              out.append(d);
            }
            return out;
          },
          "The trainable float blocks, in gradients() order: component index, param index, learn-rate "
          "coefficient, whether momentum and L2 apply, MaxNorm of the rows (0: none).");
  m.def("can_train", [](const svd::Component& c) { return svd::can_train(c.kind); });
}

}  // namespace svd_py
