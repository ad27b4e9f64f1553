// Host side of the CUDA backend: argument checks (each naming the argument and what was
// expected), state buffers, RecurrentParams, and the cell x dtype dispatch to the kernels.
#include "recurrent.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <cstdlib>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>

#include "cells_host.h"
#include "params.h"
#include "static_switch.h"

namespace fastrnn {
namespace {

// What the host needs of a cell, read off its kernel type (cells.cuh) by parse_cell.
struct CellInfo {
  CellKind kind;
  int64_t gates;     // G
  int64_t ws_slabs;  // W
  bool has_c;        // LSTM
};

// The op's cell names (fastrnn.cells.CellSpec.name); each CellKind's value is CellSpec.code.
constexpr std::pair<std::string_view, CellKind> kCellNames[] = {
    {"rnn_tanh", CellKind::RnnTanh},
    {"rnn_relu", CellKind::RnnRelu},
    {"lstm", CellKind::Lstm},
    {"gru", CellKind::Gru},
};

CellInfo parse_cell(const std::string& cell) {
  for (const auto& entry : kCellNames) {
    if (cell != entry.first) continue;
    const CellKind kind = entry.second;
    return CELL_SWITCH(kind, C, [&] {
      using Cell = CellOf<C>::type;
      return CellInfo{C, Cell::G, Cell::W, Cell::kHasC};
    });
  }
  TORCH_CHECK(false, "fastrnn_cuda: cell must be one of 'gru', 'lstm', 'rnn_relu', 'rnn_tanh', got '",
              cell, "'");
}

ScalarKind parse_scalar(const at::Tensor& t, const char* name) {
  switch (t.scalar_type()) {
    case at::kFloat: return ScalarKind::Float32;
    case at::kHalf: return ScalarKind::Float16;
    case at::kBFloat16: return ScalarKind::BFloat16;
    case at::kDouble: return ScalarKind::Float64;
    default:
      TORCH_CHECK(false, "fastrnn_cuda: ", name,
                  " must be float32, float16, bfloat16 or float64, got ", t.scalar_type());
  }
}

Path requested_path() {
  const char* env = std::getenv("FASTRNN_CUDA_PATH");
  const std::string v = env != nullptr ? env : "";
  if (v.empty() || v == "auto") return Path::Auto;
  if (v == "resident") return Path::Resident;
  if (v == "streamed") return Path::Streamed;
  if (v == "stepwise") return Path::Stepwise;
  TORCH_CHECK(false, "fastrnn_cuda: environment variable FASTRNN_CUDA_PATH must be one of "
              "'auto', 'resident', 'streamed', 'stepwise', got '", v, "'");
}

const char* path_name(Path p) {
  switch (p) {
    case Path::Resident: return "resident";
    case Path::Streamed: return "streamed";
    case Path::Stepwise: return "stepwise";
    default: return "auto";
  }
}

std::mutex g_path_mutex;
std::string g_forward_path = "none", g_backward_path = "none";

// Built with std::to_string, not a std::ostream: this runs on every call, and the stream
// version segfaulted here on the first GPU visit (2026-12-04; see setup.py,
// cxx_runtime_link_args).
void record_path(bool backward, const LaunchInfo& info) {
  std::string s = std::string(path_name(info.path)) + ", " + std::to_string(info.ctas) +
                  " CTAs, " + std::to_string(info.smem) + " B shared";
  std::lock_guard<std::mutex> lock(g_path_mutex);
  (backward ? g_backward_path : g_forward_path) = std::move(s);
}

// `t` must be on `device` (xg's or grad_y's) with dtype `dtype` and shape `shape`.
void check_tensor(const at::Tensor& t, const char* name, const at::Device& device,
                  at::ScalarType dtype, at::IntArrayRef shape) {
  TORCH_CHECK(t.device() == device, "fastrnn_cuda: ", name, " must be on ", device, " like xg, got ",
              t.device());
  TORCH_CHECK(t.scalar_type() == dtype, "fastrnn_cuda: ", name, " must have dtype ", dtype,
              " like xg, got ", t.scalar_type());
  TORCH_CHECK(t.sizes() == shape, "fastrnn_cuda: ", name, " must have shape ", shape, ", got ",
              t.sizes());
}

cudaError_t dispatch(bool backward, CellKind cell, ScalarKind scalar, const RecurrentParams& p,
                     cudaStream_t st, LaunchInfo* info) {
  return CELL_SWITCH(cell, C, [&] {
    return SCALAR_SWITCH(scalar, S, [&] {
      return backward ? recurrent_backward<C, S>(p, st, info) : recurrent_forward<C, S>(p, st, info);
    });
  });
}

// Sizes and checked, contiguous copies of the arguments shared by forward and backward.
struct Common {
  CellInfo cell;
  ScalarKind scalar;
  at::Device device = at::kCPU;
  at::ScalarType dtype;
  at::ScalarType acc;  // double for float64 calls, else float
  int64_t T, B, H, R, P;
  at::Tensor w_hh, b_hn, h0, c0, w_hr, lengths;  // undefined when absent
};

// `ref` is xg (forward) or grad_y (backward): it fixes device, dtype, T and B. Nothing here
// needs a GPU: these checks run on tensors of any device (require_cuda comes after them).
Common check_common(const std::string& cell, const at::Tensor& ref, const char* ref_name,
                    const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hn,
                    const at::Tensor& h0, const std::optional<at::Tensor>& c0,
                    const std::optional<at::Tensor>& w_hr,
                    const std::optional<at::Tensor>& lengths, int64_t H) {
  Common c;
  c.cell = parse_cell(cell);
  TORCH_CHECK(ref.dim() == 3, "fastrnn_cuda: ", ref_name, " must be 3-D (T, B, *), got shape ",
              ref.sizes());
  c.scalar = parse_scalar(ref, ref_name);
  c.device = ref.device();
  c.dtype = ref.scalar_type();
  c.acc = c.dtype == at::kDouble ? at::kDouble : at::kFloat;
  c.T = ref.size(0);
  c.B = ref.size(1);
  c.H = H;
  TORCH_CHECK(H > 0, "fastrnn_cuda: the hidden size must be positive, got ", H);
  const bool proj = w_hr.has_value() && w_hr->defined();
  TORCH_CHECK(!proj || c.cell.kind == CellKind::Lstm,
              "fastrnn_cuda: w_hr (projection) is only valid for cell 'lstm', got cell '", cell, "'");
  if (proj) {
    TORCH_CHECK(w_hr->dim() == 2, "fastrnn_cuda: w_hr must be 2-D (P, H), got shape ",
                w_hr->sizes());
    c.P = w_hr->size(0);
    TORCH_CHECK(c.P > 0, "fastrnn_cuda: w_hr must have P > 0 rows, got ", c.P);
    check_tensor(*w_hr, "w_hr", c.device, c.dtype, {c.P, H});
    c.w_hr = w_hr->contiguous();
  } else {
    c.P = 0;
  }
  c.R = proj ? c.P : H;
  check_tensor(w_hh, "w_hh", c.device, c.dtype, {c.cell.gates * H, c.R});
  c.w_hh = w_hh.contiguous();
  check_tensor(h0, "h0", c.device, c.dtype, {c.B, c.R});
  c.h0 = h0.contiguous();
  const bool has_c0 = c0.has_value() && c0->defined();
  TORCH_CHECK(has_c0 == c.cell.has_c, "fastrnn_cuda: c0 must be given for cell 'lstm' and only for it",
              " (cell '", cell, "', c0 ", has_c0 ? "given" : "missing", ")");
  if (has_c0) {
    check_tensor(*c0, "c0", c.device, c.dtype, {c.B, H});
    c.c0 = c0->contiguous();
  }
  const bool has_bhn = b_hn.has_value() && b_hn->defined();
  TORCH_CHECK(!has_bhn || c.cell.kind == CellKind::Gru,
              "fastrnn_cuda: b_hn is only valid for cell 'gru', got cell '", cell, "'");
  if (has_bhn) {
    check_tensor(*b_hn, "b_hn", c.device, c.dtype, {H});
    c.b_hn = b_hn->contiguous();
  }
  if (lengths.has_value() && lengths->defined()) {
    TORCH_CHECK(lengths->scalar_type() == at::kLong, "fastrnn_cuda: lengths must be int64, got ",
                lengths->scalar_type());
    TORCH_CHECK(lengths->dim() == 1 && lengths->size(0) == c.B,
                "fastrnn_cuda: lengths must have shape [", c.B, "] (B), got ", lengths->sizes());
    c.lengths = lengths->to(c.device).contiguous();
  }
  return c;
}

// The last check before any CUDA call. Every other check runs first, on tensors of any device,
// so that the ops' CPU registration (fastrnn.cpp) diagnoses a wrong call exactly as the CUDA
// one does, and a machine without a GPU can test all of them.
void require_cuda(const at::Tensor& ref, const char* ref_name) {
  TORCH_CHECK(ref.is_cuda(), "fastrnn_cuda: ", ref_name, " must be a CUDA tensor, got device ",
              ref.device());
}

RecurrentParams base_params(const Common& c, bool reverse) {
  RecurrentParams p{};
  p.T = c.T;
  p.B = c.B;
  p.H = c.H;
  p.R = c.R;
  p.P = c.P;
  p.reverse = reverse;
  p.w_hh = c.w_hh.data_ptr();
  p.b_hn = c.b_hn.defined() ? c.b_hn.data_ptr() : nullptr;
  p.w_hr = c.w_hr.defined() ? c.w_hr.data_ptr() : nullptr;
  p.lengths = c.lengths.defined() ? c.lengths.data_ptr<int64_t>() : nullptr;
  p.path = requested_path();
  return p;
}

at::Tensor fresh(const at::Tensor& t, at::ScalarType dtype) {
  return t.to(dtype, /*non_blocking=*/false, /*copy=*/true);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_forward(
    std::string cell, const at::Tensor& xg_in, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_hn, const at::Tensor& h0,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& lengths, bool reverse, bool need_workspace,
    bool allow_tf32) {
  (void)allow_tf32;  // the kernels multiply on CUDA cores in full fp32: TF32 is never used
  const CellInfo info = parse_cell(cell);
  TORCH_CHECK(xg_in.dim() == 3 && xg_in.size(2) % info.gates == 0,
              "fastrnn_cuda: xg must be 3-D (T, B, G*H) with G = ", info.gates, " for cell '", cell,
              "', got shape ", xg_in.sizes());
  const Common c = check_common(cell, xg_in, "xg", w_hh, b_hn, h0, c0, w_hr, lengths,
                                xg_in.size(2) / info.gates);
  require_cuda(xg_in, "xg");
  c10::cuda::CUDAGuard guard(c.device);
  const at::Tensor xg = xg_in.contiguous();
  const auto opts = xg.options();
  const bool want_ws = need_workspace && c.cell.ws_slabs > 0;

  at::Tensor y = at::empty({c.T, c.B, c.R}, opts);
  at::Tensor ws = want_ws ? at::empty({c.T, c.B, c.cell.ws_slabs * c.H}, opts) : xg.new_empty({0});
  at::Tensor h_state = at::empty({2, c.B, c.R}, opts.dtype(c.acc));
  h_state[0].copy_(c.h0);
  at::Tensor c_state = c.cell.has_c ? fresh(c.c0, c.acc) : at::Tensor();
  at::Tensor m_buf = c.P > 0 ? at::empty({c.B, c.H}, opts.dtype(c.acc)) : at::Tensor();

  if (c.T > 0 && c.B > 0) {
    RecurrentParams p = base_params(c, reverse);
    p.xg = xg.data_ptr();
    p.y = y.data_ptr();
    p.ws = want_ws ? ws.data_ptr() : nullptr;
    p.h_state = h_state.data_ptr();
    p.c_state = c_state.defined() ? c_state.data_ptr() : nullptr;
    p.m_buf = m_buf.defined() ? m_buf.data_ptr() : nullptr;
    LaunchInfo launch{};
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(c.device.index()).stream();
    C10_CUDA_CHECK(dispatch(false, c.cell.kind, c.scalar, p, stream, &launch));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    record_path(false, launch);
  } else if (want_ws) {
    ws.zero_();
  }
  at::Tensor h_n = fresh(h_state[c.T % 2], c.dtype);
  at::Tensor c_n = c.cell.has_c ? fresh(c_state, c.dtype) : xg.new_empty({0});
  return {y, h_n, c_n, ws};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_backward(
    std::string cell, const at::Tensor& grad_y_in, const at::Tensor& grad_hn,
    const at::Tensor& grad_cn, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hn,
    const at::Tensor& h0, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& lengths,
    bool reverse, const at::Tensor& y_in, const at::Tensor& workspace_in, bool allow_tf32) {
  (void)allow_tf32;  // see recurrence_forward
  const CellInfo info = parse_cell(cell);
  TORCH_CHECK(w_hh.dim() == 2 && w_hh.size(0) % info.gates == 0,
              "fastrnn_cuda: w_hh must be 2-D (G*H, R) with G = ", info.gates, " for cell '", cell,
              "', got shape ", w_hh.sizes());
  const Common c = check_common(cell, grad_y_in, "grad_y", w_hh, b_hn, h0, c0, w_hr, lengths,
                                w_hh.size(0) / info.gates);
  check_tensor(grad_y_in, "grad_y", c.device, c.dtype, {c.T, c.B, c.R});
  check_tensor(grad_hn, "grad_hn", c.device, c.dtype, {c.B, c.R});
  check_tensor(y_in, "y", c.device, c.dtype, {c.T, c.B, c.R});
  if (c.cell.has_c) check_tensor(grad_cn, "grad_cn", c.device, c.dtype, {c.B, c.H});
  if (c.cell.ws_slabs > 0) {
    check_tensor(workspace_in, "workspace", c.device, c.dtype,
                 {c.T, c.B, c.cell.ws_slabs * c.H});
  }
  require_cuda(grad_y_in, "grad_y");
  c10::cuda::CUDAGuard guard(c.device);
  const at::Tensor grad_y = grad_y_in.contiguous();
  const at::Tensor y = y_in.contiguous();
  const at::Tensor workspace = c.cell.ws_slabs > 0 ? workspace_in.contiguous() : at::Tensor();
  const auto opts = grad_y.options();
  const int64_t GH = c.cell.gates * c.H;
  const bool gru = c.cell.kind == CellKind::Gru;

  at::Tensor d_xg = at::empty({c.T, c.B, GH}, opts);
  at::Tensor d_hn_gru = gru ? at::empty({c.T, c.B, c.H}, opts) : grad_y.new_empty({0});
  at::Tensor d_h_proj = c.P > 0 ? at::empty({c.T, c.B, c.P}, opts) : grad_y.new_empty({0});
  at::Tensor dh_state = at::empty({2, c.B, c.R}, opts.dtype(c.acc));
  dh_state[0].copy_(grad_hn);
  at::Tensor dc_state = c.cell.has_c ? fresh(grad_cn, c.acc) : at::Tensor();
  at::Tensor dg_buf = at::empty({c.B, GH}, opts.dtype(c.acc));
  at::Tensor direct_buf = gru ? at::empty({c.B, c.H}, opts.dtype(c.acc)) : at::Tensor();

  if (c.T > 0 && c.B > 0) {
    RecurrentParams p = base_params(c, reverse);
    p.grad_y = grad_y.data_ptr();
    p.y = y.data_ptr();
    p.ws = workspace.defined() ? workspace.data_ptr() : nullptr;
    p.h0 = c.h0.data_ptr();
    p.c0 = c.c0.defined() ? c.c0.data_ptr() : nullptr;
    p.d_xg = d_xg.data_ptr();
    p.d_hn_gru = gru ? d_hn_gru.data_ptr() : nullptr;
    p.d_h_proj = c.P > 0 ? d_h_proj.data_ptr() : nullptr;
    p.dh_state = dh_state.data_ptr();
    p.dc_state = dc_state.defined() ? dc_state.data_ptr() : nullptr;
    p.dg_buf = dg_buf.data_ptr();
    p.direct_buf = direct_buf.defined() ? direct_buf.data_ptr() : nullptr;
    LaunchInfo launch{};
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream(c.device.index()).stream();
    C10_CUDA_CHECK(dispatch(true, c.cell.kind, c.scalar, p, stream, &launch));
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    record_path(true, launch);
  }
  at::Tensor d_h0 = fresh(dh_state[c.T % 2], c.dtype);
  at::Tensor d_c0 = c.cell.has_c ? fresh(dc_state, c.dtype) : grad_y.new_empty({0});
  return {d_xg, d_hn_gru, d_h_proj, d_h0, d_c0};
}

std::string last_path() {
  std::lock_guard<std::mutex> lock(g_path_mutex);
  return "forward: " + g_forward_path + "; backward: " + g_backward_path;
}

}  // namespace fastrnn
