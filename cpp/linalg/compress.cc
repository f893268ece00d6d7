#include "linalg/compress.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <limits>

#include "linalg/blas.h"
#include "linalg/rank_policy.h"
#include "nnet1/errors.h"

namespace svd {
namespace {

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// round(f x lim) with ties to even (the current rounding mode: Python's round), at least 1.
int64_t fraction_rank(double fraction, int64_t lim) {
  return std::max<int64_t>(1, static_cast<int64_t>(std::nearbyint(fraction * static_cast<double>(lim))));
}

std::string percent(double x) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.0f%%", x * 100);
  return buf;
}

// The top-k factors of `f` with the singular values placed by `split`, in
// float32 as the factors are written: first k x in (V^T), second out x k (U).
void split_factors(const SvdResult& f, int64_t k, Split split, FloatBlock* first, FloatBlock* second) {
  const int64_t m = f.u.rows(), n = f.vt.cols();
  std::vector<float> left(k), right(k);  // the scales of U's columns and of V^T's rows
  for (int64_t j = 0; j < k; ++j) {
    const float s = static_cast<float>(f.s[j]);
    left[j] = split == Split::Sqrt ? std::sqrt(s) : split == Split::Left ? s : 1.f;
    right[j] = split == Split::Sqrt ? std::sqrt(s) : split == Split::Right ? s : 1.f;
  }
  for (int64_t i = 0; i < k; ++i) {
    const float* src = f.vt.data() + i * n;
    float* dst = first->data.data() + i * n;
    for (int64_t c = 0; c < n; ++c) dst[c] = split == Split::Left ? src[c] : src[c] * right[i];
  }
  for (int64_t r = 0; r < m; ++r) {
    const float* src = f.u.data() + r * f.u.cols();
    float* dst = second->data.data() + r * k;
    for (int64_t j = 0; j < k; ++j) dst[j] = split == Split::Right ? src[j] : src[j] * left[j];
  }
}

// The factors of `f` truncated to rank k (f may hold more).
void keep_top(SvdResult* f, int64_t k) {
  if (static_cast<int64_t>(f->s.size()) == k) return;
  f->u = MatF(f->u.leftCols(k));
  f->vt = MatF(f->vt.topRows(k));
  f->s.resize(k);
}

}  // namespace

SvdMethod resolve_method(SvdMethod method, int64_t k, int64_t m, int64_t n, int64_t oversamples) {
  if (method != SvdMethod::Auto) return method;
  const int64_t p = oversamples < 0 ? default_oversamples(k) : oversamples;
  const int64_t lim = std::min(m, n);
  return lim <= 64 || 2 * (k + p) > lim ? SvdMethod::Exact : SvdMethod::Randomized;
}

const char* method_name(SvdMethod method) {
  switch (method) {
    case SvdMethod::Auto: return "auto";
    case SvdMethod::Randomized: return "randomized";
    case SvdMethod::Exact: return "exact";
  }
  return "?";
}

SvdResult truncated_svd(const float* a, int64_t m, int64_t n, int64_t k, const SvdOptions& o) {
  if (resolve_method(o.method, k, m, n, o.oversamples) == SvdMethod::Exact) return exact_svd(a, m, n, k);
  return randomized_svd(a, m, n, k, {o.oversamples, o.n_iter, o.seed, SketchRoute::Auto});
}

LayerStats::LayerStats() : output_error(kNaN), output_error_plain(kNaN) {}

namespace {

// The layer's weight matrix, checked: an affine layer, finite, inputs of its dimension.
const float* checked_weight(const Component& affine, const LayerInputs* inputs, const char* what) {
  if (affine.kind != Kind::AffineTransform || affine.params.size() != 2)
    throw Error(std::string(what) + " needs an <AffineTransform>, got " + affine.marker);
  const int64_t out = affine.output_dim, in = affine.input_dim;
  const float* w = affine.params[0].data.data();
  for (int64_t i = 0, n = out * in; i < n; ++i)
    if (!std::isfinite(w[i])) throw Error("the weight matrix has nan/inf entries");
  if (inputs && (static_cast<int64_t>(inputs->mean.size()) != in || inputs->covariance.rows() != in ||
                 inputs->covariance.cols() != in))
    throw Error("calibration statistics of dimension " + std::to_string(inputs->mean.size()) +
                " for a layer with " + std::to_string(in) + " inputs");
  return w;
}

}  // namespace

SpectrumReport layer_spectrum(const Component& affine, const std::vector<double>& fractions, Dialect dialect,
                              const LayerInputs* inputs) {
  const float* w = checked_weight(affine, inputs, "layer_spectrum");
  const int64_t out = affine.output_dim, in = affine.input_dim;
  SpectrumReport r;
  double total;
  if (inputs) {
    MatF m = whiten_weight(w, out, in, inputs->whitening, &total);
    r.s = singular_values(m.data(), out, in);
  } else {
    r.s = singular_values(w, out, in);
    total = frobenius_sq(w, out * in);  // as compress's energy policy counts it
  }
  for (double f : fractions) {
    r.energy_ranks.push_back(energy_rank(r.s, f, total));
    r.nuclear_ranks.push_back(nuclear_rank(r.s, f));
  }
  r.break_even = break_even_rank(out, in, per_rank_params(dialect));
  return r;
}

CompressedLayer compress_layer(const Component& affine, const RankPolicy& policy, const SvdOptions& svd,
                               const FactorOptions& factor, const LayerInputs* inputs) {
  const auto t0 = std::chrono::steady_clock::now();
  const float* w = checked_weight(affine, inputs, "compress_layer");
  const int64_t out = affine.output_dim, in = affine.input_dim, lim = std::min(out, in);

  CompressedLayer result;
  LayerStats& st = result.stats;
  st.out = out;
  st.in = in;
  st.params_before = st.params_after = affine.num_params();
  const int64_t per_rank = per_rank_params(factor.dialect);

  // Calibrated, every policy works on W R^T, whose spectrum is the output energy.
  MatF whitened;
  double total_energy;
  const float* a = w;
  if (inputs) {
    whitened = whiten_weight(w, out, in, inputs->whitening, &total_energy);
    a = whitened.data();
  } else {
    total_energy = frobenius_sq(w, out * in);
  }
  if (factor.spectrum || policy.rule == RankRule::Nuclear) st.spectrum = singular_values(a, out, in);

  SvdResult f;
  bool have = false;  // f holds factors of rank >= k
  int64_t k = 0;
  std::string used = method_name(svd.method);
  switch (policy.rule) {
    case RankRule::Fixed:
      if (policy.rank > lim)
        throw Error("rank " + std::to_string(policy.rank) + " exceeds min(out, in) = " + std::to_string(lim));
      k = policy.rank;
      break;
    case RankRule::Fraction:
      k = fraction_rank(policy.value, lim);
      break;
    case RankRule::Energy:
      if (svd.method == SvdMethod::Exact) {
        // The smallest k, from the exact spectrum: one decomposition gives k and the factors.
        f = exact_svd(a, out, in, lim);
        k = std::max<int64_t>(1, energy_rank(f.s, policy.value, total_energy));
      } else {
        // An adaptive sketch grown until the energy it keeps (exact for its factors)
        // reaches the target: no full spectrum. A sketch's singular values never
        // exceed the true ones, so k is never below the smallest rank.
        f = adaptive_energy_svd(a, out, in, policy.value, {svd.oversamples, svd.n_iter, svd.seed,
                                                           SketchRoute::Auto});
        k = std::max<int64_t>(1, static_cast<int64_t>(f.s.size()));
        used = "adaptive";
      }
      have = static_cast<int64_t>(f.s.size()) >= k;
      break;
    case RankRule::Nuclear:
      k = nuclear_rank(st.spectrum, policy.value);
      break;
  }
  const bool whole = policy.rule == RankRule::Fixed && policy.rank < 0;
  const int64_t rounded =
      policy.always ? k : round_rank(std::max<int64_t>(k, 1), std::max<int64_t>(1, policy.round_to), out, in);
  // More than the decomposition kept: recompute at the rounded rank (the exact
  // energy rule's full decomposition holds every rank; its prefix is exact_svd's).
  if (rounded > static_cast<int64_t>(f.s.size())) have = false;
  k = rounded;
  const auto elapsed = [&] { return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count(); };
  if (whole || (!policy.always && !worth_factoring(k, out, in, policy.min_gain, per_rank))) {
    st.note = "unchanged: factoring would not reduce parameters" +
              (policy.min_gain > 0 ? " by " + percent(policy.min_gain) : std::string());
    st.seconds = elapsed();
    return result;
  }
  if (!have) {
    const SvdMethod m = resolve_method(svd.method, k, out, in, svd.oversamples);
    f = truncated_svd(a, out, in, k, {m, svd.oversamples, svd.n_iter, svd.seed});
    used = method_name(m);
  }
  keep_top(&f, k);
  // The factors are an orthogonal projection of W (W R^T calibrated): this is their exact energy.
  double kept = 0;
  for (double s : f.s) kept += s * s;
  const double retained = total_energy > 0 ? kept / total_energy : 1.0;
  if (inputs) unwhiten_rows(f.vt, inputs->whitening);  // V^T R^{-T}: back to W's inputs

  const bool pdnn = factor.dialect == Dialect::Pdnn;
  Component first = pdnn ? make_affine(static_cast<int32_t>(k), static_cast<int32_t>(in))
                         : make_linear(static_cast<int32_t>(k), static_cast<int32_t>(in));
  Component second = make_affine(static_cast<int32_t>(out), static_cast<int32_t>(k));
  split_factors(f, k, factor.split, &first.params[0], &second.params[0]);
  const float lrc = affine.coef("<LearnRateCoef>", 1.f);
  first.set_coef("<LearnRateCoef>", lrc);
  second.set_coef("<LearnRateCoef>", lrc);
  second.set_coef("<BiasLearnRateCoef>", affine.coef("<BiasLearnRateCoef>", 1.f));
  second.set_coef("<MaxNorm>", affine.coef("<MaxNorm>", 0.f));
  second.params[1].data = affine.params[1].data;
  const float* A = first.params[0].data.data();
  const float* B = second.params[0].data.data();

  if (!inputs) {
    st.rel_error = std::sqrt(std::max(0.0, 1.0 - retained));
  } else {
    // The bias absorbs the mean of what is cut: b + (W - B A) mean, in double.
    const std::vector<double>& mean = inputs->mean;
    std::vector<double> am(k, 0.0);
    for (int64_t i = 0; i < k; ++i)
      for (int64_t c = 0; c < in; ++c) am[i] += static_cast<double>(A[i * in + c]) * mean[c];
    float* bias = second.params[1].data.data();
    for (int64_t r = 0; r < out; ++r) {
      double cut = 0;
      for (int64_t c = 0; c < in; ++c) cut += static_cast<double>(w[r * in + c]) * mean[c];
      for (int64_t j = 0; j < k; ++j) cut -= static_cast<double>(B[r * k + j]) * am[j];
      bias[r] = static_cast<float>(static_cast<double>(bias[r]) + cut);
    }
    // ||W - B A||_F / ||W||_F: the whitened pair is not W's projection.
    MatF diff = Eigen::Map<const MatF>(w, out, in);
    blas::sgemm(false, false, out, in, k, -1.f, B, k, A, in, 1.f, diff.data(), in);
    st.rel_error = std::sqrt(frobenius_sq(diff.data(), out * in) / std::max(frobenius_sq(w, out * in), 1e-300));
    // E||W (x - mean)||^2 without the ridge: the output's variation, the errors' scale.
    const double total = std::max(total_energy - inputs->whitening.ridge * frobenius_sq(w, out * in), 0.0);
    if (!factor.output_errors) {
    } else if (total <= 0) {
      st.output_error = st.output_error_plain = 0;
    } else {
      SvdResult p = truncated_svd(w, out, in, k, {resolve_method(svd.method, k, out, in, svd.oversamples),
                                                  svd.oversamples, svd.n_iter, svd.seed});
      MatF us(out, k);
      for (int64_t r = 0; r < out; ++r)
        for (int64_t j = 0; j < k; ++j) us(r, j) = static_cast<float>(static_cast<double>(p.u(r, j)) * p.s[j]);
      const double e_w = output_error_energy(w, B, A, out, k, in, inputs->covariance, nullptr);
      const double e_p = output_error_energy(w, us.data(), p.vt.data(), out, k, in, inputs->covariance, &mean);
      st.output_error = std::sqrt(e_w / total);
      st.output_error_plain = std::sqrt(e_p / total);
    }
  }

  result.replacement.push_back(std::move(first));
  if (pdnn) result.replacement.push_back(make_simple(Kind::Linear, static_cast<int32_t>(k)));
  result.replacement.push_back(std::move(second));
  st.params_after = 0;
  for (const Component& c : result.replacement) st.params_after += c.num_params();
  st.rank = k;
  st.retained_energy = std::min(retained, 1.0);
  st.method = used;
  st.seconds = elapsed();
  return result;
}

}  // namespace svd
