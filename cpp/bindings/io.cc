// ModelReader / ModelWriter as _core.Reader / _core.Writer. Paths go straight
// to the C++ sources and sinks; Python file objects are wrapped (the GIL is
// taken only around their read/write calls).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <unistd.h>

#include <cstring>

#include "bindings/bindings.h"
#include "nnet1/byte_sink.h"
#include "nnet1/byte_source.h"
#include "nnet1/errors.h"
#include "nnet1/reader.h"
#include "nnet1/writer.h"

namespace svd_py {
namespace {

class PyFileSource : public svd::ByteSource {
 public:
  PyFileSource(py::object file, std::string name) : svd::ByteSource(std::move(name)), file_(std::move(file)) {}
  ~PyFileSource() override {
    py::gil_scoped_acquire gil;
    file_ = py::object();
  }
  size_t read(char* dst, size_t n) override {
    py::gil_scoped_acquire gil;
    py::object chunk = file_.attr("read")(n);
    if (!PyBytes_Check(chunk.ptr()))
      throw svd::Error(name() + ": file object must be opened in binary mode ('rb')");
    char* data;
    Py_ssize_t len;
    PyBytes_AsStringAndSize(chunk.ptr(), &data, &len);
    std::memcpy(dst, data, static_cast<size_t>(len));
    return static_cast<size_t>(len);
  }

 private:
  py::object file_;
};

class PyFileSink : public svd::ByteSink {
 public:
  PyFileSink(py::object file, std::string name) : svd::ByteSink(std::move(name)), file_(std::move(file)) {}
  ~PyFileSink() override {
    py::gil_scoped_acquire gil;
    file_ = py::object();
  }
  void write(const char* data, size_t n) override {
    py::gil_scoped_acquire gil;
    try {
      file_.attr("write")(py::bytes(data, n));
    } catch (py::error_already_set& e) {
      // A text-mode file refuses bytes; anything else (an interrupt, a full
      // disk) goes on as it is.
      if (e.matches(PyExc_TypeError))
        throw svd::Error(name() + ": file object must be opened in binary mode ('wb'): " + e.what());
      throw;
    }
  }
  void commit() override {
    py::gil_scoped_acquire gil;
    if (py::hasattr(file_, "flush")) file_.attr("flush")();
  }
  void abort() noexcept override {}

 private:
  py::object file_;
};

struct Reader {
  std::unique_ptr<svd::ModelReader> impl;
};

struct Writer {
  std::unique_ptr<svd::ModelWriter> impl;
};

}  // namespace

void BindIo(py::module_& m) {
  py::class_<Reader>(m, "Reader")
      .def(py::init([](const std::string& path, bool skip_data) {
             py::gil_scoped_release nogil;
             Reader r{std::make_unique<svd::ModelReader>(svd::open_source(path))};
             r.impl->set_skip_data(skip_data);
             return r;
           }),
           py::arg("path"), py::arg("skip_data") = false)
      .def(py::init([](py::object file, const std::string& name) {
             std::unique_ptr<svd::ByteSource> src = std::make_unique<PyFileSource>(file, name);
             py::gil_scoped_release nogil;
             return Reader{std::make_unique<svd::ModelReader>(svd::auto_gunzip(std::move(src)))};
           }),
           py::arg("file"), py::arg("name"))
      .def_property_readonly("binary", [](const Reader& r) { return r.impl->encoding() == svd::Encoding::Binary; })
      .def_property_readonly("dialect", [](const Reader& r) {
        return std::string(r.impl->dialect() == svd::Dialect::Kaldi ? "kaldi" : "pdnn");
      })
      .def_property_readonly("name", [](const Reader& r) { return r.impl->name(); })
      .def("next", [](Reader& r) -> py::object {
        auto c = std::make_shared<svd::Component>();
        bool got;
        {
          py::gil_scoped_release nogil;
          got = r.impl->next(c.get());
        }
        if (!got) return py::none();
        return py::cast(c);
      });

  // Outputs that Python code writes by path (JSON reports, plots, exports) go
  // through the same temporaries, symlink handling and cleanup as models.
  m.def("output_target", [](const std::string& path) {
    py::gil_scoped_release nogil;
    return svd::output_target(path);
  }, py::arg("path"), "The file an output path stands for: symbolic links followed; Error for a loop,\n"
                      "a directory or a missing folder.");
  m.def("prepare_output", [](const std::string& path) -> py::tuple {
    std::string target, tmp;
    int fd = -1;
    {
      py::gil_scoped_release nogil;
      target = svd::output_target(path);
      if (!svd::is_special_file(target)) fd = svd::create_temp_beside(target, path, &tmp);
    }
    return py::make_tuple(target, tmp.empty() ? py::object(py::none()) : py::object(py::str(tmp)), fd);
  }, py::arg("path"),
        "(target, tmp, fd): the file `path` stands for (links followed), a new empty temporary\n"
        "beside it and a descriptor of it holding its lock (keep it open while writing; pass it to\n"
        "commit_output, or close it after removing tmp); tmp None and fd -1 when the target is a\n"
        "device or FIFO to write in place.");
  m.def("commit_output", [](const std::string& tmp, const std::string& target, const std::string& name, int fd,
                            bool durable) {
    py::gil_scoped_release nogil;
    svd::commit_temp(fd, tmp, target, name, durable);
  }, py::arg("tmp"), py::arg("target"), py::arg("name"), py::arg("fd") = -1, py::arg("durable") = false,
        "Renames the finished temporary onto target, then closes fd (prepare_output's); fsync first\n"
        "(and of the folder after) with durable or SVDISTILL_FSYNC; removes tmp on failure.");
  m.def("remove_stale_temporaries", [](const std::string& folder, const std::string& start) {
    py::gil_scoped_release nogil;
    svd::remove_stale_temps(folder, start);
  }, py::arg("folder"), py::arg("start"),
        "Removes the temporaries of prepare_output's naming in folder whose names start with `start`\n"
        "and that no process holds locked (left by a killed process).");

  py::class_<Writer>(m, "Writer")
      .def(py::init([](py::object target, const std::string& name, bool binary, const std::string& dialect,
                       const std::string& digits) {
             svd::WriteOptions o;
             o.encoding = binary ? svd::Encoding::Binary : svd::Encoding::Text;
             if (dialect == "kaldi") o.dialect = svd::Dialect::Kaldi;
             else if (dialect == "pdnn") o.dialect = svd::Dialect::Pdnn;
             else throw svd::Error("dialect must be 'kaldi' or 'pdnn', got '" + dialect + "'");
             if (digits == "shortest") o.digits = svd::Digits::Shortest;
             else if (digits == "kaldi") o.digits = svd::Digits::Kaldi;
             else throw svd::Error("digits must be 'shortest' or 'kaldi', got '" + digits + "'");
             if (o.dialect == svd::Dialect::Pdnn && binary)
               throw svd::Error("the PDNN dialect is text only: it cannot be written binary");
             std::unique_ptr<svd::ByteSink> sink;
             if (py::isinstance<py::str>(target)) {
               std::string path = target.cast<std::string>();
               py::gil_scoped_release nogil;
               sink = svd::open_sink(path);
             } else {
               sink = std::make_unique<PyFileSink>(target, name);
             }
             return Writer{std::make_unique<svd::ModelWriter>(std::move(sink), o)};
           }),
           py::arg("target"), py::arg("name"), py::arg("binary"), py::arg("dialect"), py::arg("digits"))
      .def("write", [](Writer& w, const svd::Component& c) {
        py::gil_scoped_release nogil;
        w.impl->write(c);
      })
      .def("close", [](Writer& w) {
        py::gil_scoped_release nogil;
        w.impl->close();
      })
      .def("abort", [](Writer& w) { w.impl->abort(); })
      .def("notes", [](const Writer& w) { return w.impl->notes(); })
      .def_property_readonly("components_written", [](const Writer& w) { return w.impl->components_written(); });
}

}  // namespace svd_py
