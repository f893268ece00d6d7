// cpp/linalg/compress.h as _core names: the option structs (def_readwrite,
// enums, __repr__), LayerStats, LayerInputs and compress_layer; and the
// structure scan compress() selects layers from.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cmath>
#include <map>
#include <memory>
#include <optional>
#include <sstream>

#include "bindings/bindings.h"
#include "linalg/compress.h"
#include "linalg/compress_stream.h"
#include "nnet1/byte_source.h"
#include "nnet1/errors.h"
#include "nnet1/reader.h"

namespace svd_py {
namespace {

using CompPtr = std::shared_ptr<svd::Component>;
using DArray = py::array_t<double, py::array::c_style | py::array::forcecast>;

const char* rule_name(svd::RankRule r) {
  switch (r) {
    case svd::RankRule::Fixed: return "fixed";
    case svd::RankRule::Fraction: return "fraction";
    case svd::RankRule::Energy: return "energy";
    case svd::RankRule::Nuclear: return "nuclear";
  }
  return "?";
}

const char* split_name(svd::Split s) {
  switch (s) {
    case svd::Split::Sqrt: return "sqrt";
    case svd::Split::Left: return "left";
    case svd::Split::Right: return "right";
  }
  return "?";
}

const char* dialect_name(svd::Dialect d) { return d == svd::Dialect::Pdnn ? "pdnn" : "kaldi"; }

std::string number(double x) {
  std::ostringstream s;
  s.precision(17);
  s << x;
  return s.str();
}

py::object nan_to_none(double x) { return std::isnan(x) ? py::object(py::none()) : py::object(py::float_(x)); }

}  // namespace

void BindCompress(py::module_& m) {
  py::enum_<svd::RankRule>(m, "RankRule")
      .value("fixed", svd::RankRule::Fixed)
      .value("fraction", svd::RankRule::Fraction)
      .value("energy", svd::RankRule::Energy)
      .value("nuclear", svd::RankRule::Nuclear);
  py::enum_<svd::SvdMethod>(m, "SvdMethod")
      .value("auto", svd::SvdMethod::Auto)
      .value("randomized", svd::SvdMethod::Randomized)
      .value("exact", svd::SvdMethod::Exact);
  py::enum_<svd::Split>(m, "Split")
      .value("sqrt", svd::Split::Sqrt)
      .value("left", svd::Split::Left)
      .value("right", svd::Split::Right);

  py::class_<svd::RankPolicy>(m, "RankPolicy")
      .def(py::init<>())
      .def_readwrite("rule", &svd::RankPolicy::rule)
      .def_readwrite("rank", &svd::RankPolicy::rank, "fixed: the rank; -1 leaves the layer whole")
      .def_readwrite("value", &svd::RankPolicy::value, "fraction, energy, nuclear: the fraction")
      .def_readwrite("min_gain", &svd::RankPolicy::min_gain)
      .def_readwrite("round_to", &svd::RankPolicy::round_to)
      .def_readwrite("always", &svd::RankPolicy::always, "factor even where it saves nothing")
      .def("__repr__", [](const svd::RankPolicy& p) {
        return std::string("RankPolicy(rule=") + rule_name(p.rule) + ", rank=" + std::to_string(p.rank) +
               ", value=" + number(p.value) + ", min_gain=" + number(p.min_gain) +
               ", round_to=" + std::to_string(p.round_to) +
               ", always=" + (p.always ? "True" : "False") + ")";
      });
  py::class_<svd::SvdOptions>(m, "SvdOptions")
      .def(py::init<>())
      .def_readwrite("method", &svd::SvdOptions::method)
      .def_readwrite("oversamples", &svd::SvdOptions::oversamples, "-1: max(32, k // 4)")
      .def_readwrite("n_iter", &svd::SvdOptions::n_iter, "-1: 2")
      .def_readwrite("seed", &svd::SvdOptions::seed)
      .def("__repr__", [](const svd::SvdOptions& o) {
        return std::string("SvdOptions(method=") + svd::method_name(o.method) +
               ", oversamples=" + std::to_string(o.oversamples) + ", n_iter=" + std::to_string(o.n_iter) +
               ", seed=" + std::to_string(o.seed) + ")";
      });
  py::class_<svd::FactorOptions>(m, "FactorOptions")
      .def(py::init<>())
      .def_readwrite("split", &svd::FactorOptions::split)
      .def_property(
          "dialect", [](const svd::FactorOptions& o) { return std::string(dialect_name(o.dialect)); },
          [](svd::FactorOptions& o, const std::string& d) {
            if (d == "kaldi") o.dialect = svd::Dialect::Kaldi;
            else if (d == "pdnn") o.dialect = svd::Dialect::Pdnn;
            else throw svd::Error("dialect must be 'kaldi' or 'pdnn', got '" + d + "'");
          })
      .def_readwrite("spectrum", &svd::FactorOptions::spectrum)
      .def_readwrite("output_errors", &svd::FactorOptions::output_errors)
      .def("__repr__", [](const svd::FactorOptions& o) {
        return std::string("FactorOptions(split=") + split_name(o.split) + ", dialect=" + dialect_name(o.dialect) +
               ", spectrum=" + (o.spectrum ? "True" : "False") +
               ", output_errors=" + (o.output_errors ? "True" : "False") + ")";
      });

  py::class_<svd::LayerInputs>(m, "LayerInputs")
      .def(py::init([](const py::array& mean, const py::array& covariance, double relative_ridge) {
             DArray mu = DArray::ensure(mean), cov = DArray::ensure(covariance);
             if (!mu || mu.ndim() != 1) throw svd::Error("a mean must be a 1-D array of numbers");
             if (!cov || cov.ndim() != 2) throw svd::Error("a covariance must be a 2-D array of numbers");
             if (cov.shape(0) != mu.shape(0) || cov.shape(1) != mu.shape(0))
               throw svd::Error("a covariance of shape (" + std::to_string(cov.shape(0)) + ", " +
                                std::to_string(cov.shape(1)) + ") for a mean of " + std::to_string(mu.shape(0)));
             auto in = std::make_unique<svd::LayerInputs>();
             in->mean.assign(mu.data(), mu.data() + mu.shape(0));
             in->covariance = Eigen::Map<const svd::MatD>(cov.data(), cov.shape(0), cov.shape(1));
             py::gil_scoped_release nogil;
             in->whitening = svd::whitening(in->covariance, relative_ridge);
             return in;
           }),
           py::arg("mean"), py::arg("covariance"), py::arg("relative_ridge") = svd::kWhiteningRidge,
           "A layer's input statistics and the whitening they define (Sigma + ridge = R^T R)")
      .def_property_readonly("dim", [](const svd::LayerInputs& i) { return static_cast<int64_t>(i.mean.size()); })
      .def_property_readonly("ridge", [](const svd::LayerInputs& i) { return i.whitening.ridge; })
      .def("__repr__", [](const svd::LayerInputs& i) {
        return "LayerInputs(dim=" + std::to_string(i.mean.size()) + ", ridge=" + number(i.whitening.ridge) + ")";
      });

  py::class_<svd::LayerStats>(m, "LayerStats")
      .def_readonly("out", &svd::LayerStats::out)
      .def_readonly("inp", &svd::LayerStats::in)
      .def_property_readonly("rank", [](const svd::LayerStats& s) -> py::object {
        return s.rank < 0 ? py::object(py::none()) : py::object(py::int_(s.rank));
      }, "None: left unchanged")
      .def_readonly("params_before", &svd::LayerStats::params_before)
      .def_readonly("params_after", &svd::LayerStats::params_after)
      .def_readonly("retained_energy", &svd::LayerStats::retained_energy)
      .def_readonly("rel_error", &svd::LayerStats::rel_error)
      .def_readonly("seconds", &svd::LayerStats::seconds)
      .def_readonly("method", &svd::LayerStats::method)
      .def_readonly("note", &svd::LayerStats::note)
      .def_property_readonly("output_error", [](const svd::LayerStats& s) { return nan_to_none(s.output_error); })
      .def_property_readonly("output_error_plain",
                             [](const svd::LayerStats& s) { return nan_to_none(s.output_error_plain); })
      .def_readonly("spectrum", &svd::LayerStats::spectrum)
      .def("__repr__", [](const svd::LayerStats& s) {
        return "LayerStats(out=" + std::to_string(s.out) + ", in=" + std::to_string(s.in) +
               ", rank=" + (s.rank < 0 ? std::string("None") : std::to_string(s.rank)) +
               ", params_before=" + std::to_string(s.params_before) +
               ", params_after=" + std::to_string(s.params_after) + ", retained_energy=" +
               number(s.retained_energy) + ", rel_error=" + number(s.rel_error) + ", method='" + s.method + "')";
      });

  m.def("compress_layer",
        [](const CompPtr& affine, const svd::RankPolicy& policy, const svd::SvdOptions& svd_options,
           const svd::FactorOptions& factor, const svd::LayerInputs* inputs) {
          svd::CompressedLayer r;
          {
            py::gil_scoped_release nogil;
            r = svd::compress_layer(*affine, policy, svd_options, factor, inputs);
          }
          std::vector<CompPtr> out;
          if (r.replacement.empty()) out.push_back(affine);  // unchanged: the layer itself
          for (auto& c : r.replacement) out.push_back(std::make_shared<svd::Component>(std::move(c)));
          return py::make_tuple(out, std::move(r.stats));
        },
        py::arg("affine"), py::arg("policy"), py::arg("svd"), py::arg("factor"), py::arg("inputs") = py::none(),
        "(components replacing the layer, LayerStats); the layer itself when left unchanged");
  m.def("layer_spectrum",
        [](const CompPtr& affine, const std::vector<double>& fractions, const std::string& dialect,
           const svd::LayerInputs* inputs) {
          if (dialect != "kaldi" && dialect != "pdnn")
            throw svd::Error("dialect must be 'kaldi' or 'pdnn', got '" + dialect + "'");
          svd::SpectrumReport r;
          {
            py::gil_scoped_release nogil;
            r = svd::layer_spectrum(*affine, fractions, dialect == "pdnn" ? svd::Dialect::Pdnn : svd::Dialect::Kaldi,
                                    inputs);
          }
          return py::make_tuple(r.s, r.energy_ranks, r.nuclear_ranks, r.break_even);
        },
        py::arg("affine"), py::arg("fractions"), py::arg("dialect"), py::arg("inputs") = py::none(),
        "(singular values, energy ranks, nuclear ranks (one per fraction), break-even rank)");
  m.def("default_oversamples", &svd::default_oversamples, py::arg("k"));
  m.def("per_rank_params", [](const std::string& dialect) {
    if (dialect == "kaldi") return svd::per_rank_params(svd::Dialect::Kaldi);
    if (dialect == "pdnn") return svd::per_rank_params(svd::Dialect::Pdnn);
    throw svd::Error("dialect must be 'kaldi' or 'pdnn', got '" + dialect + "'");
  }, py::arg("dialect"), "Parameters per unit of rank a factored layer has beyond its factors in dialect");

  m.def("compress_stream",
        [](const std::string& source, const std::string& output, const std::map<int64_t, svd::RankPolicy>& layers,
           const svd::SvdOptions& svd_options, svd::Split split, bool spectrum, std::optional<bool> binary,
           std::optional<std::string> dialect, const std::string& digits, py::object on_layer) {
          svd::StreamOptions o;
          o.layers = layers;
          o.svd = svd_options;
          o.split = split;
          o.spectrum = spectrum;
          if (binary) o.encoding = *binary ? svd::Encoding::Binary : svd::Encoding::Text;
          if (dialect) {
            if (*dialect == "kaldi") o.dialect = svd::Dialect::Kaldi;
            else if (*dialect == "pdnn") o.dialect = svd::Dialect::Pdnn;
            else throw svd::Error("dialect must be 'kaldi' or 'pdnn', got '" + *dialect + "'");
          }
          if (digits == "shortest") o.digits = svd::Digits::Shortest;
          else if (digits == "kaldi") o.digits = svd::Digits::Kaldi;
          else throw svd::Error("digits must be 'shortest' or 'kaldi', got '" + digits + "'");
          if (o.dialect == svd::Dialect::Pdnn && o.encoding == svd::Encoding::Binary)
            throw svd::Error("the PDNN dialect is text only: it cannot be written binary");
          std::function<void(int64_t, const svd::Component&)> progress;
          if (!on_layer.is_none())
            progress = [&on_layer](int64_t index, const svd::Component& c) {
              py::gil_scoped_acquire gil;
              on_layer(index, c.output_dim, c.input_dim);
            };
          svd::StreamReport r;
          {
            py::gil_scoped_release nogil;
            r = svd::compress_stream(source, output, o, progress);
          }
          py::list out;
          for (auto& l : r.layers) out.append(py::make_tuple(l.index, l.marker, std::move(l.stats)));
          return py::make_tuple(out, r.params_before, r.params_after, r.notes,
                                r.source_encoding == svd::Encoding::Binary, dialect_name(r.source_dialect));
        },
        py::arg("source"), py::arg("output"), py::arg("layers"), py::arg("svd"), py::arg("split"),
        py::arg("spectrum"), py::arg("binary"), py::arg("dialect"), py::arg("digits"),
        py::arg("on_layer") = py::none(),
        "Reads source, compresses the layers {index: RankPolicy}, writes output (atomically), reading\n"
        "and writing overlapping the SVDs: ([(index, marker, LayerStats)], params_before, params_after,\n"
        "the writer's notes, source binary, source dialect). on_layer(index, out, in) before each layer.");

  m.def("scan_structure",
        [](const std::string& path) {
          std::vector<std::tuple<std::string, std::string, int32_t, int32_t>> out;
          {
            py::gil_scoped_release nogil;
            svd::ModelReader reader(svd::open_source(path));
            reader.set_skip_data(true);
            svd::Component c;
            while (reader.next(&c))
              out.emplace_back(svd::kind_info(c.kind).name, c.marker, c.output_dim, c.input_dim);
          }
          return out;
        },
        py::arg("path"), "(kind, marker, out, in) of every component, matrices stepped over");
}

}  // namespace svd_py
