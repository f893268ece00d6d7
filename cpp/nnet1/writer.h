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
  void put(const char* s, size_t n);
  void put(const std::string& s) { put(s.data(), s.size()); }
  void put_float(float v);
  void put_int(int64_t v);
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

}  // namespace svd
