#include "nnet1/component.h"

#include <algorithm>
#include <cctype>
#include <stdexcept>

#include "nnet1/reader.h"
#include "nnet1/writer.h"

namespace svd {

namespace {

std::string dims(int64_t r, int64_t c) { return std::to_string(r) + "x" + std::to_string(c); }

// --- AffineTransform, LinearTransform: coefs, weight matrix (out x in)[, bias vector] ---

void read_affine(TokenReader& in, Component* c) {
  in.coefs(c);
  c->params.resize(2);
  in.matrix(&c->params[0], c->output_dim, c->input_dim, "weight matrix");
  in.vector(&c->params[1], c->output_dim, "bias vector");
}

void read_linear(TokenReader& in, Component* c) {
  in.coefs(c);
  c->params.resize(1);
  in.matrix(&c->params[0], c->output_dim, c->input_dim, "weight matrix");
}

bool default_coefs(const Component& c) {
  for (const auto& cf : kind_info(c.kind).coefs)
    if (c.coef(cf.first, cf.second) != cf.second) return false;
  return true;
}

void write_weights(TokenWriter& out, const Component& c) {
  // PDNN's own files carry no coefs: only non-default ones are kept.
  if (!out.pdnn() || !default_coefs(c)) {
    if (out.pdnn()) out.note_coefs_in_pdnn();
    out.coefs(c, true);
  }
  out.matrix(c.params[0]);
  if (c.params.size() > 1) out.vector(c.params[1]);
}

std::string check_weights(const Component& c) {
  const FloatBlock& w = c.params.at(0);
  if (w.rows != c.output_dim || w.cols != c.input_dim)
    return "matrix is " + dims(w.rows, w.cols) + " but the header says " + dims(c.output_dim, c.input_dim) +
           " (output x input)";
  if (c.kind == Kind::AffineTransform && c.params.at(1).size() != c.output_dim)
    return "bias has " + std::to_string(c.params.at(1).size()) + " values but the output dim is " +
           std::to_string(c.output_dim);
  return {};
}

// --- AddShift, Rescale: <LearnRateCoef>, one vector; ParametricRelu: coefs, alpha, beta ---

void read_one_vector(TokenReader& in, Component* c) {
  in.coefs(c);
  c->params.resize(1);
  in.vector(&c->params[0], c->output_dim, kind_info(c->kind).param_names[0]);
}

void write_one_vector(TokenWriter& out, const Component& c) {
  out.coefs(c, false);
  out.vector(c.params[0]);
}

void read_two_vectors(TokenReader& in, Component* c) {
  in.coefs(c);
  c->params.resize(2);
  in.vector(&c->params[0], c->output_dim, "alpha vector");
  in.vector(&c->params[1], c->output_dim, "beta vector");
}

void write_two_vectors(TokenWriter& out, const Component& c) {
  out.coefs(c, true);
  out.vector(c.params[0]);
  out.vector(c.params[1]);
}

std::string check_vectors(const Component& c) {
  const KindInfo& info = kind_info(c.kind);
  if (info.param_names.size() == 1) {
    if (c.params.at(0).size() != c.output_dim)
      return "vector has " + std::to_string(c.params.at(0).size()) + " values, expected " +
             std::to_string(c.output_dim);
    return {};
  }
  for (size_t i = 0; i < info.param_names.size(); ++i)
    if (c.params.at(i).size() != c.output_dim)
      return std::string(info.param_names[i]) + " has " + std::to_string(c.params.at(i).size()) +
             " values, expected " + std::to_string(c.output_dim);
  return {};
}

// --- Splice, Copy, BlockSoftmax: an integer vector ---

void read_ints(TokenReader& in, Component* c) { in.int_vector(&c->ints); }
void write_ints(TokenWriter& out, const Component& c) { out.int_vector(c.ints); }

std::string check_splice(const Component& c) {
  if (static_cast<int64_t>(c.ints.size()) * c.input_dim != c.output_dim)
    return std::to_string(c.ints.size()) + " frame offsets x input dim " + std::to_string(c.input_dim) +
           " != output dim " + std::to_string(c.output_dim);
  return {};
}

std::string check_copy(const Component& c) {
  if (static_cast<int64_t>(c.ints.size()) != c.output_dim)
    return std::to_string(c.ints.size()) + " copy indices but the output dim is " + std::to_string(c.output_dim);
  for (int32_t v : c.ints)
    if (v < 1 || v > c.input_dim)
      return "copy index " + std::to_string(v) + " is outside 1.." + std::to_string(c.input_dim);
  return {};
}

std::string check_block_softmax(const Component& c) {
  int64_t sum = 0;
  for (int32_t v : c.ints) {
    if (v <= 0) return "block dim " + std::to_string(v) + " is not positive";
    sum += v;
  }
  if (sum != c.output_dim)
    return "block dims sum to " + std::to_string(sum) + " but the output dim is " + std::to_string(c.output_dim);
  return {};
}

// --- Dropout: <DropoutRate> (or <DropoutRetention>) ---

bool dropout_retention(TokenReader& in, Component* c, const std::string& token) {
  if (token != "<DropoutRetention>") return false;
  c->set_coef("<DropoutRate>", 1.f - in.read_float(token));
  return true;
}

void read_dropout(TokenReader& in, Component* c) { in.coefs(c, dropout_retention); }
void write_coefs_only(TokenWriter& out, const Component& c) { out.coefs(c, false); }

std::string check_dropout(const Component& c) {
  float r = c.coef("<DropoutRate>", 0.5f);
  if (!(r >= 0.f && r < 1.f)) return "dropout rate " + std::to_string(r) + " is outside [0, 1)";
  return {};
}

// --- kinds kept as raw bytes ---

void read_raw(TokenReader& in, Component* c) { in.raw(c); }
void write_raw(TokenWriter& out, const Component& c) { out.bytes(c.raw); }

KindInfo raw_kind(Kind kind, const char* name, const char* marker, Count count = Count::Unknown) {
  return {kind, name, marker, Layout::Raw, false, {}, {}, read_raw, write_raw, nullptr, {}, count, true, false};
}

KindInfo activation(Kind kind, const char* name, const char* marker, bool pdnn_only = false) {
  return {kind, name, marker, Layout::None, true, {}, {}, nullptr, nullptr, nullptr, {}, Count::Params, false,
          pdnn_only};
}

// One row per kind, in Kind's order: kind, name, marker, layout, same_dims, coefs,
// param_names, read, write, check, init, count, own_end_marker, pdnn_only.
const std::vector<KindInfo>& kind_table() {
  static const std::vector<KindInfo> table = {
      {Kind::AffineTransform, "AffineTransform", "<AffineTransform>", Layout::Affine, false,
       {{"<LearnRateCoef>", 1.f}, {"<BiasLearnRateCoef>", 1.f}, {"<MaxNorm>", 0.f}}, {"linearity", "bias"},
       read_affine, write_weights, check_weights, {}, Count::Params, false, false},
      {Kind::LinearTransform, "LinearTransform", "<LinearTransform>", Layout::Linear, false,
       {{"<LearnRateCoef>", 1.f}}, {"linearity"}, read_linear, write_weights, check_weights, {}, Count::Params,
       false, false},
      activation(Kind::Sigmoid, "Sigmoid", "<Sigmoid>"),
      activation(Kind::Tanh, "Tanh", "<Tanh>"),
      activation(Kind::Softmax, "Softmax", "<Softmax>"),
      activation(Kind::HiddenSoftmax, "HiddenSoftmax", "<HiddenSoftmax>"),
      {Kind::BlockSoftmax, "BlockSoftmax", "<BlockSoftmax>", Layout::IntVector, true, {}, {}, read_ints,
       write_ints, check_block_softmax, {}, Count::Params, false, false},
      // Kaldi's initial values: alpha 1, beta 0.
      {Kind::ParametricRelu, "ParametricRelu", "<ParametricRelu>", Layout::TwoVectors, true,
       {{"<AlphaLearnRateCoef>", 0.f}, {"<BetaLearnRateCoef>", 0.f}}, {"alpha", "beta"}, read_two_vectors,
       write_two_vectors, check_vectors, {1.f, 0.f}, Count::Params, false, false},
      // Kaldi's Dropout reader insists on its end marker, in every dialect.
      {Kind::Dropout, "Dropout", "<Dropout>", Layout::DropoutRate, true, {{"<DropoutRate>", 0.5f}}, {},
       read_dropout, write_coefs_only, check_dropout, {}, Count::Params, true, false},
      activation(Kind::LengthNormComponent, "LengthNormComponent", "<LengthNormComponent>"),
      {Kind::Splice, "Splice", "<Splice>", Layout::IntVector, false, {}, {}, read_ints, write_ints, check_splice,
       {}, Count::Params, false, false},
      {Kind::Copy, "Copy", "<Copy>", Layout::IntVector, false, {}, {}, read_ints, write_ints, check_copy, {},
       Count::Params, false, false},
      {Kind::AddShift, "AddShift", "<AddShift>", Layout::OneVector, true, {{"<LearnRateCoef>", 1.f}},
       {"shift_data"}, read_one_vector, write_one_vector, check_vectors, {0.f}, Count::Params, false, false},
      {Kind::Rescale, "Rescale", "<Rescale>", Layout::OneVector, true, {{"<LearnRateCoef>", 1.f}},
       {"scale_data"}, read_one_vector, write_one_vector, check_vectors, {1.f}, Count::Params, false, false},
      activation(Kind::Relu, "Relu", "<relu>", true),
      activation(Kind::Linear, "Linear", "<linear>", true),
      raw_kind(Kind::ConvolutionalComponent, "ConvolutionalComponent", "<ConvolutionalComponent>"),
      raw_kind(Kind::LstmProjected, "LstmProjected", "<LstmProjected>"),
      raw_kind(Kind::BlstmProjected, "BlstmProjected", "<BlstmProjected>"),
      raw_kind(Kind::RecurrentComponent, "RecurrentComponent", "<RecurrentComponent>"),
      raw_kind(Kind::Rbm, "Rbm", "<Rbm>"),
      // Kaldi counts only updatable kinds; these are not updatable.
      raw_kind(Kind::KlHmm, "KlHmm", "<KlHmm>", Count::Zero),
      raw_kind(Kind::AveragePoolingComponent, "AveragePoolingComponent", "<AveragePoolingComponent>", Count::Zero),
      raw_kind(Kind::MaxPoolingComponent, "MaxPoolingComponent", "<MaxPoolingComponent>", Count::Zero),
      raw_kind(Kind::SentenceAveragingComponent, "SentenceAveragingComponent", "<SentenceAveragingComponent>"),
      raw_kind(Kind::SimpleSentenceAveragingComponent, "SimpleSentenceAveragingComponent",
               "<SimpleSentenceAveragingComponent>", Count::Zero),
      raw_kind(Kind::FramePoolingComponent, "FramePoolingComponent", "<FramePoolingComponent>"),
      raw_kind(Kind::ParallelComponent, "ParallelComponent", "<ParallelComponent>"),
      raw_kind(Kind::MultiBasisComponent, "MultiBasisComponent", "<MultiBasisComponent>"),
      raw_kind(Kind::Unknown, "Unknown", ""),
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

std::string kind_label(Kind kind) {
  const KindInfo& k = kind_info(kind);
  return k.pdnn_only ? std::string("PDNN ") + k.marker : std::string(k.name);
}

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
  switch (kind_info(kind).count) {
    case Count::Zero:
      return 0;
    case Count::Unknown:
      return -1;
    case Count::Params:
      break;
  }
  int64_t n = 0;
  for (const FloatBlock& p : params) n += p.size();
  return n;
}

std::string Component::check() const {
  const KindInfo& info = kind_info(kind);
  if (info.same_dims && input_dim != output_dim)
    return "input dim " + std::to_string(input_dim) + " and output dim " + std::to_string(output_dim) +
           " must be equal for " + info.name;
  return info.check ? info.check(*this) : std::string();
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
  for (float v : kind_info(kind).init) {
    FloatBlock b;
    b.cols = dim;
    b.data.assign(static_cast<size_t>(dim), v);
    c.params.push_back(std::move(b));
  }
  return c;
}

}  // namespace svd
