// Streaming nnet1 writer: Kaldi binary (byte-identical to nnet-copy
// --binary=true), Kaldi text (exact shortest digits, or Kaldi's own %.7g bytes),
// and PDNN-style text. Components are validated before they are written, so
// the output is always a model Kaldi can load.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "nnet1/byte_sink.h"
#include "nnet1/component.h"
#include "nnet1/number_format.h"

namespace svd {

struct WriteOptions {
  Encoding encoding = Encoding::Text;
  Dialect dialect = Dialect::Kaldi;
  Digits digits = Digits::Shortest;
};

class ModelWriter {
 public:
  ModelWriter(std::unique_ptr<ByteSink> sink, WriteOptions options);
  ~ModelWriter();
  ModelWriter(const ModelWriter&) = delete;
  ModelWriter& operator=(const ModelWriter&) = delete;

  void write(const Component& c);
  // Finishes the model and makes the file appear (atomic rename).
  void close();
  // Discards everything written so far; the target is left as it was.
  void abort() noexcept;
  // Conversions made on the way (PDNN <relu> to <ParametricRelu>, ...), one line each.
  std::vector<std::string> notes() const;
  int components_written() const { return count_; }

 private:
  friend class TokenWriter;
  void put(const char* s, size_t n);
  void put(const std::string& s) { put(s.data(), s.size()); }
  void put_float(float v);
  void put_int(int64_t v);
  // The token layer, as Kaldi's WriteToken and WriteBasicType(os, binary, ...):
  // the same calls write either encoding.
  bool binary() const { return opt_.encoding == Encoding::Binary; }
  void put_token(const std::string& t) {  // "<Token> " in both encodings
    put(t);
    put(" ", 1);
  }
  void put_int32(int32_t v) { binary() ? put_bin_int32(v) : put_int(v); }
  void put_float_value(float v);
  void line_end() {  // text starts a new line where Kaldi's writer does; binary has none
    if (!binary()) put("\n", 1);
  }
  void put_bin_int32(int32_t v);  // size byte 4, then the 4 bytes
  void flush();
  void begin();

  void write_header(const std::string& marker, const Component& c);
  void write_coefs(const Component& c, bool newline);
  void write_matrix(const FloatBlock& b);
  void write_vector(const FloatBlock& b);
  void write_int_vector(const std::vector<int32_t>& v);
  void write_end();
  void validate(const Component& c);

  std::unique_ptr<ByteSink> sink_;
  WriteOptions opt_;
  std::string buf_;
  bool started_ = false, closed_ = false;
  int count_ = 0;
  int32_t prev_output_ = -1;
  int relu_converted_ = 0, linear_dropped_ = 0, prelu_to_relu_ = 0, unknown_kept_ = 0;
  int coefs_in_pdnn_ = 0;
};

// The token layer as a kind's write function (KindInfo::write) sees it: the
// same calls write either encoding and dialect.
class TokenWriter {
 public:
  explicit TokenWriter(ModelWriter& w) : w_(w) {}
  // PDNN-style text (binary output is always Kaldi's).
  bool pdnn() const { return !w_.binary() && w_.opt_.dialect == Dialect::Pdnn; }
  void token(const std::string& t) { w_.put_token(t); }
  void int32(int32_t v) { w_.put_int32(v); }
  void float_value(float v) { w_.put_float_value(v); }
  void line_end() { w_.line_end(); }
  // The kind's coefs (KindInfo::coefs) in Kaldi's order; a line end after them when `newline`.
  void coefs(const Component& c, bool newline) { w_.write_coefs(c, newline); }
  void matrix(const FloatBlock& m) { w_.write_matrix(m); }
  void vector(const FloatBlock& v) { w_.write_vector(v); }
  void int_vector(const std::vector<int32_t>& v) { w_.write_int_vector(v); }
  // Bytes as they are (an unmodelled kind's, in the output's encoding).
  void bytes(const std::string& s) { w_.put(s); }
  // Non-default coefs kept in PDNN output: noted once in notes().
  void note_coefs_in_pdnn() { ++w_.coefs_in_pdnn_; }

 private:
  ModelWriter& w_;
};

}  // namespace svd
