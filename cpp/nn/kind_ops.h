// What the core computes for each component kind, one row per kind: its
// forward pass as nnet-forward runs it and, for the kinds a student may hold,
// its trainable parameter blocks and its backward pass. A kind's data layout,
// reading, writing and checks are its row of the nnet1 kind table
// (nnet1/component.cc); the two tables are joined by Kind. They are two
// because the I/O library (nnet1/) is built and fuzzed without BLAS.
#pragma once

#include <string>
#include <vector>

#include "linalg/svd.h"
#include "nnet1/component.h"

namespace svd {

// y (T x out) = c(x (T x in)); y does not overlap x.
using ForwardFn = void (*)(const Component& c, const float* x, int64_t T, float* y);

// One component's place in a backward pass.
struct BackwardArgs {
  const Component& c;
  const float* x;  // its input, T x in
  const float* y;  // its output, T x out
  int64_t T;
};
// grad = beta * grad + d(objective)/d(params[param]) (beta == 0: grad is overwritten), from dy,
// the gradient w.r.t. the output.
using ParamGradFn = void (*)(const BackwardArgs& a, int param, const float* dy, float beta, float* grad);
// The gradient w.r.t. the input: written over dy (returns false) or into *dx,
// resized to T x in (returns true). Runs after the parameter gradients.
using InputGradFn = bool (*)(const BackwardArgs& a, float* dy, MatF* dx);

// One trainable float block of a kind.
struct TrainSlot {
  int param;         // index into Component::params
  const char* coef;  // its learn-rate coefficient (default: the kind's coefs row); 0 freezes it
  bool momentum;     // Kaldi applies momentum to it
  bool decay;        // L2 / weight decay applies to it (weights, not biases)
};

struct KindOps {
  Kind kind;
  ForwardFn forward;  // nullptr: forward cannot run the kind
  bool train;         // a student may hold it (besides its final softmax)
  std::vector<TrainSlot> slots;
  ParamGradFn param_grad;  // set when slots is not empty
  InputGradFn input_grad;  // nullptr: the identity
  const char* no_train_why;  // appended to "cannot train through <kind>", or ""
  // Its output is per-frame posteriors (one distribution per softmax block): a
  // student or teacher may end in it, and the loss works on the logits feeding it.
  bool posteriors;
};

// The row of a kind (kinds the core cannot run have forward == nullptr).
const KindOps& kind_ops(Kind kind);

// The kinds whose row satisfies `has`, for messages, in kind-table order:
// "AffineTransform, ..., PDNN <relu> and PDNN <linear>"; with `markers`,
// "<Softmax> or <BlockSoftmax>" (joined by `last` before the last one).
std::string kind_list(bool (*has)(const KindOps&), bool markers = false, const char* last = " and ");

}  // namespace svd
