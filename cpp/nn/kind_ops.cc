// The compute row of each component kind: forward, trainable slots, backward.
// To add a kind: its functions here and its row in kOps (see README, "How to
// add a component kind").
#include "nn/kind_ops.h"

#include <algorithm>
#include <array>
#include <cmath>
#include <cstring>

#include "linalg/blas.h"
#include "nn/forward.h"
#include "nn/kernels.h"

namespace svd {
namespace {

// out[j] = beta * out[j] + sum_r f(r, j) for a T x n row-major source.
template <class F>
void column_sums(int64_t rows, int64_t n, float beta, float* out, F&& f) {
  for_rows(n, rows, [&](int64_t a, int64_t e) {
    for (int64_t j = a; j < e; ++j) out[j] = beta == 0.f ? 0.f : beta * out[j];
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t j = a; j < e; ++j) out[j] += f(r, j);
  });
}

// --- AffineTransform, LinearTransform ---

void affine_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t in = c.input_dim, out = c.output_dim;
  const float* w = c.params[0].data.data();
  const bool affine = c.kind == Kind::AffineTransform;
  if (affine) {
    const float* b = c.params[1].data.data();
    for_rows(T, out, [&](int64_t a, int64_t e) {
      for (int64_t r = a; r < e; ++r) std::memcpy(y + r * out, b, out * 4);
    });
  }
  blas::sgemm(false, true, T, out, in, 1.f, x, in, w, in, affine ? 1.f : 0.f, y, out);
}

void affine_param_grad(const BackwardArgs& a, int param, const float* dy, float beta, float* grad) {
  const int64_t in = a.c.input_dim, out = a.c.output_dim;
  if (param == 0)
    blas::sgemm(true, false, out, in, a.T, 1.f, dy, out, a.x, in, beta, grad, in);
  else
    column_sums(a.T, out, beta, grad, [&](int64_t r, int64_t j) { return dy[r * out + j]; });
}

bool affine_input_grad(const BackwardArgs& a, float* dy, MatF* dx) {
  const int64_t in = a.c.input_dim, out = a.c.output_dim;
  dx->resize(a.T, in);
  blas::sgemm(false, false, a.T, in, out, 1.f, dy, out, a.c.params[0].data.data(), in, 0.f, dx->data(), in);
  return true;
}

// --- Sigmoid, Tanh, Softmax, HiddenSoftmax, BlockSoftmax, Relu ---

void sigmoid_forward(const Component& c, const float* x, int64_t T, float* y) {
  apply_sigmoid(x, y, T * c.output_dim);
}

void tanh_forward(const Component& c, const float* x, int64_t T, float* y) {
  apply_tanh(x, y, T * c.output_dim);
}

void relu_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t out = c.output_dim;
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t i = a * out; i < e * out; ++i) y[i] = std::max(x[i], 0.f);
  });
}

template <void (*Span)(const float*, float*, int64_t)>
bool from_output_input_grad(const BackwardArgs& a, float* dy, MatF*) {
  const int64_t out = a.c.output_dim;
  for_rows(a.T, out, [&](int64_t b, int64_t e) { Span(a.y + b * out, dy + b * out, (e - b) * out); });
  return false;
}

void softmax_forward(const Component& c, const float* x, int64_t T, float* y) {
  softmax_rows(x, y, T, c.output_dim, 0, c.output_dim);
}

void block_softmax_forward(const Component& c, const float* x, int64_t T, float* y) {
  int64_t c0 = 0;
  for (int32_t w : c.ints) {
    softmax_rows(x, y, T, c.output_dim, c0, w);
    c0 += w;
  }
}

// --- ParametricRelu ---

void prelu_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t out = c.output_dim;
  const float* al = c.params[0].data.data();
  const float* be = c.params[1].data.data();
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) {
        const float v = x[r * out + j];
        y[r * out + j] = v >= 0.f ? al[j] * v : be[j] * v;
      }
  });
}

void prelu_param_grad(const BackwardArgs& a, int param, const float* dy, float beta, float* grad) {
  const int64_t out = a.c.output_dim;
  const float* X = a.x;
  if (param == 0)
    column_sums(a.T, out, beta, grad, [&](int64_t r, int64_t j) { return std::max(X[r * out + j], 0.f) * dy[r * out + j]; });
  else
    column_sums(a.T, out, beta, grad, [&](int64_t r, int64_t j) { return std::min(X[r * out + j], 0.f) * dy[r * out + j]; });
}

bool prelu_input_grad(const BackwardArgs& a, float* dy, MatF*) {
  const int64_t out = a.c.output_dim;
  const float* al = a.c.params[0].data.data();
  const float* be = a.c.params[1].data.data();
  for_rows(a.T, out, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) dy[r * out + j] *= a.x[r * out + j] > 0.f ? al[j] : be[j];
  });
  return false;
}

// --- Dropout (nnet-forward disables it), PDNN <linear> ---

void identity_forward(const Component& c, const float* x, int64_t T, float* y) {
  std::memcpy(y, x, static_cast<size_t>(T * c.output_dim) * 4);
}

// --- LengthNormComponent ---

void length_norm_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t in = c.input_dim, out = c.output_dim;
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r) {
      double ss = 0;
      for (int64_t j = 0; j < in; ++j) ss += static_cast<double>(x[r * in + j]) * x[r * in + j];
      const float scale = static_cast<float>(1.0 / std::sqrt(ss));  // as Kaldi: no floor
      for (int64_t j = 0; j < in; ++j) y[r * out + j] = x[r * in + j] * scale;
    }
  });
}

// --- Splice (pads at the utterance edges by repeating the first/last frame), Copy ---

void splice_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t in = c.input_dim, out = c.output_dim;
  const int64_t n = static_cast<int64_t>(c.ints.size());
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r)
      for (int64_t o = 0; o < n; ++o) {
        int64_t src = std::min<int64_t>(T - 1, std::max<int64_t>(0, r + c.ints[o]));
        std::memcpy(y + r * out + o * in, x + src * in, in * 4);
      }
  });
}

void copy_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t in = c.input_dim, out = c.output_dim;
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) y[r * out + j] = x[r * in + c.ints[j] - 1];
  });
}

// --- AddShift, Rescale (Kaldi updates them without momentum) ---

void add_shift_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t out = c.output_dim;
  const float* v = c.params[0].data.data();
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) y[r * out + j] = x[r * out + j] + v[j];
  });
}

void add_shift_param_grad(const BackwardArgs& a, int, const float* dy, float beta, float* grad) {
  const int64_t out = a.c.output_dim;
  column_sums(a.T, out, beta, grad, [&](int64_t r, int64_t j) { return dy[r * out + j]; });
}

void rescale_forward(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t out = c.output_dim;
  const float* v = c.params[0].data.data();
  for_rows(T, out, [&](int64_t a, int64_t e) {
    for (int64_t r = a; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) y[r * out + j] = x[r * out + j] * v[j];
  });
}

void rescale_param_grad(const BackwardArgs& a, int, const float* dy, float beta, float* grad) {
  const int64_t out = a.c.output_dim;
  const float* X = a.x;
  column_sums(a.T, out, beta, grad, [&](int64_t r, int64_t j) { return X[r * out + j] * dy[r * out + j]; });
}

bool rescale_input_grad(const BackwardArgs& a, float* dy, MatF*) {
  const int64_t out = a.c.output_dim;
  const float* v = a.c.params[0].data.data();
  for_rows(a.T, out, [&](int64_t b, int64_t e) {
    for (int64_t r = b; r < e; ++r)
      for (int64_t j = 0; j < out; ++j) dy[r * out + j] *= v[j];
  });
  return false;
}

constexpr const char* kShuffled =
    " (frames are shuffled: splicing and normalisation belong in the feature transform)";

// kind, forward, train, slots {param, coef, momentum, decay}, param_grad, input_grad, no_train_why,
// posteriors.
// Kinds without a row are kept and written but not run.
const std::vector<KindOps>& ops_rows() {
  static const std::vector<KindOps> rows = {
      {Kind::AffineTransform, affine_forward, true,
       {{0, "<LearnRateCoef>", true, true}, {1, "<BiasLearnRateCoef>", true, false}},
       affine_param_grad, affine_input_grad, "", false},
      {Kind::LinearTransform, affine_forward, true, {{0, "<LearnRateCoef>", true, true}},
       affine_param_grad, affine_input_grad, "", false},
      {Kind::Sigmoid, sigmoid_forward, true, {}, nullptr, from_output_input_grad<sigmoid_grad_span>, "", false},
      {Kind::Tanh, tanh_forward, true, {}, nullptr, from_output_input_grad<tanh_grad_span>, "", false},
      {Kind::Softmax, softmax_forward, false, {}, nullptr, nullptr, "", true},
      {Kind::HiddenSoftmax, softmax_forward, false, {}, nullptr, nullptr, "", false},
      {Kind::BlockSoftmax, block_softmax_forward, false, {}, nullptr, nullptr, "", true},
      {Kind::ParametricRelu, prelu_forward, true,
       {{0, "<AlphaLearnRateCoef>", true, false}, {1, "<BetaLearnRateCoef>", true, false}},
       prelu_param_grad, prelu_input_grad, "", false},
      {Kind::Dropout, identity_forward, true, {}, nullptr, nullptr, "", false},
      {Kind::LengthNormComponent, length_norm_forward, false, {}, nullptr, nullptr, kShuffled, false},
      {Kind::Splice, splice_forward, false, {}, nullptr, nullptr, kShuffled, false},
      {Kind::Copy, copy_forward, false, {}, nullptr, nullptr, kShuffled, false},
      {Kind::AddShift, add_shift_forward, true, {{0, "<LearnRateCoef>", false, false}},
       add_shift_param_grad, nullptr, "", false},
      {Kind::Rescale, rescale_forward, true, {{0, "<LearnRateCoef>", false, false}},
       rescale_param_grad, rescale_input_grad, "", false},
      {Kind::Relu, relu_forward, true, {}, nullptr, from_output_input_grad<relu_grad_span>, "", false},
      {Kind::Linear, identity_forward, true, {}, nullptr, nullptr, "", false},
  };
  return rows;
}

constexpr size_t kKinds = static_cast<size_t>(Kind::Unknown) + 1;

const std::array<const KindOps*, kKinds>& ops_index() {
  static const std::array<const KindOps*, kKinds> index = [] {
    static std::vector<KindOps> none;  // rows of the kinds the core only reads and writes
    none.reserve(kKinds);
    std::array<const KindOps*, kKinds> ix{};
    for (const KindOps& r : ops_rows()) ix[static_cast<size_t>(r.kind)] = &r;
    for (size_t k = 0; k < kKinds; ++k)
      if (!ix[k]) {
        none.push_back(KindOps{static_cast<Kind>(k), nullptr, false, {}, nullptr, nullptr, "", false});
        ix[k] = &none.back();
      }
    return ix;
  }();
  return index;
}

}  // namespace

const KindOps& kind_ops(Kind kind) { return *ops_index()[static_cast<size_t>(kind)]; }

std::string kind_list(bool (*has)(const KindOps&), bool markers, const char* last) {
  std::vector<std::string> names;
  for (size_t k = 0; k < kKinds; ++k) {
    const Kind kind = static_cast<Kind>(k);
    if (has(kind_ops(kind))) names.push_back(markers ? kind_info(kind).marker : kind_label(kind));
  }
  std::string s;
  for (size_t i = 0; i < names.size(); ++i)
    s += (i == 0 ? "" : i + 1 == names.size() ? last : ", ") + names[i];
  return s;
}

}  // namespace svd
