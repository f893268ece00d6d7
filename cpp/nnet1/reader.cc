#include <cstring>

#include "nnet1/errors.h"
#include "nnet1/number_parse.h"
#include "nnet1/reader.h"
#include "nnet1/reader_detail.h"

namespace svd {
using namespace reader_detail;

ModelReader::ModelReader(std::unique_ptr<ByteSource> source) : scanner_(std::move(source)) {
  if (scanner_.ensure(1) && *scanner_.cur() == '\0') {
    if (!scanner_.ensure(2) || scanner_.cur()[1] != 'B')
      throw FormatError(name() + ": byte 0: starts with a NUL byte but not the Kaldi binary header \\0B",
                        name(), 0, 0, 0, 0, "");
    scanner_.advance(2);
    encoding_ = Encoding::Binary;
  }
}

std::string ModelReader::where(const char* at) const {
  std::string w = name() + ":";
  if (encoding_ == Encoding::Text) {
    int64_t line, col;
    scanner_.line_col(at, &line, &col);
    w += std::to_string(line) + ":" + std::to_string(col) + ":";
  } else {
    int64_t off = scanner_.offset() + (at - scanner_.cur());
    w += " byte " + std::to_string(off) + ":";
  }
  if (index_ > 0) w += " component " + std::to_string(index_) + " " + marker_ + ":";
  return w;
}

void ModelReader::fail_at(const char* at, const std::string& what) const {
  int64_t line = 0, col = 0;
  if (encoding_ == Encoding::Text) scanner_.line_col(at, &line, &col);
  int64_t off = scanner_.offset() + (at - scanner_.cur());
  throw FormatError(where(at) + " " + what, name(), off, line, col, index_, marker_);
}

void ModelReader::fail_at(int64_t offset, const std::string& what) const {
  const char* p = scanner_.ptr_at(offset);
  fail_at(p ? p : scanner_.cur(), what);
}

void ModelReader::fail(const std::string& what) const { fail_at(scanner_.cur(), what); }

void ModelReader::read_coefs(Component* c, OtherToken other) {
  const KindInfo& info = kind_info(c->kind);
  while (peek_is('<')) {
    const int64_t at = scanner_.offset();
    if (at_end_marker()) {
      if (!info.own_end_marker) return;  // the end marker, read by the caller
      // Read here, as Kaldi's reader of the kind does.
      std::string tok = token();
      if (tok != kEoc) fail_at(at, "expected <!EndOfComponent>, got " + quote(tok) + " (tokens are case-sensitive)");
      return;
    }
    std::string tok = token();
    std::string canon;
    for (const auto& cf : info.coefs)
      if (tok == cf.first || "<" + tok == cf.first) canon = cf.first;
    if (canon.empty() && other) {
      TokenReader in(*this);
      if (other(in, c, tok)) continue;
    }
    if (canon.empty()) {
      std::string expected;
      for (const auto& cf : info.coefs) expected += (expected.empty() ? "" : ", ") + std::string(cf.first);
      if (info.own_end_marker) expected += ", <!EndOfComponent>";
      fail_at(at, "unknown token " + quote(tok) + " in " + info.marker +
           (expected.empty() ? std::string(" (it takes no tokens)") : " (expected one of " + expected + "; tokens are case-sensitive)"));
    }
    c->set_coef(canon, read_float(canon));
  }
}

void ModelReader::read_data(Component* c) {
  const KindInfo& info = kind_info(c->kind);
  for (const auto& cf : info.coefs) c->coefs.emplace_back(cf.first, cf.second);
  if (info.read) {
    TokenReader in(*this);
    info.read(in, c);
  }
}

void ModelReader::read_end_marker() {
  if (!at_end_marker()) return;
  const int64_t at = scanner_.offset();
  std::string tok = token();
  if (tok != kEoc) fail_at(at, "expected <!EndOfComponent>, got " + quote(tok) + " (tokens are case-sensitive)");
}

bool ModelReader::next(Component* out) {
  if (read_next(out)) return true;
  release_cached_block();  // the model is read: no large block will be wanted soon
  return false;
}

bool ModelReader::read_next(Component* out) {
  if (finished_) return false;
  index_ = 0;
  marker_.clear();
  scanner_.skip_ws();
  if (scanner_.at_eof()) {
    finished_ = true;
    return false;
  }
  int64_t at = scanner_.offset();
  std::string tok = token();
  if (tok == "<Nnet>") {
    saw_wrapper_ = true;
    scanner_.skip_ws();
    if (scanner_.at_eof()) {
      finished_ = true;
      return false;
    }
    at = scanner_.offset();
    tok = token();
  }
  if (tok == "</Nnet>") {  // anything after it is never read, as in Kaldi
    finished_ = true;
    return false;
  }
  if (!looks_like_marker(tok))
    fail_at(at, "expected a component marker such as <AffineTransform>, got " + quote(tok));
  const Kind kind = kind_from_marker(tok);
  if (!binary() && !saw_wrapper_) {
    if (component_count_ == 0 && all_lower(tok)) dialect_ = Dialect::Pdnn;
    if (kind_info(kind).pdnn_only) dialect_ = Dialect::Pdnn;
  }
  *out = Component();
  out->kind = kind;
  out->marker = tok;
  marker_ = tok;
  index_ = component_count_ + 1;
  out->output_dim = read_int("the output dim");
  out->input_dim = read_int("the input dim");
  if (out->output_dim < 0 || out->input_dim < 0)
    fail_at(at, "negative dims " + std::to_string(out->output_dim) + " " + std::to_string(out->input_dim) +
                    " (output dim, input dim)");
  if (prev_output_ >= 0 && prev_output_ != out->input_dim)
    fail_at(at, "input dim " + std::to_string(out->input_dim) + " does not match the output dim " +
                    std::to_string(prev_output_) + " of the previous component " + prev_marker_);
  read_data(out);
  if (!skip_data_) {
    std::string problem = out->check();
    if (!problem.empty()) fail(problem);
  }
  read_end_marker();
  scanner_.release_consumed();
  prev_output_ = out->output_dim;
  prev_marker_ = tok;
  ++component_count_;
  return true;
}

}  // namespace svd
