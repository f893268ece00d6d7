// Where model bytes go. A file target is written to a temporary file beside it
// and renamed over the target only on commit(), so a crash, a full disk or an
// error never leaves a partial model, and `copy X X` is safe.
#pragma once

#include <cstddef>
#include <memory>
#include <string>

namespace svd {

class ByteSink {
 public:
  explicit ByteSink(std::string name) : name_(std::move(name)) {}
  virtual ~ByteSink() = default;
  ByteSink(const ByteSink&) = delete;
  ByteSink& operator=(const ByteSink&) = delete;

  virtual void write(const char* data, size_t n) = 0;  // throws Error
  virtual void commit() = 0;                           // make the output visible
  virtual void abort() noexcept = 0;                   // discard it
  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// "-" is stdout (written through, nothing to rename); any other path is written
// atomically as described above.
std::unique_ptr<ByteSink> open_sink(const std::string& path);

}  // namespace svd
