// Host entry points of the CUDA backend (declared for fastrnn.cpp, defined in recurrent.cpp).
// Arguments and results follow the backend contract in fastrnn/backends/__init__.py.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <string>
#include <tuple>

namespace fastrnn {

// -> (y (T,B,R), h_n (B,R), c_n (B,H) or empty, workspace (T,B,W*H) or empty)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_forward(
    std::string cell, const at::Tensor& xg, const at::Tensor& w_hh,
    const std::optional<at::Tensor>& b_hn, const at::Tensor& h0,
    const std::optional<at::Tensor>& c0, const std::optional<at::Tensor>& w_hr,
    const std::optional<at::Tensor>& lengths, bool reverse, bool need_workspace,
    bool allow_tf32);

// -> (d_xg (T,B,G*H), d_hn_gru (T,B,H) or empty, d_h_proj (T,B,P) or empty, d_h0 (B,R),
//     d_c0 (B,H) or empty)
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> recurrence_backward(
    std::string cell, const at::Tensor& grad_y, const at::Tensor& grad_hn,
    const at::Tensor& grad_cn, const at::Tensor& w_hh, const std::optional<at::Tensor>& b_hn,
    const at::Tensor& h0, const std::optional<at::Tensor>& c0,
    const std::optional<at::Tensor>& w_hr, const std::optional<at::Tensor>& lengths,
    bool reverse, const at::Tensor& y, const at::Tensor& workspace, bool allow_tf32);

// "forward: resident, 132 CTAs, 98304 B shared; backward: ..." of the latest calls (debugging,
// and lets GPU tests check that a forced path was taken).
std::string last_path();

}  // namespace fastrnn
