// svd::Error -> svdistill.Error, svd::FormatError -> svdistill.FormatError
// (with file, offset, line, column, component_index and marker attributes).
#include <pybind11/pybind11.h>

#include "bindings/bindings.h"
#include "nnet1/errors.h"

namespace svd_py {

void BindErrors(py::module_& m) {
  static py::handle error = PyErr_NewExceptionWithDoc(
      "svdistill.Error", "Base class of every error svdistill raises on purpose.", PyExc_Exception,
      nullptr);
  static py::handle format_error = PyErr_NewExceptionWithDoc(
      "svdistill.FormatError",
      "Malformed model input. Attributes: file, offset, line, column, component_index, marker.",
      error.ptr(), nullptr);
  m.attr("Error") = error;
  m.attr("FormatError") = format_error;
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const svd::FormatError& e) {
      py::object exc = py::reinterpret_borrow<py::object>(format_error)(e.what());
      exc.attr("file") = e.file;
      exc.attr("offset") = e.offset;
      exc.attr("line") = e.line ? py::object(py::int_(e.line)) : py::none();
      exc.attr("column") = e.column ? py::object(py::int_(e.column)) : py::none();
      exc.attr("component_index") = e.component_index ? py::object(py::int_(e.component_index)) : py::none();
      exc.attr("marker") = e.marker.empty() ? py::object(py::none()) : py::object(py::str(e.marker));
      PyErr_SetObject(format_error.ptr(), exc.ptr());
    } catch (const svd::Error& e) {
      PyErr_SetString(error.ptr(), e.what());
    }
  });
}

}  // namespace svd_py
