#!/usr/bin/env bash
# Builds fuzz/fuzz_reader (libFuzzer + ASan + UBSan) with clang.
# Needs Debian's clang and libclang-rt-14-dev (apt-get install clang libclang-rt-14-dev).
set -euo pipefail
cd "$(dirname "$0")/.."
CXX="${CXX:-clang++}"
SRC="cpp/nnet1/byte_sink.cc cpp/nnet1/byte_source.cc cpp/nnet1/component.cc cpp/nnet1/number_format.cc
     cpp/nnet1/number_parse.cc cpp/nnet1/reader.cc cpp/nnet1/reader_binary.cc cpp/nnet1/reader_text.cc
     cpp/nnet1/text_scanner.cc cpp/nnet1/writer.cc cpp/util/block_alloc.cc cpp/util/threads.cc"
# shellcheck disable=SC2086
$CXX -std=c++17 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
  -Icpp fuzz/fuzz_reader.cc $SRC -o fuzz/fuzz_reader -lpthread
echo "built fuzz/fuzz_reader"
