// svd::Trainer as _core.Trainer (one minibatch per call, GIL released), and
// the option structs it takes as _core.OptimizerOptions and _core.LossOptions.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "bindings/bindings.h"
#include "nn/train.h"
#include "nnet1/errors.h"
#include "nnet1/number_format.h"

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
  FloatArray tl;
  const float* teacher_logits = nullptr;
  int64_t frames() const { return x.shape(0); }
};

Batch batch_of(const svd::Trainer& t, const py::array& x, const py::object& labels,
               const py::object& teacher_logits) {
  Batch b;
  b.x = frames_of(t, x);
  b.labels_array = labels_of(t, labels, b.frames());
  if (!labels.is_none()) b.labels = b.labels_array.data();
  if (teacher_logits.is_none() == t.external_targets())
    throw svd::Error(t.external_targets() ? "this trainer takes the teacher's logits from the caller: give "
                                            "teacher_logits (frames x output dim)"
                                          : "teacher_logits given, but this trainer's soft targets come from its "
                                            "teacher networks (or there is no teacher)");
  if (!teacher_logits.is_none()) {
    b.tl = FloatArray::ensure(teacher_logits);
    if (!b.tl || b.tl.ndim() != 2 || b.tl.shape(0) != b.frames() || b.tl.shape(1) != t.output_dim())
      throw svd::Error("teacher_logits must be a 2-D array of " + std::to_string(b.frames()) + " frames x " +
                       std::to_string(t.output_dim()) + " outputs");
    b.teacher_logits = b.tl.data();
  }
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
  d["hint"] = s.hint;
  return d;
}

// Float blocks as a list of 1-D float32 arrays (copies).
py::list float_arrays(const std::vector<std::vector<float>>& blocks) {
  py::list out;
  for (const auto& v : blocks) out.append(py::array_t<float>(static_cast<py::ssize_t>(v.size()), v.data()));
  return out;
}

// A float option as it was written in C++ (0.008, not 0.00800000037997961).
std::string float_text(float v) {
  char buf[32];
  return std::string(buf, svd::format_float(buf, v, svd::Digits::Shortest));
}

const char* bool_text(bool v) { return v ? "True" : "False"; }

// The option structs of nn/optimizer.h and nn/loss.h, field for field: their
// defaults are svdistill.distill()'s. Python names a field as distill() names
// its keyword. The values are trusted (distill() checks them, naming its
// keywords); only what would touch memory out of bounds is checked here.
void BindOptions(py::module_& m) {
  py::class_<svd::OptimizerOptions> opt(m, "OptimizerOptions",
                                        "The update rule and its constants (nn/optimizer.h).");
  opt.def(py::init<>())
      .def_readwrite("adam", &svd::OptimizerOptions::adam, "Adam instead of Kaldi's SGD")
      .def_readwrite("learn_rate", &svd::OptimizerOptions::learn_rate,
                     "the step size (SGD: per frame, as gradients are summed over the minibatch)")
      .def_readwrite("momentum", &svd::OptimizerOptions::momentum, "SGD only")
      .def_readwrite("l2_penalty", &svd::OptimizerOptions::l2,
                     "SGD: Kaldi's l2-penalty; Adam: decoupled weight decay")
      .def_readwrite("beta1", &svd::OptimizerOptions::beta1)
      .def_readwrite("beta2", &svd::OptimizerOptions::beta2)
      .def_readwrite("epsilon", &svd::OptimizerOptions::epsilon)
      .def("__repr__", [](const svd::OptimizerOptions& o) {
        return std::string("OptimizerOptions(adam=") + bool_text(o.adam) + ", learn_rate=" +
               float_text(o.learn_rate) + ", momentum=" + float_text(o.momentum) + ", l2_penalty=" +
               float_text(o.l2) + ", beta1=" + float_text(o.beta1) + ", beta2=" + float_text(o.beta2) +
               ", epsilon=" + float_text(o.epsilon) + ")";
      });
  opt.attr("adam_learn_rate") = svd::OptimizerOptions::kAdamLearnRate;

  py::class_<svd::LossOptions>(m, "LossOptions", "The distillation loss (nn/loss.h).")
      .def(py::init<>())
      .def_readwrite("temperature", &svd::LossOptions::temperature, "T of the soft targets")
      .def_readwrite("hard_weight", &svd::LossOptions::hard_weight,
                     "a: the weight of cross-entropy against labels")
      .def_readwrite("average_logits", &svd::LossOptions::average_logits,
                     "several teachers: average their logits, not their soft targets")
      .def_readwrite("hint_weight", &svd::LossOptions::hint_weight,
                     "B: the weight of the hint term (a trainer made with hints)")
      .def("__repr__", [](const svd::LossOptions& o) {
        return "LossOptions(temperature=" + float_text(o.temperature) + ", hard_weight=" +
               float_text(o.hard_weight) + ", average_logits=" + bool_text(o.average_logits) +
               ", hint_weight=" + float_text(o.hint_weight) + ")";
      });
}

}  // namespace

void BindTrainer(py::module_& m) {
  BindOptions(m);
  py::class_<svd::Trainer>(m, "Trainer")
      .def(py::init([](std::vector<std::shared_ptr<svd::Component>> student,
                       std::vector<std::shared_ptr<svd::Network>> teachers, bool external,
                       const std::vector<std::pair<size_t, size_t>>& hints) {
             std::vector<svd::HintPair> h;
             for (const auto& p : hints) h.push_back({p.first, p.second});
             return std::make_unique<svd::Trainer>(std::move(student), std::move(teachers), external, std::move(h));
           }),
           py::arg("student"), py::arg("teachers"), py::arg("external_targets") = false,
           py::arg("hints") = std::vector<std::pair<size_t, size_t>>{},
           "external_targets: the soft targets come from the caller, as one teacher's logits given to each "
           "call (teacher_logits); hints: (student component, teacher component) index pairs of "
           "nonlinearities whose outputs are matched (one teacher network).")
      .def_property_readonly("input_dim", &svd::Trainer::input_dim)
      .def_property_readonly("output_dim", &svd::Trainer::output_dim)
      .def_property_readonly("num_teachers", &svd::Trainer::num_teachers)
      .def("train",
           // The options by value: Python may change its objects while the GIL is released.
           [](svd::Trainer& t, const py::array& x, const py::object& labels, svd::OptimizerOptions opt,
              svd::LossOptions lo, const py::object& teacher_logits) {
             Batch b = batch_of(t, x, labels, teacher_logits);
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.train(b.x.data(), b.frames(), b.labels, opt, lo, b.teacher_logits);
             }
             return stats_dict(s);
           },
           py::arg("x"), py::arg("labels"), py::arg("optimizer"), py::arg("loss"),
           py::arg("teacher_logits") = py::none())
      .def("evaluate",
           [](svd::Trainer& t, const py::array& x, const py::object& labels, svd::LossOptions lo,
              const py::object& teacher_logits) {
             Batch b = batch_of(t, x, labels, teacher_logits);
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.evaluate(b.x.data(), b.frames(), b.labels, lo, b.teacher_logits);
             }
             return stats_dict(s);
           },
           py::arg("x"), py::arg("labels"), py::arg("loss"), py::arg("teacher_logits") = py::none())
      .def("gradients",
           [](svd::Trainer& t, const py::array& x, const py::object& labels, svd::LossOptions lo,
              const py::object& teacher_logits) {
             Batch b = batch_of(t, x, labels, teacher_logits);
             std::vector<std::vector<float>> grads;
             svd::MatF dx;
             svd::BatchStats s;
             {
               py::gil_scoped_release nogil;
               s = t.gradients(b.x.data(), b.frames(), b.labels, lo, &grads, &dx, b.teacher_logits);
             }
             py::list g = float_arrays(grads);
             py::array_t<float> dxa({static_cast<py::ssize_t>(dx.rows()), static_cast<py::ssize_t>(dx.cols())});
             std::copy(dx.data(), dx.data() + dx.size(), dxa.mutable_data());
             return py::make_tuple(g, dxa, stats_dict(s));
           },
           py::arg("x"), py::arg("labels"), py::arg("loss"), py::arg("teacher_logits") = py::none(),
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
  m.def(
      "nonlinearities",
      [](const std::vector<std::shared_ptr<svd::Component>>& comps) {
        std::vector<const svd::Component*> p;
        for (const auto& c : comps) p.push_back(c.get());
        return svd::nonlinearities(p);
      },
      py::arg("components"),
      "Indices of the components hints may match: the activations before the last component.");
}

}  // namespace svd_py
