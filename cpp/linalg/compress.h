// One affine layer in, its truncated-SVD replacement out: the rank its policy
// gives (rounded, checked for a gain), the SVD method, the factor split, the
// output dialect's layout and the layer's statistics are all decided here.
// Python's compress() validates options, selects layers and streams the model;
// everything between reading an <AffineTransform> and writing what replaces it
// is compress_layer.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "linalg/svd.h"
#include "linalg/whiten.h"
#include "nnet1/component.h"

namespace svd {

enum class RankRule {
  Fixed,     // `rank` (rank, ranks, param_budget's rank; -1: leave the layer whole)
  Fraction,  // round(value x min(out, in)), at least 1 (half to even, as Python's round)
  Energy,    // smallest k keeping `value` of the (whitened) energy: exact or adaptive
  Nuclear,   // smallest k keeping `value` of sum(s), from the full spectrum
};

struct RankPolicy {
  RankRule rule = RankRule::Fixed;
  int64_t rank = 0;
  double value = 0;     // Fraction, Energy, Nuclear
  double min_gain = 0;  // factor only if the factors keep <= (1 - min_gain) of the weights
  int64_t round_to = 1;
  // Factor at the rank the rule gives even where that saves nothing (min_gain
  // and rounding ignored): factor_layer, and the budget's trial factorisations.
  bool always = false;
};

enum class SvdMethod { Auto, Randomized, Exact };

struct SvdOptions {
  SvdMethod method = SvdMethod::Auto;
  int64_t oversamples = -1;  // -1: default_oversamples(k)
  int n_iter = -1;           // -1: kDefaultIter
  uint64_t seed = 0;
};

// Auto: exact for small matrices (min(m, n) <= 64) or when the sketch, k plus
// its oversampling, would cover more than half of min(m, n); else randomized.
SvdMethod resolve_method(SvdMethod method, int64_t k, int64_t m, int64_t n, int64_t oversamples);
const char* method_name(SvdMethod method);
// The top-k SVD by `options` (Auto resolved by resolve_method).
SvdResult truncated_svd(const float* a, int64_t m, int64_t n, int64_t k, const SvdOptions& options);

// Where the singular values go: sqrt(s) on both factors, all on the out x k
// factor (U), or all on the k x in factor (the legacy scripts' choice).
enum class Split { Sqrt, Left, Right };

struct FactorOptions {
  Split split = Split::Sqrt;
  Dialect dialect = Dialect::Kaldi;
  bool spectrum = false;  // also return all singular values (of W R^T when calibrated)
  bool output_errors = true;  // calibrated: measure the output errors (one more SVD, the plain one)
};

// Parameters per unit of rank a factored layer has beyond its two factors in
// `dialect`: PDNN's first factor is an <affinetransform> with a zero bias.
inline int64_t per_rank_params(Dialect dialect) { return dialect == Dialect::Pdnn ? 1 : 0; }

// What calibration measured at a layer's inputs: their mean and covariance
// (float64) and the whitening they define (whiten.h).
struct LayerInputs {
  std::vector<double> mean;
  MatD covariance;
  Whitening whitening;
};

struct LayerStats {
  int64_t out = 0, in = 0;
  int64_t rank = -1;  // -1: left unchanged
  int64_t params_before = 0, params_after = 0;
  double retained_energy = 1;  // kept s^2 / ||W||_F^2 (whitened: output energy kept)
  double rel_error = 0;        // ||W - B A||_F / ||W||_F
  double seconds = 0;
  std::string method = "-";    // "exact", "randomized", "adaptive"; "-" when unchanged
  std::string note;
  // Calibrated only (NaN otherwise): relative output errors on the calibration
  // inputs, sqrt(E||y' - y||^2 / E||y - E y||^2), of the factors written and of
  // the plain truncated SVD at the same rank.
  double output_error;
  double output_error_plain;
  std::vector<double> spectrum;  // with FactorOptions::spectrum or the nuclear policy
  LayerStats();
};

struct CompressedLayer {
  std::vector<Component> replacement;  // the layer itself when left unchanged
  LayerStats stats;
};

// Kaldi: <LinearTransform> k x in (LearnRateCoef kept), <AffineTransform> out x k
// (bias, LearnRateCoef, BiasLearnRateCoef, MaxNorm kept). PDNN: <affinetransform>
// k x in with a zero bias, <linear> k, <affinetransform> out x k with the bias.
// With `inputs`, the rank-k pair minimises the output error on those inputs
// (the SVD of W R^T, mapped back) and the bias absorbs (W - B A) mean.
// Throws Error for a component that is not an <AffineTransform>, a weight with
// nan/inf entries, or a fixed rank above min(out, in).
CompressedLayer compress_layer(const Component& affine, const RankPolicy& policy, const SvdOptions& svd,
                               const FactorOptions& factor, const LayerInputs* inputs = nullptr);

// What `svdistill spectrum` reports for one affine layer: all singular values
// (of W R^T with `inputs`: output energies), the smallest ranks keeping each
// fraction of their energy (sum s^2 against ||W||_F^2, or ||W R^T||_F^2) and of
// their sum, and the break-even rank of the layer as compress writes it in `dialect`.
struct SpectrumReport {
  std::vector<double> s;
  std::vector<int64_t> energy_ranks, nuclear_ranks;  // one per fraction
  int64_t break_even = 0;
};

SpectrumReport layer_spectrum(const Component& affine, const std::vector<double>& fractions, Dialect dialect,
                              const LayerInputs* inputs = nullptr);

}  // namespace svd
