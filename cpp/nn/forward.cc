#include "nn/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "linalg/blas.h"
#include "nn/kernels.h"
#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {
namespace {

[[noreturn]] void unsupported(const Component& c, const std::string& where) {
  throw Error(where + ": svdistill cannot run " +
              kind_info(c.kind).name + " components (forward supports AffineTransform, LinearTransform, "
              "Sigmoid, Tanh, Softmax, BlockSoftmax, HiddenSoftmax, ParametricRelu, Dropout, Splice, "
              "AddShift, Rescale, Copy, LengthNormComponent and PDNN <relu>/<linear>)");
}

}  // namespace

void apply_sigmoid(const float* x, float* y, int64_t n) {
  for_rows(n, 1, [&](int64_t a, int64_t b) { sigmoid_span(x + a, y + a, b - a); });
}

void apply_tanh(const float* x, float* y, int64_t n) {
  for_rows(n, 1, [&](int64_t a, int64_t b) { tanh_span(x + a, y + a, b - a); });
}

void softmax_rows(const float* x, float* y, int64_t rows, int64_t cols, int64_t c0, int64_t width) {
  for_rows(rows, width, [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r) softmax_span(x + r * cols + c0, y + r * cols + c0, width);
  });
}

bool can_forward(Kind kind) {
  switch (kind) {
    case Kind::AffineTransform:
    case Kind::LinearTransform:
    case Kind::Sigmoid:
    case Kind::Tanh:
    case Kind::Softmax:
    case Kind::HiddenSoftmax:
    case Kind::BlockSoftmax:
    case Kind::ParametricRelu:
    case Kind::Dropout:
    case Kind::LengthNormComponent:
    case Kind::Splice:
    case Kind::Copy:
    case Kind::AddShift:
    case Kind::Rescale:
    case Kind::Relu:
    case Kind::Linear:
      return true;
    default:
      return false;
  }
}

std::string Network::label(size_t i) const {
  const Component& c = *comps_[i];
  if (i < transform_count_) return "feature transform component " + std::to_string(i + 1) + " " + c.marker;
  return "component " + std::to_string(i - transform_count_ + 1) + " " + c.marker;
}

Network::Network(std::vector<std::shared_ptr<Component>> components, size_t transform_count)
    : comps_(std::move(components)), transform_count_(transform_count) {
  for (size_t i = 0; i < comps_.size(); ++i) {
    const Component& c = *comps_[i];
    if (!can_forward(c.kind)) unsupported(c, label(i));
    if (i > 0 && comps_[i - 1]->output_dim != c.input_dim)
      throw Error(label(i) + ": input dim " + std::to_string(c.input_dim) +
                  " does not match the previous output dim " + std::to_string(comps_[i - 1]->output_dim));
    std::string problem = c.check();
    if (!problem.empty()) throw Error(label(i) + ": " + problem);
  }
  if (!comps_.empty()) {
    input_dim_ = comps_.front()->input_dim;
    output_dim_ = comps_.back()->output_dim;
  }
  for (const auto& c : comps_) {
    max_dim_ = std::max<int64_t>(max_dim_, std::max(c->input_dim, c->output_dim));
    if (c->kind == Kind::AffineTransform || c->kind == Kind::LinearTransform)
      weights_ += static_cast<double>(c->input_dim) * c->output_dim;
  }
}

void Network::run(const Component& c, const float* x, int64_t T, float* y) {
  const int64_t in = c.input_dim, out = c.output_dim;
  switch (c.kind) {
    case Kind::AffineTransform:
    case Kind::LinearTransform: {
      const float* w = c.params[0].data.data();
      const bool affine = c.kind == Kind::AffineTransform;
      if (affine) {
        const float* b = c.params[1].data.data();
        for_rows(T, out, [&](int64_t a, int64_t e) {
          for (int64_t r = a; r < e; ++r) std::memcpy(y + r * out, b, out * 4);
        });
      }
      blas::sgemm(false, true, T, out, in, 1.f, x, in, w, in, affine ? 1.f : 0.f, y, out);
      return;
    }
    case Kind::Sigmoid:
      apply_sigmoid(x, y, T * out);
      return;
    case Kind::Tanh:
      apply_tanh(x, y, T * out);
      return;
    case Kind::Softmax:
    case Kind::HiddenSoftmax:
      softmax_rows(x, y, T, out, 0, out);
      return;
    case Kind::BlockSoftmax: {
      int64_t c0 = 0;
      for (int32_t w : c.ints) {
        softmax_rows(x, y, T, out, c0, w);
        c0 += w;
      }
      return;
    }
    case Kind::ParametricRelu: {
      const float* al = c.params[0].data.data();
      const float* be = c.params[1].data.data();
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t j = 0; j < out; ++j) {
            const float v = x[r * out + j];
            y[r * out + j] = v >= 0.f ? al[j] * v : be[j] * v;
          }
      });
      return;
    }
    case Kind::Relu:
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t i = a * out; i < e * out; ++i) y[i] = std::max(x[i], 0.f);
      });
      return;
    case Kind::Dropout:  // nnet-forward disables dropout
    case Kind::Linear:
      std::memcpy(y, x, static_cast<size_t>(T * out) * 4);
      return;
    case Kind::LengthNormComponent:
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r) {
          double ss = 0;
          for (int64_t j = 0; j < in; ++j) ss += static_cast<double>(x[r * in + j]) * x[r * in + j];
          const float scale = static_cast<float>(1.0 / std::sqrt(ss));  // as Kaldi: no floor
          for (int64_t j = 0; j < in; ++j) y[r * out + j] = x[r * in + j] * scale;
        }
      });
      return;
    case Kind::Splice: {
      const int64_t n = static_cast<int64_t>(c.ints.size());
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t o = 0; o < n; ++o) {
            int64_t src = std::min<int64_t>(T - 1, std::max<int64_t>(0, r + c.ints[o]));
            std::memcpy(y + r * out + o * in, x + src * in, in * 4);
          }
      });
      return;
    }
    case Kind::Copy:
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t j = 0; j < out; ++j) y[r * out + j] = x[r * in + c.ints[j] - 1];
      });
      return;
    case Kind::AddShift:
    case Kind::Rescale: {
      const float* v = c.params[0].data.data();
      const bool add = c.kind == Kind::AddShift;
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t j = 0; j < out; ++j) y[r * out + j] = add ? x[r * out + j] + v[j] : x[r * out + j] * v[j];
      });
      return;
    }
    default:
      unsupported(c, std::string(kind_info(c.kind).name) + " " + c.marker);
  }
}

void Network::forward_into(const float* in, int64_t frames, size_t upto, MatF& result) const {
  upto = std::min(upto, comps_.size());
  const int64_t out_dim = upto == 0 ? input_dim_ : comps_[upto - 1]->output_dim;
  result.resize(frames, out_dim);
  if (upto == 0) {
    std::memcpy(result.data(), in, static_cast<size_t>(frames * out_dim) * 4);
    return;
  }
  // Two activation buffers, ping-ponged, sized for the widest layer and kept
  // between calls (their pages stay mapped); a concurrent call uses its own.
  // The last component writes straight into the result.
  std::unique_lock<std::mutex> lock(ws_mutex_, std::try_to_lock);
  FloatVector local_a, local_b;
  FloatVector& a = lock.owns_lock() ? ws_a_ : local_a;
  FloatVector& b = lock.owns_lock() ? ws_b_ : local_b;
  const size_t need = static_cast<size_t>(frames * max_dim_);
  if (upto > 1 && a.size() < need) a.resize(need);
  if (upto > 2 && b.size() < need) b.resize(need);
  blas::ThreadsForWork threads(2.0 * static_cast<double>(frames) * weights_);
  const float* x = in;
  for (size_t i = 0; i < upto; ++i) {
    float* y = i + 1 == upto ? result.data() : (i % 2 == 0 ? a.data() : b.data());
    run(*comps_[i], x, frames, y);
    x = y;
  }
}

MatF Network::forward(const float* in, int64_t frames, size_t upto) const {
  MatF out;
  forward_into(in, frames, upto, out);
  return out;
}

}  // namespace svd
