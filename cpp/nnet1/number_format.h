// Text numbers as Kaldi reads and writes them: exactly rounded float parsing,
// and two ways of printing a float32 (shortest round-trip, or Kaldi's %.7g).
#pragma once

#include <cstddef>
#include <cstdint>

namespace svd {

enum class Digits { Shortest, Kaldi };

enum class ParseStatus { Ok, NotANumber, OutOfRange };

// Parses a decimal float starting at p (a digit or '-', as Kaldi requires) and
// stopping at the first byte that cannot continue it. Sets *end past it.
ParseStatus parse_float(const char* p, const char* e, float* out, const char** end);

// Parses an optionally signed decimal int32; same contract.
ParseStatus parse_int(const char* p, const char* e, int32_t* out, const char** end);

// Writes v into buf (at least 32 bytes) and returns the number of bytes.
size_t format_float(char* buf, float v, Digits digits);
size_t format_int(char* buf, int64_t v);

}  // namespace svd
