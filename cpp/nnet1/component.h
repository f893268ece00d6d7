// The in-memory form of one nnet1 component and the table of component kinds.
// Kinds whose data layout we model are parsed into parameters; every other
// kind (LSTM, convolution, a fork's own, ...) keeps its exact bytes.
#pragma once

#include <cstdint>
#include <memory>
#include <new>
#include <string>
#include <utility>
#include <vector>

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

// What follows the dims of a modelled kind, in Kaldi's order.
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
};

const KindInfo& kind_info(Kind kind);
// Case-insensitive lookup as Kaldi's MarkerToType does (plus <relu>, <linear>
// and Kaldi's backward-compatible aliases). Unknown markers give Kind::Unknown.
Kind kind_from_marker(const std::string& marker);
bool is_modelled(Kind kind);

// Memory for large parameter blocks. Blocks of kHugeBlockBytes or more come
// from their own anonymous mapping, aligned to 2 MB and advised for
// transparent huge pages (Linux): the kernel then maps one 2 MB page per fault
// instead of 512 small ones, and the page alignment lets the kernel's copy of
// a read() run at full speed (it ran ~4x slower into a buffer 16 bytes past a
// page boundary, where malloc puts large blocks). While a BlockReuseScope is
// alive (every model reader holds one), the last freed large block is kept
// for the next large allocation, which then finds its pages already mapped;
// release_cached_block() returns it, and so does the end of the last scope.
// Smaller blocks use operator new.
constexpr size_t kHugeBlockBytes = size_t{2} << 20;
void* allocate_block(size_t bytes);
void deallocate_block(void* p, size_t bytes) noexcept;
void release_cached_block() noexcept;

class BlockReuseScope {
 public:
  BlockReuseScope() noexcept;
  ~BlockReuseScope();
  BlockReuseScope(const BlockReuseScope&) = delete;
  BlockReuseScope& operator=(const BlockReuseScope&) = delete;
};

// Leaves new elements uninitialised: parsers fill every element they allocate,
// and zeroing gigabytes first would only cost time.
template <class T>
struct DefaultInitAllocator : std::allocator<T> {
  template <class U>
  struct rebind {
    using other = DefaultInitAllocator<U>;
  };
  using std::allocator<T>::allocator;
  T* allocate(size_t n) {
    if (n > static_cast<size_t>(-1) / sizeof(T)) throw std::bad_array_new_length();
    return static_cast<T*>(allocate_block(n * sizeof(T)));
  }
  void deallocate(T* p, size_t n) noexcept { deallocate_block(p, n * sizeof(T)); }
  template <class U>
  void construct(U* p) noexcept {
    ::new (static_cast<void*>(p)) U;
  }
  template <class U, class... Args>
  void construct(U* p, Args&&... args) {
    ::new (static_cast<void*>(p)) U(std::forward<Args>(args)...);
  }
};

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
