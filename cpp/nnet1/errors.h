// The exception family of the core. Bindings map these onto svdistill.Error and
// svdistill.FormatError; everything the core refuses is one of them.
#pragma once

#include <stdexcept>
#include <string>

namespace svd {

// Any failure the user can act on: I/O, bad arguments, unsupported requests.
class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Malformed model input. The message already names file, position, component
// and what was expected; the fields let callers build their own report.
class FormatError : public Error {
 public:
  FormatError(const std::string& message, std::string file, long long offset,
              long long line, long long column, int component_index,
              std::string marker)
      : Error(message),
        file(std::move(file)),
        offset(offset),
        line(line),
        column(column),
        component_index(component_index),
        marker(std::move(marker)) {}

  std::string file;
  long long offset;     // byte offset of the problem, from the start of the (decompressed) input
  long long line;       // 1-based; 0 for binary input
  long long column;     // 1-based; 0 for binary input
  int component_index;  // 1-based as nnet-info numbers them; 0 = outside any component
  std::string marker;   // component marker as written, empty if none
};

}  // namespace svd
