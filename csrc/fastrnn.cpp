// Every op schema of the compiled extension, in one place. Importing the Python module
// `fastrnn._C` loads this library and so registers the ops as torch.ops.fastrnn_cuda.*.
// The namespace is `fastrnn_cuda`, not `fastrnn`: the `fastrnn::` ops are registered from
// Python (fastrnn/ops.py) and call these through fastrnn/backends/cuda.py.
//
// The arguments mirror the backend contract of fastrnn/backends/__init__.py, plus
// `allow_tf32` (torch.backends.cudnn.allow_tf32 for float32 calls; accepted for the day a
// tensor-core path exists, unused by the current CUDA-core kernels).
#include <Python.h>

#include <torch/library.h>

#include "recurrent.h"

TORCH_LIBRARY(fastrnn_cuda, m) {
  m.def(
      "recurrence_forward(str cell, Tensor xg, Tensor w_hh, Tensor? b_hn, Tensor h0, Tensor? c0, "
      "Tensor? w_hr, Tensor? lengths, bool reverse, bool need_workspace, bool allow_tf32) "
      "-> (Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "recurrence_backward(str cell, Tensor grad_y, Tensor grad_hn, Tensor grad_cn, Tensor w_hh, "
      "Tensor? b_hn, Tensor h0, Tensor? c0, Tensor? w_hr, Tensor? lengths, bool reverse, "
      "Tensor y, Tensor workspace, bool allow_tf32) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  // Which execution path the latest forward / backward took (see csrc/params.h, Path).
  m.def("last_path() -> str", &fastrnn::last_path);
}

TORCH_LIBRARY_IMPL(fastrnn_cuda, CUDA, m) {
  m.impl("recurrence_forward", &fastrnn::recurrence_forward);
  m.impl("recurrence_backward", &fastrnn::recurrence_backward);
}

// The same functions for CPU tensors: they check every argument exactly as for CUDA ones and
// then raise "... must be a CUDA tensor" (recurrent.cpp, require_cuda), before any CUDA call.
// So a call with CPU tensors gets the error that names the argument, and the checks are
// tested on machines without a GPU (tests/test_cuda_extension.py).
TORCH_LIBRARY_IMPL(fastrnn_cuda, CPU, m) {
  m.impl("recurrence_forward", &fastrnn::recurrence_forward);
  m.impl("recurrence_backward", &fastrnn::recurrence_backward);
}

// A Python module with no functions: importing it is what registers the ops above.
extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr,
                                          nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&module_def);
}
