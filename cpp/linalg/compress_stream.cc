#include "linalg/compress_stream.h"

#include <algorithm>
#include <future>
#include <memory>
#include <utility>

#include "nnet1/byte_sink.h"
#include "nnet1/byte_source.h"
#include "nnet1/errors.h"
#include "nnet1/reader.h"
#include "nnet1/writer.h"

namespace svd {

StreamReport compress_stream(const std::string& source, const std::string& output, const StreamOptions& options,
                             const std::function<void(int64_t, const Component&)>& on_layer) {
  StreamReport report;
  ModelReader reader(open_source(source));
  Component cur;
  bool more = reader.next(&cur);  // the dialect is known after one component
  report.source_encoding = reader.encoding();
  report.source_dialect = reader.dialect();
  WriteOptions wo;
  const bool pdnn_asked = options.dialect && *options.dialect == Dialect::Pdnn;
  wo.encoding = options.encoding ? *options.encoding
                                 : (report.source_encoding == Encoding::Binary && !pdnn_asked ? Encoding::Binary
                                                                                              : Encoding::Text);
  wo.dialect = options.dialect ? *options.dialect
                               : (wo.encoding == Encoding::Binary ? Dialect::Kaldi : report.source_dialect);
  wo.digits = options.digits;
  report.output_dialect = wo.dialect;
  FactorOptions factor;
  factor.split = options.split;
  factor.dialect = wo.dialect;
  factor.spectrum = options.spectrum;

  ModelWriter writer(open_sink(output), wo);
  try {
    std::vector<Component> written;  // what `writing` writes: the previous component's output
    std::future<void> writing;
    for (int64_t index = 1; more; ++index) {
      Component next;
      std::future<bool> reading = std::async(std::launch::async, [&reader, &next] { return reader.next(&next); });
      report.params_before += std::max<int64_t>(0, cur.num_params());
      std::vector<Component> out;
      const auto plan = options.layers.find(index);
      if (plan == options.layers.end()) {
        report.params_after += std::max<int64_t>(0, cur.num_params());
        out.push_back(std::move(cur));
      } else {
        if (on_layer) on_layer(index, cur);
        CompressedLayer r;
        try {
          r = compress_layer(cur, plan->second, options.svd, factor);
        } catch (const FormatError&) {
          throw;
        } catch (const Error& e) {
          throw Error("component " + std::to_string(index) + " " + cur.marker + ": " + e.what());
        }
        report.params_after += r.stats.params_after;
        report.layers.push_back({index, cur.marker, std::move(r.stats)});
        if (r.replacement.empty()) out.push_back(std::move(cur));
        else out = std::move(r.replacement);
      }
      if (writing.valid()) writing.get();
      written = std::move(out);
      writing = std::async(std::launch::async, [&writer, &written] {
        for (const Component& c : written) writer.write(c);
      });
      more = reading.get();
      cur = std::move(next);
    }
    if (writing.valid()) writing.get();
    writer.close();
  } catch (...) {
    writer.abort();
    throw;
  }
  report.notes = writer.notes();
  return report;
}

}  // namespace svd
