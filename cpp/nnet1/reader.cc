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

void ModelReader::read_coefs(Component* c) {
  const KindInfo& info = kind_info(c->kind);
  const bool bin = encoding_ == Encoding::Binary;
  for (;;) {
    if (bin) {
      if (!scanner_.ensure(1) || *scanner_.cur() != '<') return;
    } else if (!text_peek_is('<')) {
      return;
    }
    const int64_t at = scanner_.offset();
    if (scanner_.ensure(2) && scanner_.cur()[1] == '!') {
      if (c->kind != Kind::Dropout) return;  // the end marker, read by the caller
      // Dropout reads its own end marker, as Kaldi's does.
      std::string tok = bin ? bin_token() : text_token();
      if (tok != kEoc) fail_at(at, "expected <!EndOfComponent>, got " + quote(tok) + " (tokens are case-sensitive)");
      return;
    }
    std::string tok = bin ? bin_token() : text_token();
    std::string canon;
    for (const auto& cf : info.coefs)
      if (tok == cf.first || "<" + tok == cf.first) canon = cf.first;
    if (c->kind == Kind::Dropout && tok == "<DropoutRetention>") {
      float keep = bin ? bin_float(tok) : text_float_scalar(tok);
      c->set_coef("<DropoutRate>", 1.f - keep);
      continue;
    }
    if (canon.empty()) {
      std::string expected;
      for (const auto& cf : info.coefs) expected += (expected.empty() ? "" : ", ") + std::string(cf.first);
      if (c->kind == Kind::Dropout) expected += ", <!EndOfComponent>";
      fail_at(at, "unknown token " + quote(tok) + " in " + info.marker +
           (expected.empty() ? std::string(" (it takes no tokens)") : " (expected one of " + expected + "; tokens are case-sensitive)"));
    }
    float v = bin ? bin_float(canon) : text_float_scalar(canon);
    c->set_coef(canon, v);
  }
}

void ModelReader::read_data(Component* c) {
  const KindInfo& info = kind_info(c->kind);
  const bool bin = encoding_ == Encoding::Binary;
  for (const auto& cf : info.coefs) c->coefs.emplace_back(cf.first, cf.second);
  auto matrix = [&](FloatBlock* b, const char* what) {
    check_alloc(static_cast<int64_t>(c->output_dim) * c->input_dim, bin ? 4 : 2, what);
    if (bin) bin_block(b, true, c->output_dim, c->input_dim, what);
    else text_matrix(b, c->output_dim, c->input_dim, what);
  };
  auto vector = [&](FloatBlock* b, int64_t dim, const char* what) {
    if (bin) bin_block(b, false, -1, dim, what);
    else text_vector(b, dim, what);
  };
  switch (info.layout) {
    case Layout::None:
      return;
    case Layout::Affine:
      read_coefs(c);
      c->params.resize(2);
      matrix(&c->params[0], "weight matrix");
      vector(&c->params[1], c->output_dim, "bias vector");
      return;
    case Layout::Linear:
      read_coefs(c);
      c->params.resize(1);
      matrix(&c->params[0], "weight matrix");
      return;
    case Layout::OneVector:
      read_coefs(c);
      c->params.resize(1);
      vector(&c->params[0], c->output_dim, info.param_names[0]);
      return;
    case Layout::TwoVectors:
      read_coefs(c);
      c->params.resize(2);
      vector(&c->params[0], c->output_dim, "alpha vector");
      vector(&c->params[1], c->output_dim, "beta vector");
      return;
    case Layout::IntVector:
      if (bin) bin_int_vector(&c->ints);
      else text_int_vector(&c->ints);
      return;
    case Layout::DropoutRate:
      read_coefs(c);
      return;
    case Layout::Raw:
      c->raw_encoding = encoding_;
      if (bin) bin_raw(c);
      else text_raw(c);
      return;
  }
}

void ModelReader::read_end_marker() {
  if (encoding_ == Encoding::Binary) {
    if (!scanner_.ensure(2) || scanner_.cur()[0] != '<' || scanner_.cur()[1] != '!') return;
  } else {
    if (!text_peek_is('<') || !scanner_.ensure(2) || scanner_.cur()[1] != '!') return;
  }
  const int64_t at = scanner_.offset();
  std::string tok = encoding_ == Encoding::Binary ? bin_token() : text_token();
  if (tok != kEoc) fail_at(at, "expected <!EndOfComponent>, got " + quote(tok) + " (tokens are case-sensitive)");
}

bool ModelReader::next(Component* out) {
  if (read_next(out)) return true;
  release_cached_block();  // the model is read: no large block will be wanted soon
  return false;
}

bool ModelReader::read_next(Component* out) {
  if (finished_) return false;
  const bool bin = encoding_ == Encoding::Binary;
  index_ = 0;
  marker_.clear();
  scanner_.skip_ws();
  if (scanner_.at_eof()) {
    finished_ = true;
    return false;
  }
  int64_t at = scanner_.offset();
  std::string tok = bin ? bin_token() : text_token();
  if (tok == "<Nnet>") {
    saw_wrapper_ = true;
    scanner_.skip_ws();
    if (scanner_.at_eof()) {
      finished_ = true;
      return false;
    }
    at = scanner_.offset();
    tok = bin ? bin_token() : text_token();
  }
  if (tok == "</Nnet>") {  // anything after it is never read, as in Kaldi
    finished_ = true;
    return false;
  }
  if (!looks_like_marker(tok))
    fail_at(at, "expected a component marker such as <AffineTransform>, got " + quote(tok));
  const Kind kind = kind_from_marker(tok);
  if (!bin && !saw_wrapper_) {
    if (component_count_ == 0 && all_lower(tok)) dialect_ = Dialect::Pdnn;
    if (kind == Kind::Relu || kind == Kind::Linear) dialect_ = Dialect::Pdnn;
  }
  *out = Component();
  out->kind = kind;
  out->marker = tok;
  marker_ = tok;
  index_ = component_count_ + 1;
  out->output_dim = bin ? bin_int("the output dim") : text_int("the output dim");
  out->input_dim = bin ? bin_int("the input dim") : text_int("the input dim");
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
