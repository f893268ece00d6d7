// Text-encoding half of ModelReader: Kaldi text and PDNN-style text.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <thread>

#include "nnet1/errors.h"
#include "nnet1/number_parse.h"
#include "nnet1/reader.h"
#include "nnet1/reader_detail.h"
#include "util/threads.h"

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

namespace svd {
using namespace reader_detail;

std::string ModelReader::text_token() { return scanner_.read_token(); }

bool ModelReader::text_peek_is(char c) {
  scanner_.skip_ws();
  return scanner_.peek() == static_cast<unsigned char>(c);
}

int32_t ModelReader::text_int(const char* what) {
  scanner_.skip_ws();
  if (scanner_.at_eof()) fail(std::string("the input ends where ") + what + " (an integer) was expected");
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
  if (scanner_.at_eof()) fail("the input ends where a number after " + token + " was expected");
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
    fail("the input ends inside the " + std::string(what) + ": it declares " + std::to_string(count) +
         " values but only " + std::to_string(rem) + " bytes of input remain (truncated file or absurd dims?)");
}

namespace {

// Counts the '\n' in [a, b) before the first ']' or ';' (where rows stop
// being plain numbers) and returns that byte, or b: one pass over the block.
const char* count_rows_to_stop(const char* a, const char* b, int64_t* lines) {
  int64_t n = 0;
  const char* p = a;
#if defined(__SSE2__)
  const __m128i nl = _mm_set1_epi8('\n'), close = _mm_set1_epi8(']'), semi = _mm_set1_epi8(';');
  while (b - p >= 64) {
    // Byte lanes count newlines (cmpeq gives -1; up to 4 a step, so at most
    // 63 steps before psadbw sums them).
    __m128i counts = _mm_setzero_si128();
    int steps = 0;
    for (; steps < 63 && b - p >= 64; ++steps, p += 64) {
      const __m128i* q = reinterpret_cast<const __m128i*>(p);
      const __m128i v0 = _mm_loadu_si128(q), v1 = _mm_loadu_si128(q + 1);
      const __m128i v2 = _mm_loadu_si128(q + 2), v3 = _mm_loadu_si128(q + 3);
      const __m128i stop = _mm_or_si128(
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v0, close), _mm_cmpeq_epi8(v0, semi)),
                       _mm_or_si128(_mm_cmpeq_epi8(v1, close), _mm_cmpeq_epi8(v1, semi))),
          _mm_or_si128(_mm_or_si128(_mm_cmpeq_epi8(v2, close), _mm_cmpeq_epi8(v2, semi)),
                       _mm_or_si128(_mm_cmpeq_epi8(v3, close), _mm_cmpeq_epi8(v3, semi))));
      if (_mm_movemask_epi8(stop)) break;  // the byte loop below finds it
      counts = _mm_sub_epi8(counts, _mm_add_epi8(_mm_add_epi8(_mm_cmpeq_epi8(v0, nl), _mm_cmpeq_epi8(v1, nl)),
                                                 _mm_add_epi8(_mm_cmpeq_epi8(v2, nl), _mm_cmpeq_epi8(v3, nl))));
    }
    const __m128i sums = _mm_sad_epu8(counts, _mm_setzero_si128());
    n += _mm_cvtsi128_si32(sums) + _mm_cvtsi128_si32(_mm_unpackhi_epi64(sums, sums));
    if (steps < 63) break;
  }
#endif
  for (; p < b && *p != ']' && *p != ';'; ++p) n += *p == '\n';
  *lines = n;
  return p;
}

}  // namespace

// Bulk path for the body of a large matrix: blocks of complete lines, split
// into pieces at line boundaries and handed to the threads in order. Each piece
// counts its rows (which brings it into cache), waits for the row count of the
// pieces before it, publishes its own and parses its rows into place. Any
// irregularity (blank line, ragged row, ';', ']', a bad number) makes it stop
// at that line and leave the rest to the exact, serial parser, which reports
// errors. Returns the number of rows parsed.
int64_t ModelReader::text_rows_bulk(FloatBlock* m, int64_t row, int64_t rows, int64_t cols) {
  // 2 MB blocks in pieces of 128 KB (16 for two threads): measured against
  // 1-16 MB blocks and 64-512 KB pieces, with equal and with shrinking pieces.
  constexpr size_t kBlock = 2 << 20;
  constexpr int64_t kNone = -1;
  int64_t done = 0;
  int64_t row_bytes = 2 * cols;  // text per row: the least at first, then as measured
  while (row + done < rows) {
    scanner_.ensure(kBlock);
    const char* p = scanner_.cur();
    const char* e = p + std::min(scanner_.available(), kBlock);
    const void* nl = memrchr(p, '\n', e - p);
    if (!nl) return done;
    e = static_cast<const char*>(nl) + 1;
    const int64_t first = row + done;  // the block's first row
    // Two bytes per value at least: the block holds at most this many rows,
    // and the destination never grows beyond what the input has backed.
    const int64_t most = std::min(rows - first, static_cast<int64_t>((e - p) / (2 * cols)));
    if (most == 0) return done;  // not one whole row here: the serial parser decides
    if (static_cast<int64_t>(m->data.size()) < (first + most) * cols)
      m->data.resize(static_cast<size_t>(std::min(rows * cols, std::max((first + most) * cols,
                                                                         2 * static_cast<int64_t>(m->data.size())))));
    float* const base = m->data.data();
    // No more pieces than the block has rows (by the rows of the block before):
    // with rows longer than a piece, pieces would be empty and each would
    // search the same long line for its ends.
    const int64_t parts = std::max<int64_t>(
        1, std::min({int64_t{8} * num_threads(), static_cast<int64_t>((e - p) >> 16),
                     static_cast<int64_t>((e - p) / row_bytes)}));
    // Piece k starts after the first newline at or after p + k/parts of the
    // block: each piece finds its own ends, so the pages there are faulted in
    // by the threads, in parallel, not one by one here.
    const auto boundary = [&](int64_t k) -> const char* {
      if (k == 0) return p;
      if (k == parts) return e;
      const char* t = p + (e - p) * k / parts;
      const void* q = std::memchr(t, '\n', e - t);  // found: e ends with one
      return static_cast<const char*>(q) + 1;
    };
    std::vector<const char*> cut(static_cast<size_t>(parts) + 1);
    cut[parts] = e;
    // The input before this block is parsed: one more task hands its pages
    // back, taken last, by whichever thread runs out of pieces first.
    const int64_t block_offset = scanner_.offset();
    // start[k]: the first row of piece k once known; kNone until then. A piece
    // that cannot be parsed whole (a stop byte, too many rows) ends the chain:
    // every later piece sees start == kStopped and leaves its rows alone.
    constexpr int64_t kStopped = -2;
    std::vector<std::atomic<int64_t>> start(static_cast<size_t>(parts) + 1);
    for (auto& s : start) s.store(kNone, std::memory_order_relaxed);
    start[0].store(first, std::memory_order_relaxed);
    std::vector<const char*> reached(static_cast<size_t>(parts));  // where each piece's parse stopped
    // (With one piece, the caller does both, one after the other.)
    parallel_for(parts > 1 ? parts + 1 : 1, [&](int64_t k) {
      if (k == parts) {
        scanner_.release_before(block_offset);
        return;
      }
      const char* a = cut[k] = boundary(k);
      const char* const piece_end = boundary(k + 1);
      const char* b = piece_end;
      int64_t lines = 0;
      const char* stop = count_rows_to_stop(a, b, &lines);
      int64_t at;
      for (int spins = 0; (at = start[k].load(std::memory_order_acquire)) == kNone; ++spins)
        if (spins > 64) std::this_thread::yield();  // the piece before is still counting
      if (at == kStopped) {
        reached[k] = a;
        start[k + 1].store(kStopped, std::memory_order_release);
        return;
      }
      if (stop != b) {  // the piece ends at the line holding the stop byte
        const void* q = memrchr(a, '\n', stop - a);
        b = q ? static_cast<const char*>(q) + 1 : a;
      }
      // More rows than the header says (the serial parser reports it), or than
      // the block can hold (blank lines): nothing past the destination's end.
      if (at + lines > first + most) b = a;
      start[k + 1].store(b == piece_end ? at + lines : kStopped, std::memory_order_release);
      float* dst = base + at * cols;
      while (a < b) {
        const char* eol = static_cast<const char*>(std::memchr(a, '\n', b - a));
        if (!parse_row(a, eol, scanner_.end(), dst, cols)) break;
        dst += cols;
        a = eol + 1;
      }
      reached[k] = a;
    });
    if (parts == 1) scanner_.release_before(block_offset);
    for (int64_t k = 0; k < parts; ++k) {
      if (reached[k] == cut[k + 1]) continue;
      // The rows before it stand; the serial parser goes on from that line.
      const int64_t at = start[k].load(std::memory_order_relaxed);
      done = at - row + count_newlines(cut[k], reached[k]);
      scanner_.set_cur(reached[k]);
      return done;
    }
    const int64_t end_row = start[parts].load(std::memory_order_relaxed);
    if (end_row > first) row_bytes = std::max<int64_t>(1, (e - p) / (end_row - first));
    done = end_row - row;
    scanner_.set_cur(e);
  }
  return done;
}

// Steps over a '[ ... ]' block without parsing it (structure scans).
void ModelReader::text_skip_block(const char* what) {
  for (;;) {
    const char* p = scanner_.cur();
    const void* q = std::memchr(p, ']', scanner_.available());
    if (q) {
      scanner_.set_cur(static_cast<const char*>(q) + 1);
      return;
    }
    scanner_.set_cur(scanner_.end());
    if (!scanner_.ensure(1)) fail(std::string("the input ends inside the ") + what + " (no closing ']')");
  }
}

void ModelReader::text_matrix(FloatBlock* m, int64_t rows, int64_t cols, const char* what) {
  std::string open = text_token();
  if (skip_data_ && open == "[") {
    m->rows = rows;
    m->cols = cols;
    text_skip_block(what);
    return;
  }
  if (open == "[]") {
    if (rows * cols != 0) fail("matrix is empty ('[]') but the header says " + std::to_string(rows) + "x" + std::to_string(cols));
    m->rows = rows; m->cols = cols; m->data.clear();
    return;
  }
  if (open != "[") {
    if (open.empty()) fail("the input ends where '[' opening the " + std::string(what) + " was expected");
    fail("expected '[' to open the matrix, got " + quote(open));
  }
  // Two bytes per value ("0 ") is the least text can spend.
  check_alloc(rows * cols, 2, what);
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
    // Rows the bulk path parsed before this one had `cols` values each.
    if (first_row_cols < 0) first_row_cols = row > 0 ? cols : col;
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
    if (row < rows && cols > 0) row += text_rows_bulk(m, row, rows, cols);
    size_t len = scanner_.line_length();
    const char* p = scanner_.cur();
    const char* e = p + len;
    const bool has_newline = e < scanner_.end();
    // The last line of a truncated input: say so, as the structure scan does,
    // not what its cut-off row looks like (short, or a number cut in two).
    if (!has_newline && !std::memchr(p, ']', len)) {
      scanner_.set_cur(e);
      fail("the input ends inside the " + std::string(what) + " (no closing ']')");
    }
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
        const int64_t idx = row * cols + col;
        if (static_cast<int64_t>(m->data.size()) <= idx) {
          // Grow with the values actually present, never to a declared size
          // the input has not backed yet.
          const int64_t grown = std::max<int64_t>({idx + 1, 2 * static_cast<int64_t>(m->data.size()), 4096});
          m->data.resize(static_cast<size_t>(std::min(total, grown)));
        }
        m->data[static_cast<size_t>(idx)] = v;
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
    if (!has_newline) fail("the input ends inside the " + std::string(what) + " (no closing ']')");
    scanner_.advance(1);
  }
}

void ModelReader::text_vector(FloatBlock* v, int64_t dim, const char* what) {
  std::string open = text_token();
  if (skip_data_ && open == "[") {
    v->rows = -1;
    v->cols = dim;
    text_skip_block(what);
    return;
  }
  v->rows = -1;
  v->data.clear();
  if (open == "[]") {
    v->cols = 0;
    if (dim > 0) fail(std::string(what) + " is empty ('[]') but " + std::to_string(dim) + " values are expected");
    return;
  }
  if (open != "[") {
    if (open.empty()) fail(std::string("the input ends where '[' opening the ") + what + " was expected");
    fail(std::string("expected '[' to open the ") + what + ", got " + quote(open));
  }
  check_alloc(dim, 2, what);
  size_t len = scanner_.line_length();
  const char* p = scanner_.cur();
  const char* e = p + len;
  bool has_newline = e < scanner_.end();
  if (!has_newline && !std::memchr(p, ']', len)) {  // truncated: as in text_matrix
    scanner_.set_cur(e);
    fail(std::string("the input ends inside the ") + what + " (no closing ']')");
  }
  v->data.reserve(static_cast<size_t>(std::min<int64_t>(dim, len / 2 + 1)));
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
    if (scanner_.at_eof()) fail("the input ends where '[' opening the integer vector was expected");
    fail("expected '[' to open the integer vector, got " + quote(text_token()));
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

}  // namespace svd
