// The in-memory form of one nnet1 component and the table of component kinds.
// Kinds whose data layout we model are parsed into parameters; every other
// kind (LSTM, convolution, a fork's own, ...) keeps its exact bytes.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "util/block_alloc.h"

namespace svd {

enum class Encoding { Text, Binary };
enum class Dialect { Kaldi, Pdnn };

enum class Kind {
  // Modelled: parsed, validated, converted between encodings and dialects.
  AffineTransform,
  LinearTransform,
  Sigmoid,
  Tanh,
  Softmax,
  HiddenSoftmax,
  BlockSoftmax,
  ParametricRelu,
  Dropout,
  LengthNormComponent,
  Splice,
  Copy,
  AddShift,
  Rescale,
  Relu,    // PDNN <relu>: Kaldi has no such component
  Linear,  // PDNN <linear>: the identity
  // Known to Kaldi but kept as raw bytes.
  ConvolutionalComponent,
  LstmProjected,
  BlstmProjected,
  RecurrentComponent,
  Rbm,
  KlHmm,
  AveragePoolingComponent,
  MaxPoolingComponent,
  SentenceAveragingComponent,
  SimpleSentenceAveragingComponent,
  FramePoolingComponent,
  ParallelComponent,
  MultiBasisComponent,
  Unknown,
};

// What follows the dims of a modelled kind, in Kaldi's order (the row's read
// and write functions read and write it).
enum class Layout {
  None,          // activations
  Affine,        // coefs, matrix out x in, vector out
  Linear,        // coefs, matrix out x in
  OneVector,     // optional <LearnRateCoef>, vector in (AddShift, Rescale)
  TwoVectors,    // coefs, vector out, vector out (ParametricRelu)
  IntVector,     // integer vector (Splice, Copy, BlockSoftmax)
  DropoutRate,   // <DropoutRate> (or <DropoutRetention>)
  Raw,           // not modelled
};

struct Component;
class TokenReader;  // nnet1/reader.h
class TokenWriter;  // nnet1/writer.h

// How nnet-info counts a kind's parameters.
enum class Count {
  Params,   // the size of its float parameters
  Zero,     // Kaldi does not update the kind: 0 although svdistill keeps its bytes
  Unknown,  // kept as raw bytes: unknown
};

// One row of the kind table (nnet1/component.cc): everything the I/O layer
// knows about a kind. What the core computes for it is its row in
// nn/kind_ops.cc.
struct KindInfo {
  Kind kind;
  const char* name;        // canonical kind name, e.g. "AffineTransform"
  const char* marker;      // Kaldi's marker, e.g. "<AffineTransform>"; PDNN-only kinds: the PDNN one
  Layout layout;
  bool same_dims;          // input dim must equal output dim
  // Scalar attributes (token, default) in Kaldi's write order.
  std::vector<std::pair<const char*, float>> coefs;
  // Names of the float parameters as nnet-info prints them.
  std::vector<const char*> param_names;
  // Its data after the dims, in either encoding; nullptr: none. The reader has
  // filled in the dims and the default coefs; the writer writes the header
  // before and the end marker after.
  void (*read)(TokenReader& in, Component* c);
  void (*write)(TokenWriter& out, const Component& c);
  // Kaldi's structural checks of its data (params against the dims, ...), after
  // same_dims: "" when fine, else what is wrong; nullptr: none.
  std::string (*check)(const Component& c);
  // make_simple: the initial value of each float parameter, as Kaldi's
  // initialisation does it.
  std::vector<float> init;
  Count count;
  // Its <!EndOfComponent> belongs to its data: Kaldi's reader of the kind reads it
  // (Dropout) or the raw bytes end there, so PDNN-style text writes it too, and
  // the reader accepts it among the kind's coefs.
  bool own_end_marker;
  bool pdnn_only;  // a PDNN kind Kaldi does not have (marker is PDNN's)
};

const KindInfo& kind_info(Kind kind);
// Case-insensitive lookup as Kaldi's MarkerToType does (plus <relu>, <linear>
// and Kaldi's backward-compatible aliases). Unknown markers give Kind::Unknown.
Kind kind_from_marker(const std::string& marker);
bool is_modelled(Kind kind);
// The kind as messages name it: "AffineTransform", or "PDNN <relu>" for PDNN-only kinds.
std::string kind_label(Kind kind);

// Parameter storage: large blocks from util/block_alloc.h, left uninitialised.
using FloatVector = std::vector<float, DefaultInitAllocator<float>>;

// A float block: a matrix (rows x cols, row-major) or a vector (rows == -1).
struct FloatBlock {
  FloatVector data;
  int64_t rows = -1;
  int64_t cols = 0;
  bool is_matrix() const { return rows >= 0; }
  int64_t size() const { return static_cast<int64_t>(data.size()); }
};

struct Component {
  Kind kind = Kind::Unknown;
  std::string marker;  // as written in the input, e.g. "<affinetransform>"
  int32_t output_dim = 0;
  int32_t input_dim = 0;
  // Scalar attributes in the kind's canonical order, defaults filled in.
  std::vector<std::pair<std::string, float>> coefs;
  // Float parameters in order (Affine: weight, bias; ParametricRelu: alpha, beta; ...).
  std::vector<FloatBlock> params;
  // Integer data (Splice offsets, Copy indices as written (1-based), BlockSoftmax dims).
  std::vector<int32_t> ints;
  // Unmodelled kinds: the bytes after the dims up to, not including, the
  // <!EndOfComponent> (or the next component), in raw_encoding.
  std::string raw;
  Encoding raw_encoding = Encoding::Text;

  float coef(const std::string& token, float fallback) const;
  void set_coef(const std::string& token, float value);
  // Parameter count as nnet-info counts it (0 for kinds Kaldi does not update);
  // -1 when unknown (updatable kinds kept as raw bytes, unknown markers).
  int64_t num_params() const;
  // Kaldi-compatible structural checks (dims of params match the header, ...).
  // Returns an empty string when fine, else what is wrong.
  std::string check() const;
};

// Factories for the kinds the API builds (compress uses these).
Component make_affine(int32_t out, int32_t in);
Component make_linear(int32_t out, int32_t in);
Component make_simple(Kind kind, int32_t dim);

}  // namespace svd
