#include "nn/forward.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "linalg/blas.h"
#include "nn/kernels.h"
#include "nn/kind_ops.h"
#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {
namespace {

[[noreturn]] void unsupported(const Component& c, const std::string& where) {
  throw Error(where + ": svdistill cannot run " + kind_info(c.kind).name + " components (forward supports " +
              kind_list([](const KindOps& k) { return k.forward != nullptr; }) + ")");
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

bool can_forward(Kind kind) { return kind_ops(kind).forward != nullptr; }

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
  const ForwardFn f = kind_ops(c.kind).forward;
  if (!f) unsupported(c, std::string(kind_info(c.kind).name) + " " + c.marker);
  f(c, x, T, y);
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
