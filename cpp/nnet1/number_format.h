// Text numbers as Kaldi writes them: two ways of printing a float32
// (shortest round-trip, or Kaldi's %.7g), and integers. The reader's side is
// nnet1/number_parse.h.
#pragma once

#include <cstddef>
#include <cstdint>

namespace svd {

enum class Digits { Shortest, Kaldi };

// Writes v into buf (at least 32 bytes) and returns the number of bytes.
size_t format_float(char* buf, float v, Digits digits);
size_t format_int(char* buf, int64_t v);

}  // namespace svd
