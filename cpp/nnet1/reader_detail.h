// Small text helpers shared by the reader's translation units.
#pragma once

#include <cctype>
#include <cstdint>
#include <cstring>
#include <string>

namespace svd {
namespace reader_detail {

constexpr const char* kEoc = "<!EndOfComponent>";

inline bool is_space(unsigned char c) {
  return c == ' ' || c == '\n' || c == '\t' || c == '\r' || c == '\v' || c == '\f';
}

// A token for an error message: shortened, control bytes made visible.
inline std::string quote(const std::string& s) {
  std::string r = s.size() > 40 ? s.substr(0, 37) + "..." : s;
  for (char& c : r)
    if (static_cast<unsigned char>(c) < 0x20 || static_cast<unsigned char>(c) >= 0x7f) c = '?';
  return "'" + r + "'";
}

// '\n' bytes in [a, b): memchr jumps between them (lines are long), far
// faster than a byte loop the compiler widens for the count.
inline int64_t count_newlines(const char* a, const char* b) {
  int64_t n = 0;
  while (a < b) {
    const void* q = std::memchr(a, '\n', static_cast<size_t>(b - a));
    if (!q) break;
    ++n;
    a = static_cast<const char*>(q) + 1;
  }
  return n;
}

inline bool lower_equal(const std::string& a, const char* b) {
  size_t n = std::strlen(b);
  if (a.size() != n) return false;
  for (size_t i = 0; i < n; ++i)
    if (std::tolower(static_cast<unsigned char>(a[i])) != std::tolower(static_cast<unsigned char>(b[i])))
      return false;
  return true;
}

inline bool all_lower(const std::string& s) {
  for (char c : s)
    if (std::isupper(static_cast<unsigned char>(c))) return false;
  return true;
}

// '<' printable-ASCII '>': anything else cannot be a component marker.
inline bool looks_like_marker(const std::string& t) {
  if (t.size() < 3 || t.front() != '<' || t.back() != '>') return false;
  for (char c : t)
    if (static_cast<unsigned char>(c) < 0x21 || static_cast<unsigned char>(c) > 0x7e) return false;
  return true;
}

}  // namespace reader_detail
}  // namespace svd
