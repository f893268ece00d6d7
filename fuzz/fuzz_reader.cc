// libFuzzer harness for the nnet1 reader and writer.
//
// The first input byte picks how the bytes reach the reader (memory-mapped,
// read() with a known size, or small read() chunks of unknown total size, like
// a pipe); the rest is the model. Accepted models must round-trip: written as
// binary, read back and written again, the bytes are identical; written as
// text (shortest digits), read back, the parameters are bit-identical.
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>

#include "nnet1/byte_sink.h"
#include "nnet1/byte_source.h"
#include "nnet1/errors.h"
#include "nnet1/reader.h"
#include "nnet1/writer.h"

namespace {

class MemorySource : public svd::ByteSource {
 public:
  MemorySource(const char* d, size_t n, int mode) : svd::ByteSource("fuzz"), d_(d), n_(n), mode_(mode) {}
  size_t read(char* dst, size_t want) override {
    size_t k = std::min(want, n_ - pos_);
    if (mode_ == 2) k = std::min<size_t>(k, 7);  // tiny chunks: every refill path
    std::memcpy(dst, d_ + pos_, k);
    pos_ += k;
    return k;
  }
  int64_t size_hint() const override { return mode_ == 2 ? -1 : static_cast<int64_t>(n_); }
  bool map(const char** data, size_t* size) override {
    if (mode_ != 0 || n_ == 0) return false;
    *data = d_;
    *size = n_;
    return true;
  }

 private:
  const char* d_;
  size_t n_, pos_ = 0;
  int mode_;
};

class StringSink : public svd::ByteSink {
 public:
  explicit StringSink(std::string* out) : svd::ByteSink("fuzz-out"), out_(out) {}
  void write(const char* d, size_t n) override { out_->append(d, n); }
  void commit() override {}
  void abort() noexcept override {}

 private:
  std::string* out_;
};

std::string write_all(const std::vector<svd::Component>& comps, svd::Encoding enc) {
  std::string out;
  svd::WriteOptions o;
  o.encoding = enc;
  svd::ModelWriter w(std::make_unique<StringSink>(&out), o);
  for (const auto& c : comps) w.write(c);
  w.close();
  return out;
}

std::vector<svd::Component> read_all(const std::string& bytes) {
  svd::ModelReader r(std::make_unique<MemorySource>(bytes.data(), bytes.size(), 1));
  std::vector<svd::Component> comps;
  svd::Component c;
  while (r.next(&c)) comps.push_back(c);
  return comps;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const int mode = data[0] % 3;
  std::vector<svd::Component> comps;
  try {
    svd::ModelReader r(std::make_unique<MemorySource>(reinterpret_cast<const char*>(data + 1), size - 1, mode));
    svd::Component c;
    while (r.next(&c)) comps.push_back(c);
  } catch (const svd::Error&) {
    return 0;  // refused with a clear error: fine
  }
  // Unmodelled kinds keep raw bytes of one encoding; PDNN <relu>/<linear> are
  // converted in Kaldi dialect. Round-trip only what maps one to one.
  for (const auto& c : comps)
    if (!svd::is_modelled(c.kind) || c.kind == svd::Kind::Relu || c.kind == svd::Kind::Linear) return 0;
  std::string bin1;
  try {
    bin1 = write_all(comps, svd::Encoding::Binary);
  } catch (const svd::Error&) {
    return 0;  // e.g. a component the writer refuses: never a partial output
  }
  std::string bin2 = write_all(read_all(bin1), svd::Encoding::Binary);
  if (bin1 != bin2) __builtin_trap();
  std::vector<svd::Component> back = read_all(write_all(comps, svd::Encoding::Text));
  if (back.size() != comps.size()) __builtin_trap();
  for (size_t i = 0; i < comps.size(); ++i)
    for (size_t j = 0; j < comps[i].params.size(); ++j)
      if (comps[i].params[j].data.size() != back[i].params[j].data.size() ||
          std::memcmp(comps[i].params[j].data.data(), back[i].params[j].data.data(),
                      comps[i].params[j].data.size() * 4) != 0)
        __builtin_trap();
  return 0;
}
