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

void ModelWriter::put_bin_int32(int32_t v) {
  char b[5] = {4};
  std::memcpy(b + 1, &v, 4);
  put(b, 5);
}

void ModelWriter::put_float_value(float v) {
  if (binary()) {
    char b[5] = {4};
    std::memcpy(b + 1, &v, 4);
    put(b, 5);
  } else {
    put_float(v);
  }
}

void ModelWriter::begin() {
  if (started_) return;
  started_ = true;
  if (binary()) put("\0B", 2);
  if (binary() || opt_.dialect == Dialect::Kaldi) {  // PDNN text has no wrapper
    put_token("<Nnet>");
    line_end();
  }
}

void ModelWriter::write_header(const std::string& marker, const Component& c) {
  put_token(marker);
  if (!binary() && opt_.dialect == Dialect::Pdnn) {  // PDNN: no space before the line end
    put(std::to_string(c.output_dim) + " " + std::to_string(c.input_dim));
  } else {
    put_int32(c.output_dim);
    put_int32(c.input_dim);
  }
  line_end();
}

void ModelWriter::write_coefs(const Component& c, bool newline) {
  for (const auto& cf : kind_info(c.kind).coefs) {
    put_token(cf.first);
    put_float_value(c.coef(cf.first, cf.second));
  }
  if (newline) line_end();
}

void ModelWriter::write_matrix(const FloatBlock& m) {
  const int64_t rows = m.rows, cols = m.cols;
  if (binary()) {
    put_token("FM");
    put_bin_int32(static_cast<int32_t>(rows));
    put_bin_int32(static_cast<int32_t>(cols));
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
  if (binary()) {
    put_token("FV");
    put_bin_int32(static_cast<int32_t>(v.data.size()));
    put(reinterpret_cast<const char*>(v.data.data()), v.data.size() * 4);
    return;
  }
  put(opt_.dialect == Dialect::Kaldi ? " [ " : "[ ");
  for (float x : v.data) put_float(x);
  put("]\n");
}

void ModelWriter::write_int_vector(const std::vector<int32_t>& v) {
  if (binary()) {
    put_bin_int32(static_cast<int32_t>(v.size()));
    put(reinterpret_cast<const char*>(v.data()), v.size() * 4);
    return;
  }
  put("[ ");
  for (int32_t x : v) put_int(x);
  put("]\n");
}

void ModelWriter::write_end() {
  if (binary() || opt_.dialect == Dialect::Kaldi) {  // PDNN text has none
    put_token("<!EndOfComponent>");
    line_end();
  }
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
  const bool pdnn_text = !kaldi && !binary();  // binary output is always Kaldi's
  // Kaldi has no ReLU: write PDNN's <relu> as the ParametricRelu that computes it.
  const bool convert_relu = in.kind == Kind::Relu && kaldi;
  Component as_prelu;
  if (convert_relu) {
    as_prelu = make_simple(Kind::ParametricRelu, in.output_dim);
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
  if (info.layout == Layout::Raw && !binary()) {
    // The raw bytes start right after the input dim, whitespace included.
    put(marker + " " + std::to_string(c.output_dim) + " " + std::to_string(c.input_dim));
  } else {
    write_header(marker, c);
  }
  if (info.write) {
    TokenWriter out(*this);
    info.write(out, c);
  }
  if (!pdnn_text) write_end();
  else if (info.own_end_marker) put("<!EndOfComponent>\n");
}

void ModelWriter::close() {
  if (closed_) return;
  try {
    begin();
    if (binary() || opt_.dialect == Dialect::Kaldi) {
      put_token("</Nnet>");
      line_end();
    }
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
