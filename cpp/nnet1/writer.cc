#include "nnet1/writer.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <mutex>

#include "nnet1/errors.h"
#include "util/threads.h"

namespace svd {
namespace {

constexpr size_t kFlushAt = 1 << 22;

std::string lowercase(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_plain_relu(const Component& c) {
  if (c.kind != Kind::ParametricRelu || c.params.size() != 2) return false;
  for (float a : c.params[0].data)
    if (a != 1.f) return false;
  for (float b : c.params[1].data)
    if (b != 0.f) return false;
  return c.coef("<AlphaLearnRateCoef>", 0.f) == 0.f && c.coef("<BetaLearnRateCoef>", 0.f) == 0.f;
}

Component relu_as_parametric_relu(int32_t dim) {
  Component p;
  p.kind = Kind::ParametricRelu;
  p.marker = kind_info(Kind::ParametricRelu).marker;
  p.output_dim = p.input_dim = dim;
  p.coefs = {{"<AlphaLearnRateCoef>", 0.f}, {"<BetaLearnRateCoef>", 0.f}};
  p.params.resize(2);
  p.params[0].cols = p.params[1].cols = dim;
  p.params[0].data.assign(dim, 1.f);
  p.params[1].data.assign(dim, 0.f);
  return p;
}

bool default_coefs(const Component& c) {
  for (const auto& cf : kind_info(c.kind).coefs)
    if (c.coef(cf.first, cf.second) != cf.second) return false;
  return true;
}

}  // namespace

ModelWriter::ModelWriter(std::unique_ptr<ByteSink> sink, WriteOptions options)
    : sink_(std::move(sink)), opt_(options) {
  buf_.reserve(kFlushAt + (1 << 16));
}

ModelWriter::~ModelWriter() {
  if (!closed_) abort();
}

void ModelWriter::flush() {
  if (!buf_.empty()) sink_->write(buf_.data(), buf_.size());
  buf_.clear();
}

void ModelWriter::put(const char* s, size_t n) {
  if (buf_.size() + n > kFlushAt) {
    flush();
    if (n > kFlushAt) {
      sink_->write(s, n);
      return;
    }
  }
  buf_.append(s, n);
}

void ModelWriter::put_float(float v) {
  char tmp[40];
  size_t n = format_float(tmp, v, opt_.digits);
  if (opt_.encoding == Encoding::Text) tmp[n++] = ' ';
  put(tmp, n);
}

void ModelWriter::put_int(int64_t v) {
  char tmp[32];
  size_t n = format_int(tmp, v);
  tmp[n++] = ' ';
  put(tmp, n);
}

void ModelWriter::begin() {
  if (started_) return;
  started_ = true;
  if (opt_.encoding == Encoding::Binary) {
    put(std::string("\0B<Nnet> ", 9));
  } else if (opt_.dialect == Dialect::Kaldi) {
    put("<Nnet> \n");
  }
}

void ModelWriter::write_header(const std::string& marker, const Component& c) {
  if (opt_.encoding == Encoding::Binary) {
    put(marker + " ");
    char b[5] = {4};
    std::memcpy(b + 1, &c.output_dim, 4);
    put(b, 5);
    std::memcpy(b + 1, &c.input_dim, 4);
    put(b, 5);
  } else if (opt_.dialect == Dialect::Kaldi) {
    put(marker + " ");
    put_int(c.output_dim);
    put_int(c.input_dim);
    put("\n");
  } else {
    put(marker + " " + std::to_string(c.output_dim) + " " + std::to_string(c.input_dim) + "\n");
  }
}

void ModelWriter::write_coefs(const Component& c, bool newline) {
  const bool bin = opt_.encoding == Encoding::Binary;
  for (const auto& cf : kind_info(c.kind).coefs) {
    put(std::string(cf.first) + " ");
    float v = c.coef(cf.first, cf.second);
    if (bin) {
      char b[5] = {4};
      std::memcpy(b + 1, &v, 4);
      put(b, 5);
    } else {
      put_float(v);
    }
  }
  if (newline && !bin) put("\n");
}

void ModelWriter::write_matrix(const FloatBlock& m) {
  const int64_t rows = m.rows, cols = m.cols;
  if (opt_.encoding == Encoding::Binary) {
    put("FM ");
    char b[5] = {4};
    int32_t r = static_cast<int32_t>(rows), k = static_cast<int32_t>(cols);
    std::memcpy(b + 1, &r, 4);
    put(b, 5);
    std::memcpy(b + 1, &k, 4);
    put(b, 5);
    put(reinterpret_cast<const char*>(m.data.data()), m.data.size() * 4);
    return;
  }
  const bool kaldi = opt_.dialect == Dialect::Kaldi;
  if (cols == 0 || rows == 0) {
    put(kaldi ? " [ ]\n" : "[ ]\n");
    return;
  }
  put(kaldi ? " [" : "[");
  // Blocks of rows are formatted on all threads, each into its own buffer, and
  // written in order by whichever thread completes the next one due, while the
  // others go on formatting: text output costs little more than the bytes.
  // A round of blocks holds at most ~4 MB of text at once.
  const float* d = m.data.data();
  const Digits digits = opt_.digits;
  const int64_t per_value = 17;  // longest float32 text ("-1.17549435e-38") + a space
  const int64_t row_bytes = cols * per_value + 4;
  const int64_t rows_per_block = std::max<int64_t>(1, (512 << 10) / row_bytes);
  // Threads pay off only for sizeable matrices.
  const int64_t threads = rows * cols >= (1 << 16) ? std::max(1, num_threads()) : 1;
  const int64_t round_blocks = threads > 1 ? 8 : 1;
  std::vector<std::string> blocks(static_cast<size_t>(round_blocks));
  std::vector<char> ready(static_cast<size_t>(round_blocks));
  std::mutex order;
  for (int64_t r0 = 0; r0 < rows; r0 += rows_per_block * round_blocks) {
    const int64_t n = std::min(round_blocks, (rows - r0 + rows_per_block - 1) / rows_per_block);
    std::fill(ready.begin(), ready.end(), 0);
    int64_t due = 0;  // the next block to write
    bool failed = false;
    parallel_for(n, [&](int64_t t) {
      const int64_t a = r0 + t * rows_per_block, b = std::min(rows, a + rows_per_block);
      std::string& out = blocks[static_cast<size_t>(t)];
      out.resize(static_cast<size_t>((b - a) * row_bytes));
      char* p = &out[0];
      for (int64_t i = a; i < b; ++i) {
        *p++ = '\n';
        if (kaldi) {
          *p++ = ' ';
          *p++ = ' ';
        }
        const float* row = d + i * cols;
        for (int64_t j = 0; j < cols; ++j) {
          p += format_float(p, row[j], digits);
          if (kaldi || j + 1 < cols) *p++ = ' ';
        }
      }
      out.resize(static_cast<size_t>(p - &out[0]));
      std::lock_guard<std::mutex> lock(order);
      ready[static_cast<size_t>(t)] = 1;
      if (failed) return;  // the output failed: its error is the one reported
      try {
        for (; due < n && ready[static_cast<size_t>(due)]; ++due) put(blocks[static_cast<size_t>(due)]);
      } catch (...) {
        failed = true;
        throw;
      }
    });
  }
  put(kaldi ? "]\n" : "\n]\n");
}

void ModelWriter::write_vector(const FloatBlock& v) {
  if (opt_.encoding == Encoding::Binary) {
    put("FV ");
    char b[5] = {4};
    int32_t n = static_cast<int32_t>(v.data.size());
    std::memcpy(b + 1, &n, 4);
    put(b, 5);
    put(reinterpret_cast<const char*>(v.data.data()), v.data.size() * 4);
    return;
  }
  put(opt_.dialect == Dialect::Kaldi ? " [ " : "[ ");
  for (float x : v.data) put_float(x);
  put("]\n");
}

void ModelWriter::write_int_vector(const std::vector<int32_t>& v) {
  if (opt_.encoding == Encoding::Binary) {
    char b[5] = {4};
    int32_t n = static_cast<int32_t>(v.size());
    std::memcpy(b + 1, &n, 4);
    put(b, 5);
    put(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    return;
  }
  put("[ ");
  for (int32_t x : v) put_int(x);
  put("]\n");
}

void ModelWriter::write_end() {
  if (opt_.encoding == Encoding::Binary) put("<!EndOfComponent> ");
  else if (opt_.dialect == Dialect::Kaldi) put("<!EndOfComponent> \n");
}

void ModelWriter::validate(const Component& c) {
  std::string where = sink_->name() + ": component " + std::to_string(count_ + 1) + " " + c.marker + ": ";
  if (c.input_dim < 0 || c.output_dim < 0) throw Error(where + "negative dims");
  if (prev_output_ >= 0 && c.input_dim != prev_output_)
    throw Error(where + "input dim " + std::to_string(c.input_dim) +
                " does not match the previous component's output dim " + std::to_string(prev_output_));
  if (is_modelled(c.kind)) {
    std::string problem = c.check();
    if (!problem.empty()) throw Error(where + problem);
    for (const FloatBlock& b : c.params)
      for (float x : b.data)
        if (!std::isfinite(x)) throw Error(where + "non-finite parameter; Kaldi cannot load such a model");
  } else if (opt_.encoding != c.raw_encoding) {
    throw Error(where + "this kind is kept as raw " +
                std::string(c.raw_encoding == Encoding::Text ? "text" : "binary") +
                " bytes and cannot be converted to " +
                (opt_.encoding == Encoding::Text ? "text" : "binary") + "; keep the input's encoding");
  }
}

void ModelWriter::write(const Component& in) {
  if (closed_) throw Error(sink_->name() + ": writer is closed");
  const bool kaldi = opt_.dialect == Dialect::Kaldi;
  const bool bin = opt_.encoding == Encoding::Binary;
  // Kaldi has no ReLU: write PDNN's <relu> as the ParametricRelu that computes it.
  const bool convert_relu = in.kind == Kind::Relu && kaldi;
  Component as_prelu;
  if (convert_relu) {
    as_prelu = relu_as_parametric_relu(in.output_dim);
    ++relu_converted_;
  }
  const Component& c = convert_relu ? as_prelu : in;
  validate(c);
  begin();
  prev_output_ = c.output_dim;
  const Kind kind = c.kind;
  if (kind == Kind::Linear && kaldi) {  // the identity: nothing to write
    ++linear_dropped_;
    return;
  }
  ++count_;
  if (!kaldi && is_plain_relu(c)) {
    ++prelu_to_relu_;
    write_header("<relu>", c);
    return;
  }

  std::string marker;
  if (kind == Kind::Unknown) {
    marker = c.marker;
    ++unknown_kept_;
  } else {
    marker = kind_info(kind).marker;
    if (!kaldi) marker = lowercase(marker);
  }
  const KindInfo& info = kind_info(kind);
  if (info.layout == Layout::Raw && !bin) {
    // The raw bytes start right after the input dim, whitespace included.
    put(marker + " " + std::to_string(c.output_dim) + " " + std::to_string(c.input_dim));
  } else {
    write_header(marker, c);
  }
  switch (info.layout) {
    case Layout::None:
      break;
    case Layout::Affine:
    case Layout::Linear:
      if (kaldi || bin || !default_coefs(c)) {
        if (!kaldi && !bin) ++coefs_in_pdnn_;
        write_coefs(c, true);
      }
      write_matrix(c.params[0]);
      if (info.layout == Layout::Affine) write_vector(c.params[1]);
      break;
    case Layout::OneVector:
      write_coefs(c, false);
      write_vector(c.params[0]);
      break;
    case Layout::TwoVectors:
      write_coefs(c, true);
      write_vector(c.params[0]);
      write_vector(c.params[1]);
      break;
    case Layout::IntVector:
      write_int_vector(c.ints);
      break;
    case Layout::DropoutRate:
      write_coefs(c, false);
      // Kaldi's Dropout reader insists on its end marker, in every dialect.
      if (!kaldi && !bin) put("<!EndOfComponent>\n");
      break;
    case Layout::Raw:
      put(c.raw);
      if (!kaldi && !bin) {
        put("<!EndOfComponent>\n");
        return;
      }
      break;
  }
  if (kaldi || bin) write_end();
}

void ModelWriter::close() {
  if (closed_) return;
  try {
    begin();
    if (opt_.encoding == Encoding::Binary) put("</Nnet> ");
    else if (opt_.dialect == Dialect::Kaldi) put("</Nnet> \n");
    flush();
    sink_->commit();
    closed_ = true;
  } catch (...) {
    abort();
    throw;
  }
}

void ModelWriter::abort() noexcept {
  closed_ = true;
  buf_.clear();
  sink_->abort();
}

std::vector<std::string> ModelWriter::notes() const {
  std::vector<std::string> n;
  auto plural = [](int k, const char* what) { return std::to_string(k) + " " + what + (k == 1 ? "" : "s"); };
  if (relu_converted_)
    n.push_back("converted " + plural(relu_converted_, "PDNN <relu> component") +
                " to Kaldi's <ParametricRelu> with alpha 1, beta 0 (the same function)");
  if (linear_dropped_)
    n.push_back("dropped " + plural(linear_dropped_, "PDNN <linear> component") +
                " (the identity; Kaldi has no such component)");
  if (prelu_to_relu_)
    n.push_back("wrote " + plural(prelu_to_relu_, "<ParametricRelu> component") +
                " with alpha 1, beta 0 as PDNN <relu>");
  if (unknown_kept_)
    n.push_back("kept " + plural(unknown_kept_, "component") +
                " of a kind Kaldi does not know byte for byte; Kaldi's tools will refuse the model");
  if (coefs_in_pdnn_)
    n.push_back("kept non-default learn-rate coefficients of " + plural(coefs_in_pdnn_, "component") +
                " in the PDNN output (Kaldi reads them; older PDNN tools may not)");
  return n;
}

}  // namespace svd
