// Where model bytes come from: a file, stdin, a gzip stream, or (from the
// bindings) a Python file object. Sources only move bytes; parsing lives in
// text_scanner / reader.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>

namespace svd {

class ByteSource {
 public:
  explicit ByteSource(std::string name) : name_(std::move(name)) {}
  virtual ~ByteSource() = default;
  ByteSource(const ByteSource&) = delete;
  ByteSource& operator=(const ByteSource&) = delete;

  // Reads up to n bytes into dst; returns 0 only at end of input. Throws Error.
  virtual size_t read(char* dst, size_t n) = 0;
  // Bytes this source will deliver in total, or -1 if unknown (pipes, gzip).
  virtual int64_t size_hint() const { return -1; }
  // The whole input as one read-only memory range, if the source can map it
  // (a regular file); then read() is not used. The range lives as long as the source.
  virtual bool map(const char** data, size_t* size) {
    (void)data;
    (void)size;
    return false;
  }
  // Tells a mapped source that bytes before `offset` will not be read again.
  // Called from any thread (one at a time), while others read later bytes.
  virtual void release_before(size_t offset) { (void)offset; }
  // For a mapped source: copies n bytes at absolute `offset` straight from the
  // file (pread: no page-table work for the mapping), from any thread. False
  // if the source cannot; then callers copy from the mapping. Throws Error.
  virtual bool read_at(char* dst, size_t n, int64_t offset) {
    (void)dst;
    (void)n;
    (void)offset;
    return false;
  }

  const std::string& name() const { return name_; }

 private:
  std::string name_;
};

// Opens a path ("-" is stdin). Gzip input (by its magic bytes, whatever the
// name) is decompressed on the fly when the core was built with zlib; without
// zlib, open_source throws Error and the Python layer decompresses instead.
std::unique_ptr<ByteSource> open_source(const std::string& path);

// Wraps another source and inflates the gzip stream it carries.
std::unique_ptr<ByteSource> gzip_source(std::unique_ptr<ByteSource> inner);

// Looks at the first bytes of any source and inflates it if it is gzip.
std::unique_ptr<ByteSource> auto_gunzip(std::unique_ptr<ByteSource> inner);

// True when this build can read gzip itself.
bool have_zlib();

}  // namespace svd
