// Binary-encoding half of ModelReader: Kaldi binary (\0B) models.

#include <cmath>
#include <cstring>

#include "nnet1/errors.h"
#include "nnet1/number_parse.h"
#include "nnet1/reader.h"
#include "nnet1/reader_detail.h"

namespace svd {
using namespace reader_detail;

namespace {
// 1 if the float32 data hold a nan or inf (exponent bits all set), else 0.
int any_nonfinite(const char* p, size_t bytes) {
  uint32_t bad = 0;
  const size_t n = bytes / 4;
  for (size_t i = 0; i < n; ++i) {
    uint32_t u;
    std::memcpy(&u, p + 4 * i, 4);
    bad |= static_cast<uint32_t>((u & 0x7f800000u) == 0x7f800000u);
  }
  return bad ? 1 : 0;
}
}  // namespace

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
  if (skip_data_) {
    if (!scanner_.skip(static_cast<size_t>(n * esz))) fail(std::string("the input ends inside the ") + what);
    return;
  }
  const int64_t data_offset = scanner_.offset();
  if (!dbl) {
    if (scanner_.remaining_hint() >= 0) {
      b->data.resize(static_cast<size_t>(n));
      const size_t bytes = static_cast<size_t>(n) * 4;
      // The finiteness check runs on each piece while it is in cache.
      const int bad = scanner_.read_exact_chunks(reinterpret_cast<char*>(b->data.data()), bytes,
                                                 [](const char* p, size_t len) { return any_nonfinite(p, len); });
      if (bad < 0) fail(std::string("the input ends inside the ") + what);
      scanner_.release_consumed();
      if (bad) check_finite(*b, what, data_offset);  // locates the culprit and throws
      return;
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
  scanner_.release_consumed();
  check_finite(*b, what, data_offset);
}

void ModelReader::check_finite(const FloatBlock& b, const char* what, int64_t data_offset) {
  const float* d = b.data.data();
  const size_t n = b.data.size();
  // Branch-free scan first; locate the culprit only when there is one.
  if (!any_nonfinite(reinterpret_cast<const char*>(d), n * 4)) return;
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
  v->clear();
  for (int64_t done = 0; done < n;) {  // in steps: an unknown-size input must back each one
    int64_t k = std::min<int64_t>(n - done, 1 << 20);
    v->resize(static_cast<size_t>(done + k));
    if (!scanner_.read_exact(reinterpret_cast<char*>(v->data() + done), static_cast<size_t>(k) * 4))
      fail("the input ends inside the integer vector");
    done += k;
  }
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

}  // namespace svd
