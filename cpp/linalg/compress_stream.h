// The streaming compressor: a model file in, its compressed form out, one
// component in memory at a time (plus the next, being read, and the previous
// replacement, being written): reading and writing overlap the SVDs.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "linalg/compress.h"
#include "nnet1/number_format.h"

namespace svd {

struct StreamOptions {
  std::map<int64_t, RankPolicy> layers;  // 1-based component index (as nnet-info) -> its policy
  SvdOptions svd;
  Split split = Split::Sqrt;
  bool spectrum = false;
  // Unset: as write() resolves them from the source: binary if the source is
  // (unless the dialect is PDNN, text only); Kaldi when binary, else the source's dialect.
  std::optional<Encoding> encoding;
  std::optional<Dialect> dialect;
  Digits digits = Digits::Shortest;
};

struct StreamedLayer {
  int64_t index = 0;
  std::string marker;
  LayerStats stats;
};

struct StreamReport {
  std::vector<StreamedLayer> layers;
  // Components not selected count as read (Component::num_params, unknown as 0):
  // callers stream only models whose other components the writer does not
  // convert between dialects.
  int64_t params_before = 0, params_after = 0;
  Encoding source_encoding = Encoding::Text;
  Dialect source_dialect = Dialect::Kaldi;
  Dialect output_dialect = Dialect::Kaldi;
  std::vector<std::string> notes;  // the writer's conversions
};

// Reads `source` (a path, "-": stdin), replaces the selected layers by
// compress_layer and writes `output` (a path, atomically; "-": stdout).
// `on_layer` is called before each selected layer is factored (progress; it
// may throw to stop). On any error the output is left as it was.
StreamReport compress_stream(const std::string& source, const std::string& output, const StreamOptions& options,
                             const std::function<void(int64_t index, const Component& layer)>& on_layer = {});

}  // namespace svd
