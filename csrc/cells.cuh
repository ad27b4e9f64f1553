// Per-cell device math, forward and backward, for one (batch row, hidden unit) pair.
// The formulas are those of fastrnn/reference.py (cell_step / backward), term by term, in
// acc_t (float, or double for float64 calls). The generic time loops call these through the
// Cell template parameter; nothing else in the kernels knows which cell runs.
#pragma once

#include <cuda_runtime.h>

#include "params.h"

namespace fastrnn {

__device__ __forceinline__ float dev_exp(float x) { return expf(x); }
__device__ __forceinline__ double dev_exp(double x) { return exp(x); }
__device__ __forceinline__ float dev_tanh(float x) { return tanhf(x); }
__device__ __forceinline__ double dev_tanh(double x) { return tanh(x); }

template <class A>
__device__ __forceinline__ A dev_sigmoid(A x) {
  return A(1) / (A(1) + dev_exp(-x));
}

// Common interface of every cell (G gates, W workspace slabs, see fastrnn/cells.py):
//   forward(xg[G], gh[G], bhn, h_prev, c, out, ws[W]):
//     xg: x_t W_ih^T + biases for this unit's G gate rows; gh: the matching rows of W_hh h;
//     bhn: b_hn[j] (GRU, 0 without bias); h_prev: h_{t-1}[j] (GRU only, R == H);
//     c: in/out cell state (LSTM); out: the new h[j] (LSTM: o*tanh(c) before projection);
//     ws: the workspace slabs of this unit.
//   backward(dh, dc, ws[W], h_t, h_prev, c_prev, d_pre[G], d_hh[G], direct):
//     dh: total gradient w.r.t. out (LSTM with projection: dm = dh_t W_hr); dc: in/out;
//     h_t: y_t[j] (RNN); h_prev / c_prev: state before the step (GRU / LSTM);
//     d_pre: gradient w.r.t. the gate pre-activations (= d_xg); d_hh: gradient w.r.t. the
//     rows of W_hh h (GRU n row: d_hn = dn_pre * r, else = d_pre); direct: the part of
//     dh_{t-1}[j] that does not go through W_hh (GRU: dh * z, else 0).
template <bool kRelu>
struct RnnCell {
  static constexpr int G = 1;
  static constexpr int W = 0;
  static constexpr bool kHasC = false;
  static constexpr bool kNeedsHPrev = false;
  static constexpr bool kNeedsHt = true;
  static constexpr bool kDirect = false;

  template <class A>
  __device__ __forceinline__ static void forward(const A* xg, const A* gh, A /*bhn*/, A /*h_prev*/,
                                                 A& /*c*/, A& out, A* /*ws*/) {
    const A pre = xg[0] + gh[0];
    if (kRelu) {
      out = pre < A(0) ? A(0) : pre;  // keeps NaN like torch.relu
    } else {
      out = dev_tanh(pre);
    }
  }

  template <class A>
  __device__ __forceinline__ static void backward(A dh, A& /*dc*/, const A* /*ws*/, A h_t,
                                                  A /*h_prev*/, A /*c_prev*/, A* d_pre, A* d_hh,
                                                  A& direct) {
    const A act_grad = kRelu ? (h_t > A(0) ? A(1) : A(0)) : A(1) - h_t * h_t;
    d_pre[0] = dh * act_grad;
    d_hh[0] = d_pre[0];
    direct = A(0);
  }
};

struct LstmCell {
  static constexpr int G = 4;  // rows i, f, g, o
  static constexpr int W = 5;  // slabs i, f, g, o, c_t
  static constexpr bool kHasC = true;
  static constexpr bool kNeedsHPrev = false;
  static constexpr bool kNeedsHt = false;
  static constexpr bool kDirect = false;

  template <class A>
  __device__ __forceinline__ static void forward(const A* xg, const A* gh, A /*bhn*/, A /*h_prev*/,
                                                 A& c, A& out, A* ws) {
    const A i = dev_sigmoid(xg[0] + gh[0]);
    const A f = dev_sigmoid(xg[1] + gh[1]);
    const A g = dev_tanh(xg[2] + gh[2]);
    const A o = dev_sigmoid(xg[3] + gh[3]);
    c = f * c + i * g;
    out = o * dev_tanh(c);
    ws[0] = i;
    ws[1] = f;
    ws[2] = g;
    ws[3] = o;
    ws[4] = c;
  }

  template <class A>
  __device__ __forceinline__ static void backward(A dm, A& dc, const A* ws, A /*h_t*/,
                                                  A /*h_prev*/, A c_prev, A* d_pre, A* d_hh,
                                                  A& direct) {
    const A i = ws[0], f = ws[1], g = ws[2], o = ws[3], c_t = ws[4];
    const A tc = dev_tanh(c_t);
    const A dct = dc + dm * o * (A(1) - tc * tc);
    d_pre[0] = dct * g * i * (A(1) - i);
    d_pre[1] = dct * c_prev * f * (A(1) - f);
    d_pre[2] = dct * i * (A(1) - g * g);
    d_pre[3] = dm * tc * o * (A(1) - o);
#pragma unroll
    for (int k = 0; k < G; ++k) d_hh[k] = d_pre[k];
    dc = dct * f;
    direct = A(0);
  }
};

struct GruCell {
  static constexpr int G = 3;  // rows r, z, n
  static constexpr int W = 4;  // slabs r, z, n, hn = W_hn h + b_hn
  static constexpr bool kHasC = false;
  static constexpr bool kNeedsHPrev = true;
  static constexpr bool kNeedsHt = false;
  static constexpr bool kDirect = true;

  template <class A>
  __device__ __forceinline__ static void forward(const A* xg, const A* gh, A bhn, A h_prev,
                                                 A& /*c*/, A& out, A* ws) {
    const A hn = gh[2] + bhn;
    const A r = dev_sigmoid(xg[0] + gh[0]);
    const A z = dev_sigmoid(xg[1] + gh[1]);
    const A n = dev_tanh(xg[2] + r * hn);
    out = (A(1) - z) * n + z * h_prev;
    ws[0] = r;
    ws[1] = z;
    ws[2] = n;
    ws[3] = hn;
  }

  template <class A>
  __device__ __forceinline__ static void backward(A dh, A& /*dc*/, const A* ws, A /*h_t*/,
                                                  A h_prev, A /*c_prev*/, A* d_pre, A* d_hh,
                                                  A& direct) {
    const A r = ws[0], z = ws[1], n = ws[2], hn = ws[3];
    const A dn_pre = dh * (A(1) - z) * (A(1) - n * n);
    const A dz_pre = dh * (h_prev - n) * z * (A(1) - z);
    const A dr_pre = dn_pre * hn * r * (A(1) - r);
    d_pre[0] = dr_pre;
    d_pre[1] = dz_pre;
    d_pre[2] = dn_pre;
    d_hh[0] = dr_pre;
    d_hh[1] = dz_pre;
    d_hh[2] = dn_pre * r;
    direct = dh * z;
  }
};

template <CellKind C>
struct CellOf;
template <>
struct CellOf<CellKind::RnnTanh> { using type = RnnCell<false>; };
template <>
struct CellOf<CellKind::RnnRelu> { using type = RnnCell<true>; };
template <>
struct CellOf<CellKind::Lstm> { using type = LstmCell; };
template <>
struct CellOf<CellKind::Gru> { using type = GruCell; };

}  // namespace fastrnn
