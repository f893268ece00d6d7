#include "nnet1/reader.h"

#include <cmath>
#include <cstring>

#include "nnet1/errors.h"
#include "nnet1/number_format.h"

namespace svd {
namespace {

constexpr const char* kEoc = "<!EndOfComponent>";

inline bool is_space(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

std::string quote(const std::string& s) {
  std::string r = s.size() > 40 ? s.substr(0, 37) + "..." : s;
  for (char& c : r)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  return "'" + r + "'";
}

bool lower_equal(const std::string& a, const char* b) {
  size_t n = std::strlen(b);
  if (a.size() != n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) !=
        std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

bool all_lower(const std::string& s) {
  for (char c : s)
    if (std::isupper(static_cast<unsigned char>(c))) return false;
  return true;
}

bool looks_like_marker(const std::string& t) {
  return t.size() >= 3 && t.front() == '<' && t.back() == '>';
}

}  // namespace

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

// ---------------------------------------------------------------- text

std::string ModelReader::text_token() { return scanner_.read_token(); }

bool ModelReader::text_peek_is(char c) {
  scanner_.skip_ws();
  return scanner_.peek() == static_cast<unsigned char>(c);
}

int32_t ModelReader::text_int(const char* what) {
  scanner_.skip_ws();
  if (scanner_.at_eof()) fail(std::string("expected ") + what + " (an integer), got the end of the input");
  scanner_.line_length();  // an int never spans lines; buffer the line
  const char* p = scanner_.cur();
  const char* e = scanner_.end();
  const char* end = p;
  int32_t v = 0;
  ParseStatus st = parse_int(p, e, &v, &end);
  if (st != ParseStatus::Ok || (end < e && !is_space(static_cast<unsigned char>(*end)))) {
    const char* q = p;
    while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
    std::string got(p, q);
    std::string hint;
    if (marker_ == "<nnet>" && index_ == 1)
      hint = " (a model starts with <Nnet>; Kaldi's wrapper tokens are case-sensitive)";
    fail(std::string("expected ") + what + " (an integer), got " + quote(got) + hint);
  }
  scanner_.set_cur(end);
  return v;
}

float ModelReader::text_float_scalar(const std::string& token) {
  scanner_.skip_ws();
  if (scanner_.at_eof()) fail("expected a number after " + token + ", got the end of the input");
  scanner_.line_length();
  const char* p = scanner_.cur();
  const char* e = scanner_.end();
  const char* end = p;
  float v = 0;
  bool ok = (*p == '-' || (*p >= '0' && *p <= '9') || *p == '+' || *p == '.');
  const char* s = (*p == '+') ? p + 1 : p;
  ok = ok && parse_float(s, e, &v, &end) == ParseStatus::Ok &&
       (end == e || is_space(static_cast<unsigned char>(*end)));
  if (!ok || !std::isfinite(v)) {
    const char* q = p;
    while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
    fail("expected a finite number after " + token + ", got " + quote(std::string(p, q)));
  }
  scanner_.set_cur(end);
  return v;
}

void ModelReader::check_alloc(int64_t count, int64_t min_bytes_each, const char* what) {
  int64_t rem = scanner_.remaining_hint();
  if (rem >= 0 && count > 0 && count > (rem + min_bytes_each) / min_bytes_each)
    fail(std::string(what) + " declares " + std::to_string(count) + " values but only " +
         std::to_string(rem) + " bytes of input remain (truncated file or absurd dims?)");
}

void ModelReader::text_matrix(FloatBlock* m, int64_t rows, int64_t cols) {
  std::string open = text_token();
  if (open == "[]") {
    if (rows * cols != 0) fail("matrix is empty ('[]') but the header says " + std::to_string(rows) + "x" + std::to_string(cols));
    m->rows = rows; m->cols = cols; m->data.clear();
    return;
  }
  if (open != "[") {
    if (open.empty()) fail("expected '[' to open the matrix, got the end of the input");
    fail("expected '[' to open the matrix, got " + quote(open));
  }
  // Two bytes per value ("0 ") is the least text can spend.
  check_alloc(rows * cols, 2, "matrix");
  const int64_t total = rows * cols;
  const bool known_size = scanner_.remaining_hint() >= 0;
  m->rows = rows;
  m->cols = cols;
  m->data.clear();
  if (known_size) m->data.resize(static_cast<size_t>(total));
  int64_t row = 0, col = 0;
  int64_t first_row_cols = -1;
  auto end_row = [&](const char* at) {
    if (col == 0) return;
    if (first_row_cols < 0) first_row_cols = col;
    if (col != cols) {
      if (row == 0 || first_row_cols != cols)
        fail_at(at, "matrix rows have " + std::to_string(col) + " values but the header says " +
                        std::to_string(cols) + " columns (the input dim)");
      fail_at(at, "ragged matrix: row " + std::to_string(row + 1) + " has " + std::to_string(col) +
                      " values, the rows before it have " + std::to_string(cols));
    }
    ++row;
    col = 0;
  };
  for (;;) {
    size_t len = scanner_.line_length();
    const char* p = scanner_.cur();
    const char* e = p + len;
    const bool has_newline = e < scanner_.end();
    if (len == 0 && !has_newline) fail("the input ends inside the matrix (no closing ']')");
    float* dst = nullptr;
    while (p < e) {
      unsigned char c = static_cast<unsigned char>(*p);
      if (c == ' ' || c == '\t' || c == '\r' || c == '\v' || c == '\f') {
        ++p;
      } else if (c == '-' || (c >= '0' && c <= '9')) {
        if (col >= cols || row >= rows) {
          if (row >= rows)
            fail_at(p, "matrix has more than " + std::to_string(rows) +
                           " rows, but the header says " + std::to_string(rows) + " (the output dim)");
          if (row == 0)
            fail_at(p, "matrix rows have more than " + std::to_string(cols) +
                           " values but the header says " + std::to_string(cols) + " columns (the input dim)");
          fail_at(p, "ragged matrix: row " + std::to_string(row + 1) + " has more than " +
                         std::to_string(cols) + " values, the rows before it have " + std::to_string(cols));
        }
        if (!dst) {
          int64_t need = (row + 1) * cols;
          if (static_cast<int64_t>(m->data.size()) < need)
            m->data.resize(static_cast<size_t>(std::min(total, std::max(need, 2 * static_cast<int64_t>(m->data.size())))));
          dst = m->data.data();
        }
        const char* end = p;
        float v;
        ParseStatus st = parse_float(p, e, &v, &end);
        if (st != ParseStatus::Ok) {
          const char* q = p;
          while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
          fail_at(p, st == ParseStatus::OutOfRange
                         ? "value " + quote(std::string(p, q)) + " is outside the float range"
                         : "expected a number in the matrix, got " + quote(std::string(p, q)));
        }
        if (static_cast<int64_t>(m->data.size()) < (row + 1) * cols) {
          m->data.resize(static_cast<size_t>(std::min(total, (row + 1) * cols * 2)));
          dst = m->data.data();
        }
        dst[row * cols + col] = v;
        ++col;
        p = end;
      } else if (c == ';') {
        end_row(p);
        ++p;
      } else if (c == ']') {
        end_row(p);
        if (row != rows)
          fail_at(p, "matrix has " + std::to_string(row) + " rows but the header says " +
                         std::to_string(rows) + " (the output dim)");
        ++p;
        // Kaldi eats one line end after ']'.
        if (p < e && *p == '\r') ++p;
        if (p == e && has_newline) ++p;
        m->data.resize(static_cast<size_t>(total));
        scanner_.set_cur(p);
        return;
      } else {
        const char* q = p;
        while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
        std::string tok(p, q);
        if (lower_equal(tok, "nan") || lower_equal(tok, "inf") || lower_equal(tok, "infinity") ||
            lower_equal(tok, "-inf") || lower_equal(tok, "-nan"))
          fail_at(p, "non-finite parameter " + quote(tok) +
                         " in the matrix (Kaldi rejects nan/inf in network parameters)");
        fail_at(p, "expected a number in the matrix, got " + quote(tok));
      }
    }
    end_row(e);
    scanner_.set_cur(e);
    if (!has_newline) fail("the input ends inside the matrix (no closing ']')");
    scanner_.advance(1);
  }
}

void ModelReader::text_vector(FloatBlock* v, int64_t dim, const char* what) {
  std::string open = text_token();
  v->rows = -1;
  v->data.clear();
  if (open == "[]") {
    v->cols = 0;
    if (dim > 0) fail(std::string(what) + " is empty ('[]') but " + std::to_string(dim) + " values are expected");
    return;
  }
  if (open != "[") {
    if (open.empty()) fail(std::string("expected '[' to open the ") + what + ", got the end of the input");
    fail(std::string("expected '[' to open the ") + what + ", got " + quote(open));
  }
  check_alloc(dim, 2, what);
  size_t len = scanner_.line_length();
  const char* p = scanner_.cur();
  const char* e = p + len;
  bool has_newline = e < scanner_.end();
  v->data.reserve(static_cast<size_t>(dim));
  while (p < e) {
    unsigned char c = static_cast<unsigned char>(*p);
    if (c == ' ' || c == '\t' || c == '\v' || c == '\f') {
      ++p;
    } else if (c == '-' || (c >= '0' && c <= '9')) {
      if (static_cast<int64_t>(v->data.size()) >= dim)
        fail_at(p, std::string(what) + " has more than the " + std::to_string(dim) + " values expected");
      const char* end = p;
      float x;
      ParseStatus st = parse_float(p, e, &x, &end);
      if (st != ParseStatus::Ok || (end < e && !is_space(static_cast<unsigned char>(*end)) && *end != ']')) {
        const char* q = p;
        while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
        fail_at(p, st == ParseStatus::OutOfRange
                       ? "value " + quote(std::string(p, q)) + " is outside the float range"
                       : std::string("expected a number in the ") + what + ", got " + quote(std::string(p, q)));
      }
      v->data.push_back(x);
      p = end;
    } else if (c == ']') {
      if (static_cast<int64_t>(v->data.size()) != dim)
        fail_at(p, std::string(what) + " has " + std::to_string(v->data.size()) + " values, expected " +
                       std::to_string(dim));
      ++p;
      if (p < e && *p == '\r') ++p;
      if (p == e && has_newline) ++p;
      v->cols = dim;
      scanner_.set_cur(p);
      return;
    } else if (c == '\r') {
      fail_at(p, std::string(what) + " continues past the end of the line (a vector must be on one line)");
    } else {
      const char* q = p;
      while (q < e && !is_space(static_cast<unsigned char>(*q))) ++q;
      std::string tok(p, q);
      if (lower_equal(tok, "nan") || lower_equal(tok, "inf") || lower_equal(tok, "infinity"))
        fail_at(p, "non-finite parameter " + quote(tok) + " in the " + what +
                       " (Kaldi rejects nan/inf in network parameters)");
      fail_at(p, std::string("expected a number in the ") + what + ", got " + quote(tok));
    }
  }
  scanner_.set_cur(e);
  if (!has_newline) fail(std::string("the input ends inside the ") + what + " (no closing ']')");
  fail(std::string(what) + " continues past the end of the line (a vector must be on one line)");
}

void ModelReader::text_int_vector(std::vector<int32_t>* v) {
  scanner_.skip_ws();
  if (scanner_.peek() != '[') {
    std::string got = scanner_.at_eof() ? "the end of the input" : quote(text_token());
    fail("expected '[' to open the integer vector, got " + got);
  }
  scanner_.advance(1);
  v->clear();
  for (;;) {
    scanner_.skip_ws();
    int c = scanner_.peek();
    if (c < 0) fail("the input ends inside the integer vector (no closing ']')");
    if (c == ']') {
      scanner_.advance(1);
      return;
    }
    check_alloc(static_cast<int64_t>(v->size()) + 1, 2, "integer vector");
    scanner_.line_length();
    const char* p = scanner_.cur();
    const char* end = p;
    int32_t x;
    if (parse_int(p, scanner_.end(), &x, &end) != ParseStatus::Ok) {
      const char* q = p;
      while (q < scanner_.end() && !is_space(static_cast<unsigned char>(*q)) && *q != ']') ++q;
      fail("expected an integer in the vector, got " + quote(std::string(p, q)));
    }
    v->push_back(x);
    scanner_.set_cur(end);
  }
}

// Unmodelled kinds keep their bytes: everything up to the <!EndOfComponent>
// at nesting depth 0 (nested <Nnet>s count), or the next component marker.
void ModelReader::text_raw(Component* c) {
  std::string& raw = c->raw;
  int depth = 0;
  for (;;) {
    const char* p = scanner_.cur();
    const char* e = scanner_.end();
    const char* lt = static_cast<const char*>(std::memchr(p, '<', e - p));
    if (!lt) {
      raw.append(p, e);
      scanner_.set_cur(e);
      if (!scanner_.ensure(1)) return;  // EOF ends the model
      continue;
    }
    raw.append(p, lt);
    scanner_.set_cur(lt);
    // Buffer the whole token.
    size_t n = 1;
    for (;;) {
      while (n < scanner_.available() && !is_space(static_cast<unsigned char>(scanner_.cur()[n]))) ++n;
      if (n < scanner_.available() || !scanner_.ensure(n + 1)) break;
    }
    std::string tok(scanner_.cur(), n);
    bool prev_space = raw.empty() || is_space(static_cast<unsigned char>(raw.back()));
    if (prev_space) {
      if (tok == "<Nnet>" || tok == "<NestedNnet>") {
        ++depth;
      } else if (tok == "</Nnet>" || tok == "</NestedNnet>") {
        if (depth == 0) return;
        --depth;
      } else if (depth == 0 && (tok == kEoc || kind_from_marker(tok) != Kind::Unknown)) {
        return;
      }
    }
    raw.append(tok);
    scanner_.advance(n);
  }
}

// ---------------------------------------------------------------- binary

std::string ModelReader::bin_token() {
  // Kaldi's ReadToken: skip whitespace, read non-space bytes, one space must follow.
  scanner_.skip_ws();
  std::string tok;
  for (;;) {
    if (!scanner_.ensure(1)) {
      if (tok.empty()) return tok;
      fail("the input ends inside the token " + quote(tok));
    }
    char ch = *scanner_.cur();
    if (is_space(static_cast<unsigned char>(ch))) break;
    if (tok.size() >= 256) fail("expected a token, got 256+ bytes with no space " + quote(tok));
    tok.push_back(ch);
    scanner_.advance(1);
  }
  scanner_.advance(1);
  return tok;
}

int32_t ModelReader::bin_int(const char* what) {
  if (!scanner_.ensure(5))
    fail(std::string("the input ends where ") + what + " (a 32-bit integer) was expected");
  const char* p = scanner_.cur();
  if (p[0] != 4)
    fail(std::string("expected ") + what + " (size byte 4 then a 32-bit integer), got size byte " +
         std::to_string(static_cast<unsigned char>(p[0])));
  int32_t v;
  std::memcpy(&v, p + 1, 4);
  scanner_.advance(5);
  return v;
}

float ModelReader::bin_float(const std::string& token) {
  if (!scanner_.ensure(1)) fail("the input ends where the value of " + token + " was expected");
  unsigned char sz = static_cast<unsigned char>(*scanner_.cur());
  if (sz != 4 && sz != 8)
    fail("expected the value of " + token + " (size byte 4 or 8), got size byte " + std::to_string(sz));
  if (!scanner_.ensure(1 + sz)) fail("the input ends inside the value of " + token);
  float v;
  if (sz == 4) {
    std::memcpy(&v, scanner_.cur() + 1, 4);
  } else {
    double d;
    std::memcpy(&d, scanner_.cur() + 1, 8);
    v = static_cast<float>(d);
  }
  if (!std::isfinite(v)) fail("the value of " + token + " is not finite");
  scanner_.advance(1 + sz);
  return v;
}

void ModelReader::bin_block(FloatBlock* b, bool matrix, int64_t rows, int64_t cols, const char* what) {
  std::string tok = bin_token();
  bool dbl = tok == (matrix ? "DM" : "DV");
  if (!dbl && tok != (matrix ? "FM" : "FV")) {
    if (tok.empty()) fail(std::string("the input ends where the ") + what + " was expected");
    fail(std::string("expected the ") + what + (matrix ? " (FM or DM)" : " (FV or DV)") + ", got " + quote(tok));
  }
  int64_t r = -1, c;
  if (matrix) {
    r = bin_int("the row count");
    c = bin_int("the column count");
    if (r != rows || c != cols)
      fail(std::string(what) + " is " + std::to_string(r) + "x" + std::to_string(c) +
           " but the header says " + std::to_string(rows) + "x" + std::to_string(cols) + " (output x input)");
  } else {
    c = bin_int("the vector length");
    if (c != cols)
      fail(std::string(what) + " has " + std::to_string(c) + " values, expected " + std::to_string(cols));
  }
  const int64_t n = (matrix ? r : 1) * c;
  const int64_t esz = dbl ? 8 : 4;
  check_alloc(n, esz, what);
  b->rows = matrix ? r : -1;
  b->cols = c;
  const int64_t data_offset = scanner_.offset();
  if (!dbl) {
    if (scanner_.remaining_hint() >= 0) {
      b->data.resize(static_cast<size_t>(n));
      if (!scanner_.read_exact(reinterpret_cast<char*>(b->data.data()), static_cast<size_t>(n) * 4))
        fail(std::string("the input ends inside the ") + what);
    } else {  // unknown size: grow as the data arrive
      b->data.clear();
      const int64_t step = 1 << 22;
      for (int64_t done = 0; done < n;) {
        int64_t k = std::min(step, n - done);
        b->data.resize(static_cast<size_t>(done + k));
        if (!scanner_.read_exact(reinterpret_cast<char*>(b->data.data() + done), static_cast<size_t>(k) * 4))
          fail(std::string("the input ends inside the ") + what);
        done += k;
      }
    }
  } else {
    b->data.clear();
    b->data.reserve(scanner_.remaining_hint() >= 0 ? static_cast<size_t>(n) : 0);
    double buf[4096];
    for (int64_t done = 0; done < n;) {
      int64_t k = std::min<int64_t>(4096, n - done);
      if (!scanner_.read_exact(reinterpret_cast<char*>(buf), static_cast<size_t>(k) * 8))
        fail(std::string("the input ends inside the ") + what);
      for (int64_t i = 0; i < k; ++i) b->data.push_back(static_cast<float>(buf[i]));
      done += k;
    }
  }
  check_finite(*b, what, data_offset);
}

void ModelReader::check_finite(const FloatBlock& b, const char* what, int64_t data_offset) {
  const float* d = b.data.data();
  const size_t n = b.data.size();
  // Branch-free scan first; locate the culprit only when there is one.
  uint32_t bad = 0;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, d + i, 4);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  if (!bad) return;
  for (size_t i = 0; i < n; ++i)
    if (!std::isfinite(d[i])) {
      int64_t off = data_offset + static_cast<int64_t>(i) * 4;
      std::string pos = b.is_matrix() ? " at row " + std::to_string(i / b.cols + 1) + ", column " +
                                            std::to_string(i % b.cols + 1)
                                      : " at index " + std::to_string(i + 1);
      throw FormatError(name() + ": byte " + std::to_string(off) + ": component " + std::to_string(index_) +
                            " " + marker_ + ": non-finite parameter (" + (std::isnan(d[i]) ? "nan" : "inf") +
                            ") in the " + what + pos + " (Kaldi rejects nan/inf in network parameters)",
                        name(), off, 0, 0, index_, marker_);
    }
}

void ModelReader::bin_int_vector(std::vector<int32_t>* v) {
  if (!scanner_.ensure(5)) fail("the input ends where an integer vector was expected");
  const char* p = scanner_.cur();
  if (p[0] != 4)
    fail("expected an integer vector (element size byte 4), got size byte " +
         std::to_string(static_cast<unsigned char>(p[0])));
  int32_t n;
  std::memcpy(&n, p + 1, 4);
  if (n < 0) fail("integer vector has negative length " + std::to_string(n));
  scanner_.advance(5);
  check_alloc(n, 4, "integer vector");
  v->resize(static_cast<size_t>(n));
  if (n > 0 && !scanner_.read_exact(reinterpret_cast<char*>(v->data()), static_cast<size_t>(n) * 4))
    fail("the input ends inside the integer vector");
}

void ModelReader::bin_raw(Component* c) {
  static const std::string kEocSp = std::string(kEoc) + " ";
  static const std::string kOpen = "<Nnet> ", kClose = "</Nnet> ";
  std::string& raw = c->raw;
  int depth = 0;
  for (;;) {
    if (!scanner_.ensure(1)) return;
    const char* p = scanner_.cur();
    const char* e = scanner_.end();
    const char* lt = static_cast<const char*>(std::memchr(p, '<', e - p));
    if (!lt) {
      raw.append(p, e);
      scanner_.set_cur(e);
      continue;
    }
    raw.append(p, lt);
    scanner_.set_cur(lt);
    scanner_.ensure(kEocSp.size());
    auto at = [&](const std::string& t) {
      return scanner_.available() >= t.size() && std::memcmp(scanner_.cur(), t.data(), t.size()) == 0;
    };
    if (at(kOpen)) {
      ++depth;
      raw.append(kOpen);
      scanner_.advance(kOpen.size());
    } else if (at(kClose)) {
      if (depth == 0) return;
      --depth;
      raw.append(kClose);
      scanner_.advance(kClose.size());
    } else if (at(kEocSp) && depth == 0) {
      return;
    } else {
      raw.push_back('<');
      scanner_.advance(1);
    }
  }
}

// ---------------------------------------------------------------- shared

void ModelReader::read_coefs(Component* c) {
  const KindInfo& info = kind_info(c->kind);
  const bool bin = encoding_ == Encoding::Binary;
  for (;;) {
    if (bin) {
      if (!scanner_.ensure(1) || *scanner_.cur() != '<') return;
    } else if (!text_peek_is('<')) {
      return;
    }
    if (scanner_.ensure(2) && scanner_.cur()[1] == '!' && c->kind != Kind::Dropout) return;
    if (c->kind == Kind::Dropout && scanner_.ensure(2) && scanner_.cur()[1] == '!') {
      std::string tok = bin ? bin_token() : text_token();
      if (tok != kEoc) fail_at(scanner_.cur(), "expected <!EndOfComponent>, got " + quote(tok) + " (tokens are case-sensitive)");
      return;  // Dropout eats its own end marker, as Kaldi's does
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
      fail("unknown token " + quote(tok) + " in " + info.marker +
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
    else text_matrix(b, c->output_dim, c->input_dim);
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
  std::string problem = out->check();
  if (!problem.empty()) fail(problem);
  read_end_marker();
  prev_output_ = out->output_dim;
  prev_marker_ = tok;
  ++component_count_;
  return true;
}

}  // namespace svd
