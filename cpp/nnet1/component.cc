#include "nnet1/component.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

namespace svd {

namespace {

const std::vector<KindInfo>& kind_table() {
  static const std::vector<KindInfo> table = {
      {Kind::AffineTransform, "AffineTransform", "<AffineTransform>", Layout::Affine, false,
       {{"<LearnRateCoef>", 1.f}, {"<BiasLearnRateCoef>", 1.f}, {"<MaxNorm>", 0.f}},
       {"linearity", "bias"}},
      {Kind::LinearTransform, "LinearTransform", "<LinearTransform>", Layout::Linear, false,
       {{"<LearnRateCoef>", 1.f}}, {"linearity"}},
      {Kind::Sigmoid, "Sigmoid", "<Sigmoid>", Layout::None, true, {}, {}},
      {Kind::Tanh, "Tanh", "<Tanh>", Layout::None, true, {}, {}},
      {Kind::Softmax, "Softmax", "<Softmax>", Layout::None, true, {}, {}},
      {Kind::HiddenSoftmax, "HiddenSoftmax", "<HiddenSoftmax>", Layout::None, true, {}, {}},
      {Kind::BlockSoftmax, "BlockSoftmax", "<BlockSoftmax>", Layout::IntVector, true, {}, {}},
      {Kind::ParametricRelu, "ParametricRelu", "<ParametricRelu>", Layout::TwoVectors, true,
       {{"<AlphaLearnRateCoef>", 0.f}, {"<BetaLearnRateCoef>", 0.f}}, {"alpha", "beta"}},
      {Kind::Dropout, "Dropout", "<Dropout>", Layout::DropoutRate, true,
       {{"<DropoutRate>", 0.5f}}, {}},
      {Kind::LengthNormComponent, "LengthNormComponent", "<LengthNormComponent>", Layout::None,
       true, {}, {}},
      {Kind::Splice, "Splice", "<Splice>", Layout::IntVector, false, {}, {}},
      {Kind::Copy, "Copy", "<Copy>", Layout::IntVector, false, {}, {}},
      {Kind::AddShift, "AddShift", "<AddShift>", Layout::OneVector, true,
       {{"<LearnRateCoef>", 1.f}}, {"shift_data"}},
      {Kind::Rescale, "Rescale", "<Rescale>", Layout::OneVector, true,
       {{"<LearnRateCoef>", 1.f}}, {"scale_data"}},
      {Kind::Relu, "Relu", "<relu>", Layout::None, true, {}, {}},
      {Kind::Linear, "Linear", "<linear>", Layout::None, true, {}, {}},
      {Kind::ConvolutionalComponent, "ConvolutionalComponent", "<ConvolutionalComponent>",
       Layout::Raw, false, {}, {}},
      {Kind::LstmProjected, "LstmProjected", "<LstmProjected>", Layout::Raw, false, {}, {}},
      {Kind::BlstmProjected, "BlstmProjected", "<BlstmProjected>", Layout::Raw, false, {}, {}},
      {Kind::RecurrentComponent, "RecurrentComponent", "<RecurrentComponent>", Layout::Raw,
       false, {}, {}},
      {Kind::Rbm, "Rbm", "<Rbm>", Layout::Raw, false, {}, {}},
      {Kind::KlHmm, "KlHmm", "<KlHmm>", Layout::Raw, false, {}, {}},
      {Kind::AveragePoolingComponent, "AveragePoolingComponent", "<AveragePoolingComponent>",
       Layout::Raw, false, {}, {}},
      {Kind::MaxPoolingComponent, "MaxPoolingComponent", "<MaxPoolingComponent>", Layout::Raw,
       false, {}, {}},
      {Kind::SentenceAveragingComponent, "SentenceAveragingComponent",
       "<SentenceAveragingComponent>", Layout::Raw, false, {}, {}},
      {Kind::SimpleSentenceAveragingComponent, "SimpleSentenceAveragingComponent",
       "<SimpleSentenceAveragingComponent>", Layout::Raw, false, {}, {}},
      {Kind::FramePoolingComponent, "FramePoolingComponent", "<FramePoolingComponent>",
       Layout::Raw, false, {}, {}},
      {Kind::ParallelComponent, "ParallelComponent", "<ParallelComponent>", Layout::Raw, false,
       {}, {}},
      {Kind::MultiBasisComponent, "MultiBasisComponent", "<MultiBasisComponent>", Layout::Raw,
       false, {}, {}},
      {Kind::Unknown, "Unknown", "", Layout::Raw, false, {}, {}},
  };
  return table;
}

std::string lower(const std::string& s) {
  std::string r(s);
  for (char& c : r) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return r;
}

}  // namespace

const KindInfo& kind_info(Kind kind) {
  for (const KindInfo& k : kind_table())
    if (k.kind == kind) return k;
  throw std::logic_error("kind missing from the table");
}

Kind kind_from_marker(const std::string& marker) {
  std::string m = lower(marker);
  for (const KindInfo& k : kind_table())
    if (k.kind != Kind::Unknown && lower(k.marker) == m) return k.kind;
  // Kaldi's backward-compatible aliases.
  if (m == "<lstmprojectedstreams>") return Kind::LstmProjected;
  if (m == "<blstmprojectedstreams>") return Kind::BlstmProjected;
  return Kind::Unknown;
}

bool is_modelled(Kind kind) { return kind_info(kind).layout != Layout::Raw; }

float Component::coef(const std::string& token, float fallback) const {
  for (const auto& c : coefs)
    if (c.first == token) return c.second;
  return fallback;
}

void Component::set_coef(const std::string& token, float value) {
  for (auto& c : coefs)
    if (c.first == token) {
      c.second = value;
      return;
    }
  coefs.emplace_back(token, value);
}

int64_t Component::num_params() const {
  // Kaldi counts only updatable components; these raw kinds are not updatable,
  // so nnet-info's total holds 0 for them although svdistill keeps their bytes.
  switch (kind) {
    case Kind::AveragePoolingComponent:
    case Kind::MaxPoolingComponent:
    case Kind::SimpleSentenceAveragingComponent:
    case Kind::KlHmm:
      return 0;
    default:
      break;
  }
  if (!is_modelled(kind)) return -1;
  int64_t n = 0;
  for (const FloatBlock& p : params) n += p.size();
  return n;
}

std::string Component::check() const {
  const KindInfo& info = kind_info(kind);
  auto dims = [](int64_t r, int64_t c) {
    return std::to_string(r) + "x" + std::to_string(c);
  };
  if (info.same_dims && input_dim != output_dim)
    return "input dim " + std::to_string(input_dim) + " and output dim " +
           std::to_string(output_dim) + " must be equal for " + info.name;
  switch (info.layout) {
    case Layout::Affine:
    case Layout::Linear: {
      const FloatBlock& w = params.at(0);
      if (w.rows != output_dim || w.cols != input_dim)
        return "matrix is " + dims(w.rows, w.cols) + " but the header says " +
               dims(output_dim, input_dim) + " (output x input)";
      if (info.layout == Layout::Affine && params.at(1).size() != output_dim)
        return "bias has " + std::to_string(params.at(1).size()) +
               " values but the output dim is " + std::to_string(output_dim);
      break;
    }
    case Layout::OneVector:
      if (params.at(0).size() != output_dim)
        return "vector has " + std::to_string(params.at(0).size()) + " values, expected " +
               std::to_string(output_dim);
      break;
    case Layout::TwoVectors:
      for (size_t i = 0; i < 2; ++i)
        if (params.at(i).size() != output_dim)
          return std::string(info.param_names[i]) + " has " +
                 std::to_string(params.at(i).size()) + " values, expected " +
                 std::to_string(output_dim);
      break;
    case Layout::IntVector:
      if (kind == Kind::Splice) {
        if (static_cast<int64_t>(ints.size()) * input_dim != output_dim)
          return std::to_string(ints.size()) + " frame offsets x input dim " +
                 std::to_string(input_dim) + " != output dim " + std::to_string(output_dim);
      } else if (kind == Kind::Copy) {
        if (static_cast<int64_t>(ints.size()) != output_dim)
          return std::to_string(ints.size()) + " copy indices but the output dim is " +
                 std::to_string(output_dim);
        for (int32_t v : ints)
          if (v < 1 || v > input_dim)
            return "copy index " + std::to_string(v) + " is outside 1.." +
                   std::to_string(input_dim);
      } else {  // BlockSoftmax
        int64_t sum = 0;
        for (int32_t v : ints) {
          if (v <= 0) return "block dim " + std::to_string(v) + " is not positive";
          sum += v;
        }
        if (sum != output_dim)
          return "block dims sum to " + std::to_string(sum) + " but the output dim is " +
                 std::to_string(output_dim);
      }
      break;
    case Layout::DropoutRate: {
      float r = coef("<DropoutRate>", 0.5f);
      if (!(r >= 0.f && r < 1.f))
        return "dropout rate " + std::to_string(r) + " is outside [0, 1)";
      break;
    }
    default:
      break;
  }
  return {};
}

namespace {
Component make_with_defaults(Kind kind, int32_t out, int32_t in) {
  Component c;
  c.kind = kind;
  c.marker = kind_info(kind).marker;
  c.output_dim = out;
  c.input_dim = in;
  for (const auto& cf : kind_info(kind).coefs) c.coefs.emplace_back(cf.first, cf.second);
  return c;
}
}  // namespace

Component make_affine(int32_t out, int32_t in) {
  Component c = make_with_defaults(Kind::AffineTransform, out, in);
  c.params.resize(2);
  c.params[0].rows = out;
  c.params[0].cols = in;
  c.params[0].data.assign(static_cast<size_t>(out) * in, 0.f);
  c.params[1].cols = out;
  c.params[1].data.assign(out, 0.f);
  return c;
}

Component make_linear(int32_t out, int32_t in) {
  Component c = make_with_defaults(Kind::LinearTransform, out, in);
  c.params.resize(1);
  c.params[0].rows = out;
  c.params[0].cols = in;
  c.params[0].data.assign(static_cast<size_t>(out) * in, 0.f);
  return c;
}

Component make_simple(Kind kind, int32_t dim) {
  const Layout layout = kind_info(kind).layout;
  if (layout != Layout::None && layout != Layout::OneVector && layout != Layout::TwoVectors &&
      layout != Layout::DropoutRate)
    throw std::invalid_argument(std::string(kind_info(kind).name) + " needs more than a dimension");
  Component c = make_with_defaults(kind, dim, dim);
  // Kaldi's initial values: AddShift 0, Rescale 1, ParametricRelu alpha 1 and beta 0.
  auto vec = [&](float v) {
    FloatBlock b;
    b.cols = dim;
    b.data.assign(static_cast<size_t>(dim), v);
    c.params.push_back(std::move(b));
  };
  if (kind == Kind::AddShift) vec(0.f);
  if (kind == Kind::Rescale) vec(1.f);
  if (kind == Kind::ParametricRelu) {
    vec(1.f);
    vec(0.f);
  }
  return c;
}

}  // namespace svd
