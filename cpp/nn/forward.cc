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

void sigmoid_inplace(float* x, int64_t n) {
  for_rows(n, 1, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) x[i] = 1.f / (1.f + fast_exp(-x[i]));
  });
}

void tanh_inplace(float* x, int64_t n) {
  for_rows(n, 1, [&](int64_t a, int64_t b) {
    for (int64_t i = a; i < b; ++i) {
      // tanh(x) = 1 - 2 / (exp(2x) + 1); exact at the saturated ends.
      x[i] = 1.f - 2.f / (fast_exp(2.f * x[i]) + 1.f);
    }
  });
}

void softmax_rows(float* x, int64_t rows, int64_t cols, int64_t c0, int64_t width) {
  for_rows(rows, width, [&](int64_t a, int64_t b) {
    for (int64_t r = a; r < b; ++r) {
      float* row = x + r * cols + c0;
      float mx = row[0];
      for (int64_t j = 1; j < width; ++j) mx = std::max(mx, row[j]);
      float sum = 0.f;
      for (int64_t j = 0; j < width; ++j) {
        row[j] = fast_exp(row[j] - mx);
        sum += row[j];
      }
      const float inv = 1.f / sum;
      for (int64_t j = 0; j < width; ++j) row[j] *= inv;
    }
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
}

// Runs c on x (T x in). Elementwise kinds work in place and return false;
// the others write y (resized to T x out) and return true.
bool Network::apply(const Component& c, MatF& x, MatF& y) {
  const int64_t T = x.rows(), in = c.input_dim, out = c.output_dim;
  if (x.cols() != in)
    throw Error(std::string(kind_info(c.kind).name) + ": input has " + std::to_string(x.cols()) +
                " columns, expected " + std::to_string(in));
  switch (c.kind) {
    case Kind::AffineTransform:
    case Kind::LinearTransform: {
      y.resize(T, out);
      const float* w = c.params[0].data.data();
      if (c.kind == Kind::AffineTransform) {
        const float* b = c.params[1].data.data();
        for_rows(T, out, [&](int64_t a, int64_t e) {
          for (int64_t r = a; r < e; ++r) std::memcpy(y.data() + r * out, b, out * 4);
        });
      }
      blas::sgemm(false, true, T, out, in, 1.f, x.data(), in, w, in,
                  c.kind == Kind::AffineTransform ? 1.f : 0.f, y.data(), out);
      return true;
    }
    case Kind::Sigmoid:
      sigmoid_inplace(x.data(), x.size());
      return false;
    case Kind::Tanh:
      tanh_inplace(x.data(), x.size());
      return false;
    case Kind::Softmax:
    case Kind::HiddenSoftmax:
      softmax_rows(x.data(), T, out, 0, out);
      return false;
    case Kind::BlockSoftmax: {
      int64_t c0 = 0;
      for (int32_t w : c.ints) {
        softmax_rows(x.data(), T, out, c0, w);
        c0 += w;
      }
      return false;
    }
    case Kind::ParametricRelu: {
      const float* al = c.params[0].data.data();
      const float* be = c.params[1].data.data();
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r) {
          float* row = x.data() + r * out;
          for (int64_t j = 0; j < out; ++j) row[j] = row[j] >= 0.f ? al[j] * row[j] : be[j] * row[j];
        }
      });
      return false;
    }
    case Kind::Relu:
      for_rows(T, out, [&](int64_t a, int64_t e) {
        float* p = x.data();
        for (int64_t i = a * out; i < e * out; ++i) p[i] = std::max(p[i], 0.f);
      });
      return false;
    case Kind::Dropout:  // nnet-forward disables dropout
    case Kind::Linear:
      return false;
    case Kind::LengthNormComponent: {
      y.resize(T, out);
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r) {
          double ss = 0;
          for (int64_t j = 0; j < in; ++j) ss += static_cast<double>(x(r, j)) * x(r, j);
          const float scale = static_cast<float>(1.0 / std::sqrt(ss));  // as Kaldi: no floor
          for (int64_t j = 0; j < in; ++j) y(r, j) = x(r, j) * scale;
        }
      });
      return true;
    }
    case Kind::Splice: {
      y.resize(T, out);
      const int64_t n = static_cast<int64_t>(c.ints.size());
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t o = 0; o < n; ++o) {
            int64_t src = std::min<int64_t>(T - 1, std::max<int64_t>(0, r + c.ints[o]));
            std::memcpy(y.data() + r * out + o * in, x.data() + src * in, in * 4);
          }
      });
      return true;
    }
    case Kind::Copy: {
      y.resize(T, out);
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t j = 0; j < out; ++j) y(r, j) = x(r, c.ints[j] - 1);
      });
      return true;
    }
    case Kind::AddShift:
    case Kind::Rescale: {
      y.resize(T, out);
      const float* v = c.params[0].data.data();
      const bool add = c.kind == Kind::AddShift;
      for_rows(T, out, [&](int64_t a, int64_t e) {
        for (int64_t r = a; r < e; ++r)
          for (int64_t j = 0; j < out; ++j) y(r, j) = add ? x(r, j) + v[j] : x(r, j) * v[j];
      });
      return true;
    }
    default:
      unsupported(c, std::string(kind_info(c.kind).name) + " " + c.marker);
  }
}

MatF Network::propagate(const Component& c, const MatF& x) {
  MatF a = x, b;
  return apply(c, a, b) ? b : a;
}

MatF Network::forward(const float* in, int64_t frames, size_t upto) const {
  // Two activation buffers, ping-ponged and kept between calls (their pages
  // are already mapped); a concurrent call uses its own.
  std::unique_lock<std::mutex> lock(ws_mutex_, std::try_to_lock);
  MatF local_a, local_b;
  MatF& a = lock.owns_lock() ? ws_a_ : local_a;
  MatF& b = lock.owns_lock() ? ws_b_ : local_b;
  a = Eigen::Map<const MatF>(in, frames, input_dim_);
  upto = std::min(upto, comps_.size());
  for (size_t i = 0; i < upto; ++i)
    if (apply(*comps_[i], a, b)) a.swap(b);
  MatF x = a;
  return x;
}

}  // namespace svd
