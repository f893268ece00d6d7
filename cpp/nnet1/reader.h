// Streaming nnet1 reader: one component at a time, in any of the three
// dialects (Kaldi text, Kaldi binary, PDNN-style text). Memory is bounded by the
// largest component; declared sizes are checked against the input's size
// before anything is allocated.
#pragma once

#include <memory>
#include <string>

#include "nnet1/component.h"
#include "nnet1/text_scanner.h"

namespace svd {

class ModelReader {
 public:
  explicit ModelReader(std::unique_ptr<ByteSource> source);
  ModelReader(const ModelReader&) = delete;
  ModelReader& operator=(const ModelReader&) = delete;

  Encoding encoding() const { return encoding_; }
  // Known after the first component (or the end of an empty model).
  Dialect dialect() const { return dialect_; }
  bool saw_wrapper() const { return saw_wrapper_; }
  const std::string& name() const { return scanner_.name(); }

  // Structure only: matrices and vectors are stepped over, not parsed or
  // checked (kinds, dims and small data such as Splice offsets are read).
  void set_skip_data(bool skip) { skip_data_ = skip; }

  // Reads the next component into *out; false at the end of the model.
  // Throws FormatError on malformed input.
  bool next(Component* out);

 private:
  friend class TokenReader;
  bool read_next(Component* out);
  [[noreturn]] void fail(const std::string& what) const;
  [[noreturn]] void fail_at(const char* at, const std::string& what) const;
  [[noreturn]] void fail_at(int64_t offset, const std::string& what) const;
  std::string where(const char* at) const;

  // The token layer: one call per token or block, whatever the encoding, as
  // Kaldi's ReadToken and ReadBasicType(is, binary, ...); the halves per
  // encoding follow (reader_text.cc, reader_binary.cc). The kinds' read
  // functions (KindInfo::read, through TokenReader) and reader.cc read through
  // these only.
  bool binary() const { return encoding_ == Encoding::Binary; }
  std::string token() { return binary() ? bin_token() : text_token(); }
  // The next byte is c (text: the next non-space byte).
  bool peek_is(char c) { return binary() ? scanner_.ensure(1) && *scanner_.cur() == c : text_peek_is(c); }
  // "<!" follows: an end marker (<!EndOfComponent>) is next.
  bool at_end_marker() { return peek_is('<') && scanner_.ensure(2) && scanner_.cur()[1] == '!'; }
  int32_t read_int(const char* what) { return binary() ? bin_int(what) : text_int(what); }
  float read_float(const std::string& token) { return binary() ? bin_float(token) : text_float_scalar(token); }
  void read_matrix(FloatBlock* m, int64_t rows, int64_t cols, const char* what) {
    check_alloc(rows * cols, binary() ? 4 : 2, what);
    if (binary()) bin_block(m, true, rows, cols, what);
    else text_matrix(m, rows, cols, what);
  }
  void read_vector(FloatBlock* v, int64_t dim, const char* what) {
    if (binary()) bin_block(v, false, -1, dim, what);
    else text_vector(v, dim, what);
  }
  void read_int_vector(std::vector<int32_t>* v) { binary() ? bin_int_vector(v) : text_int_vector(v); }
  void read_raw(Component* c) {
    c->raw_encoding = encoding_;
    binary() ? bin_raw(c) : text_raw(c);
  }

  // text
  std::string text_token();
  bool text_peek_is(char c);
  int32_t text_int(const char* what);
  float text_float_scalar(const std::string& token);
  void text_matrix(FloatBlock* m, int64_t rows, int64_t cols, const char* what);
  int64_t text_rows_bulk(FloatBlock* m, int64_t row, int64_t rows, int64_t cols);
  void text_vector(FloatBlock* v, int64_t dim, const char* what);
  void text_int_vector(std::vector<int32_t>* v);
  void text_raw(Component* c);
  void text_skip_block(const char* what);
  // binary
  std::string bin_token();
  int32_t bin_int(const char* what);
  float bin_float(const std::string& token);
  void bin_block(FloatBlock* b, bool matrix, int64_t rows, int64_t cols, const char* what);
  void bin_int_vector(std::vector<int32_t>* v);
  void bin_raw(Component* c);

  void read_data(Component* c);
  using OtherToken = bool (*)(TokenReader& in, Component* c, const std::string& token);
  void read_coefs(Component* c, OtherToken other);
  void read_end_marker();
  void check_alloc(int64_t count, int64_t min_bytes_each, const char* what);
  void check_finite(const FloatBlock& b, const char* what, int64_t data_offset);

  BlockReuseScope reuse_;  // freed layers' blocks are reused while this reader lives
  Scanner scanner_;
  Encoding encoding_ = Encoding::Text;
  Dialect dialect_ = Dialect::Kaldi;
  bool saw_wrapper_ = false;
  bool finished_ = false;
  bool skip_data_ = false;
  bool first_ = true;
  int index_ = 0;  // 1-based index of the component being read
  int component_count_ = 0;
  std::string marker_;
  int32_t prev_output_ = -1;
  std::string prev_marker_;
};

// The token layer as a kind's read function (KindInfo::read) sees it: the
// same calls read either encoding; errors name the place and the component.
class TokenReader {
 public:
  explicit TokenReader(ModelReader& r) : r_(r) {}
  std::string token() { return r_.token(); }
  int32_t read_int(const char* what) { return r_.read_int(what); }
  float read_float(const std::string& token) { return r_.read_float(token); }
  // The kind's coefs (KindInfo::coefs), each optional, in any order, up to the
  // data or the end marker. `other`, when given, may take a token that is not
  // one of them (returns true when it did).
  void coefs(Component* c, ModelReader::OtherToken other = nullptr) { r_.read_coefs(c, other); }
  // A rows x cols matrix, a vector of dim values, an integer vector.
  void matrix(FloatBlock* m, int64_t rows, int64_t cols, const char* what) { r_.read_matrix(m, rows, cols, what); }
  void vector(FloatBlock* v, int64_t dim, const char* what) { r_.read_vector(v, dim, what); }
  void int_vector(std::vector<int32_t>* v) { r_.read_int_vector(v); }
  // Unmodelled kinds: their bytes up to the end marker, kept as they are.
  void raw(Component* c) { r_.read_raw(c); }
  [[noreturn]] void fail(const std::string& what) const { r_.fail(what); }

 private:
  ModelReader& r_;
};

}  // namespace svd
