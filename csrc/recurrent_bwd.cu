// The generic backward (reverse-time) loop of one layer-direction, for every cell x scalar.
//
// Backward step q undoes forward step T-1-q, i.e. time t = reverse ? q : T-1-q. Two phases:
//   phase 0 (CTA owns hidden units j): dh_t[b, j] = dh[b, j] + grad_y[t, b, j] (with an LSTM
//            projection dm[b, j] = sum_p dh_t[b, p] W_hr[p, j] instead), then the cell's
//            backward math: d_xg, d_hn_gru, dc, and the gradient w.r.t. the rows of W_hh h
//            (dg_buf) and the GRU direct term dh_t * z (direct_buf) for phase 1.
//   phase 1 (CTA owns recurrent columns k): dh_next[b, k] = direct[b, k]
//            + sum_r dg[b, r] W_hh[r, k]; with projection also d_h_proj[t, b, k] = dh_t.
// A grid barrier separates phases. dh is double-buffered in global memory (acc_t). Masking as
// in fastrnn/reference.py: where t >= lengths[b] the gradients of step t are 0 and dh, dc
// are carried unchanged.
#include "cells.cuh"
#include "params.h"
#include "persistent.cuh"

namespace fastrnn {
namespace {

// Copy this CTA's weight slices into shared memory (Resident path only).
//   slice 0 (projection only): W_hr columns of units [j0, j0+U), laid out [p][jj];
//   slice 1: W_hh columns [k0, k0+UR), laid out [r][kk] (r over all G*H rows).
template <class Cell, class T>
__device__ void load_backward_slices(const RecurrentParams& p, const Plan& plan, T* s0, T* s1) {
  using A = typename AccOf<T>::type;
  const int64_t GH = Cell::G * p.H;
  if (p.w_hr != nullptr) {
    const T* w_hr = static_cast<const T*>(p.w_hr);
    const int64_t j0 = blockIdx.x * plan.U;
    const int64_t n0 = p.P * plan.U;
    for (int64_t e = threadIdx.x; e < n0; e += blockDim.x) {
      const int64_t jj = e % plan.U;
      const int64_t pr = e / plan.U;
      s0[e] = j0 + jj < p.H ? w_hr[pr * p.H + j0 + jj] : from_acc<T>(A(0));
    }
  }
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const int64_t k0 = blockIdx.x * plan.UR;
  const int64_t n1 = GH * plan.UR;
  for (int64_t e = threadIdx.x; e < n1; e += blockDim.x) {
    const int64_t kk = e % plan.UR;
    const int64_t r = e / plan.UR;
    s1[e] = k0 + kk < p.R ? w_hh[r * p.R + k0 + kk] : from_acc<T>(A(0));
  }
  __syncthreads();
}

// Phase 0 of backward step q: the cell's backward math for this CTA's hidden units. `red`:
// the split-K scratch ([blockDim.x] acc_t), used for dm = dh_t W_hr with a projection.
template <class Cell, class T, bool kResident>
__device__ void backward_cells(const RecurrentParams& p, const Plan& plan, int64_t q,
                               const T* s0, typename AccOf<T>::type* red) {
  using A = typename AccOf<T>::type;
  constexpr int G = Cell::G;
  constexpr int W = Cell::W > 0 ? Cell::W : 1;
  const int64_t H = p.H, R = p.R, B = p.B, T_ = p.T;
  const int64_t GH = G * H;
  const int64_t t = p.reverse ? q : T_ - 1 - q;
  const int64_t t_prev = p.reverse ? t + 1 : t - 1;  // the step forward ran before t
  const int64_t j0 = blockIdx.x * plan.U;
  const int64_t own = min64(plan.U, H - j0);
  if (own <= 0) return;  // uniform across the CTA
  const CrossCta<A> dh_cur = CrossCta<A>(p.dh_state) + (q & 1) * B * R;
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const T* y = static_cast<const T*>(p.y);
  const T* ws = static_cast<const T*>(p.ws);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  T* d_xg = static_cast<T*>(p.d_xg);
  T* d_hn_gru = static_cast<T*>(p.d_hn_gru);
  const auto dg = CrossCta<A>(p.dg_buf), direct_buf = CrossCta<A>(p.direct_buf);
  const int64_t items = B * own;
  const BlockSplit split(items);

  for (int64_t base = 0; base < items; base += split.per_pass) {
    const int64_t item = base + split.slot;
    const bool active = split.slot >= 0 && item < items;
    const int64_t b = active ? item / own : 0;
    const int64_t jj = active ? item % own : 0;
    const int64_t j = j0 + jj;
    const int64_t row = t * B + b;
    const bool valid = active && is_valid(p.lengths, b, t);
    // With a projection, this thread's share of dm[b, j] = sum_p dh_t[b, p] W_hr[p, j].
    A dout = A(0);
    if (valid && w_hr != nullptr) {
      for (int64_t pr = split.part; pr < p.P; pr += split.S) {
        const A dh_t = dh_cur.load(b * R + pr) + to_acc(grad_y[row * R + pr]);
        const T w = kResident ? s0[pr * plan.U + jj] : w_hr[pr * H + j];
        dout += dh_t * to_acc(w);
      }
    }
    red[threadIdx.x] = dout;
    __syncthreads();
    if (active && split.part == 0) {
      if (!valid) {
#pragma unroll
        for (int g = 0; g < G; ++g) d_xg[row * GH + g * H + j] = from_acc<T>(A(0));
        if (d_hn_gru != nullptr) d_hn_gru[row * H + j] = from_acc<T>(A(0));
        // dc carried unchanged; dg of b is not read (phase 1 carries dh).
      } else {
        if (w_hr != nullptr) {
          reduce_parts<1>(red, split.S, &dout);
        } else {
          dout = dh_cur.load(b * R + j) + to_acc(grad_y[row * R + j]);
        }
        // State before step t: the previous step's output if it was valid, else the initial one.
        const bool prev_valid = t_prev >= 0 && t_prev < T_ && is_valid(p.lengths, b, t_prev);
        A h_prev = A(0), c_prev = A(0), h_t = A(0);
        if (Cell::kNeedsHPrev) {
          h_prev = prev_valid ? to_acc(y[(t_prev * B + b) * R + j])
                              : to_acc(static_cast<const T*>(p.h0)[b * R + j]);
        }
        if (Cell::kHasC) {
          // c_t is the last workspace slab (LSTM: i, f, g, o, c).
          c_prev = prev_valid
                       ? to_acc(ws[(t_prev * B + b) * Cell::W * H + (Cell::W - 1) * H + j])
                       : to_acc(static_cast<const T*>(p.c0)[b * H + j]);
        }
        if (Cell::kNeedsHt) h_t = to_acc(y[row * R + j]);
        A wsv[W];
#pragma unroll
        for (int w = 0; w < Cell::W; ++w) wsv[w] = to_acc(ws[row * Cell::W * H + w * H + j]);
        A* dc_state = static_cast<A*>(p.dc_state);
        A dc = Cell::kHasC ? dc_state[b * H + j] : A(0);
        A d_pre[G], d_hh[G], direct;
        Cell::backward(dout, dc, wsv, h_t, h_prev, c_prev, d_pre, d_hh, direct);
        if (Cell::kHasC) dc_state[b * H + j] = dc;  // only this thread ever touches (b, j)
#pragma unroll
        for (int g = 0; g < G; ++g) {
          d_xg[row * GH + g * H + j] = from_acc<T>(d_pre[g]);
          dg.store(b * GH + g * H + j, d_hh[g]);
        }
        if (d_hn_gru != nullptr) d_hn_gru[row * H + j] = from_acc<T>(d_hh[G - 1]);
        if (Cell::kDirect) direct_buf.store(b * H + j, direct);
      }
    }
    __syncthreads();  // `red` is reused by the next pass
  }
}

// Phase 1 of backward step q: dh before step t for this CTA's recurrent columns.
template <class Cell, class T, bool kResident>
__device__ void backward_recurrent(const RecurrentParams& p, const Plan& plan, int64_t q,
                                   const T* s1, typename AccOf<T>::type* red) {
  using A = typename AccOf<T>::type;
  const int64_t H = p.H, R = p.R, B = p.B;
  const int64_t GH = Cell::G * H;
  const int64_t t = p.reverse ? q : p.T - 1 - q;
  const int64_t k0 = blockIdx.x * plan.UR;
  const int64_t own = min64(plan.UR, R - k0);
  if (own <= 0) return;  // uniform across the CTA
  const auto dh_state = CrossCta<A>(p.dh_state);
  const CrossCta<A> dh_cur = dh_state + (q & 1) * B * R;
  const CrossCta<A> dh_next = dh_state + ((q + 1) & 1) * B * R;
  const T* grad_y = static_cast<const T*>(p.grad_y);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const auto dg = CrossCta<A>(p.dg_buf), direct_buf = CrossCta<A>(p.direct_buf);
  T* d_h_proj = static_cast<T*>(p.d_h_proj);
  const int64_t items = B * own;
  const BlockSplit split(items);
  for (int64_t base = 0; base < items; base += split.per_pass) {
    const int64_t item = base + split.slot;
    const bool active = split.slot >= 0 && item < items;
    const int64_t b = active ? item / own : 0;
    const int64_t kk = active ? item % own : 0;
    const int64_t k = k0 + kk;
    const int64_t row = t * B + b;
    const bool valid = active && is_valid(p.lengths, b, t);
    // This thread's share of sum_r dg[b, r] W_hh[r, k].
    A acc = A(0);
    if (valid) {
      const CrossCta<A> dg_row = dg + b * GH;
      for (int64_t r = split.part; r < GH; r += split.S) {
        const T w = kResident ? s1[r * plan.UR + kk] : w_hh[r * R + k];
        acc += dg_row.load(r) * to_acc(w);
      }
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    if (active && split.part == 0) {
      const A dh_old = dh_cur.load(b * R + k);
      if (d_h_proj != nullptr) {
        d_h_proj[row * R + k] = from_acc<T>(valid ? dh_old + to_acc(grad_y[row * R + k]) : A(0));
      }
      if (!valid) {
        dh_next.store(b * R + k, dh_old);
      } else {
        reduce_parts<1>(red, split.S, &acc);
        if (Cell::kDirect) acc += direct_buf.load(b * H + k);
        dh_next.store(b * R + k, acc);
      }
    }
    __syncthreads();
  }
}

// The whole backward of one CTA: steps [q_begin, q_end), phase `phase` only, or both phases
// with grid barriers in between (phase < 0, cooperative launch). `smem`: the dynamic shared
// memory (weight slices, Resident path); `red`: the split-K scratch, [blockDim.x] acc_t.
// The host emulation runs this same function on host threads.
template <class Cell, class T, bool kCoop>
__device__ __forceinline__ void backward_loop(const RecurrentParams& p, const Plan& plan,
                                              int64_t q_begin, int64_t q_end, int phase,
                                              unsigned char* smem, typename AccOf<T>::type* red) {
  T* s0 = reinterpret_cast<T*>(smem);
  T* s1 = reinterpret_cast<T*>(smem + second_slice_offset(p.P * plan.U, sizeof(T)));
  const bool resident = kCoop && plan.path == Path::Resident;
  if (resident) load_backward_slices<Cell, T>(p, plan, s0, s1);
  for (int64_t q = q_begin; q < q_end; ++q) {
    if (phase < 0 || phase == 0) {
      if (resident) {
        backward_cells<Cell, T, true>(p, plan, q, s0, red);
      } else {
        backward_cells<Cell, T, false>(p, plan, q, s0, red);
      }
    }
    grid_barrier<kCoop>();  // dg and direct of every unit are written
    if (phase < 0 || phase == 1) {
      if (resident) {
        backward_recurrent<Cell, T, true>(p, plan, q, s1, red);
      } else {
        backward_recurrent<Cell, T, false>(p, plan, q, s1, red);
      }
    }
    grid_barrier<kCoop>();  // dh of the next step is written, dg and dh_cur are no longer read
  }
}

}  // namespace

#ifndef FASTRNN_EMULATE  // csrc/emulation/host_emulation.cpp runs backward_loop on host threads
template <class Cell, class T, bool kCoop>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm)
    backward_kernel(RecurrentParams p, Plan plan, int64_t q_begin, int64_t q_end, int phase) {
  extern __shared__ __align__(16) unsigned char smem[];
  // Split-K scratch (see BlockSplit): one partial sum per thread.
  __shared__ typename AccOf<T>::type red[kThreads];
  backward_loop<Cell, T, kCoop>(p, plan, q_begin, q_end, phase, smem, red);
}

template <CellKind C, ScalarKind S>
cudaError_t recurrent_backward(const RecurrentParams& p, cudaStream_t stream, LaunchInfo* info) {
  using Cell = typename CellOf<C>::type;
  using T = typename ScalarOf<S>::type;
  auto coop = backward_kernel<Cell, T, true>;
  auto step = backward_kernel<Cell, T, false>;
  Plan plan;
  // Shared elements per owned hidden unit: its column of W_hr (P, projection only); per owned
  // recurrent column: that column of W_hh (G*H).
  FASTRNN_RETURN_IF_ERROR(
      make_plan<T>(coop, p.H, p.R, p.P, Cell::G * p.H, p.path, &plan));
  return run_plan(coop, step, p, plan, 2, stream, info);
}

#define FASTRNN_INSTANTIATE_BACKWARD(C, S)                 \
  template cudaError_t recurrent_backward<CellKind::C, ScalarKind::S>( \
      const RecurrentParams&, cudaStream_t, LaunchInfo*);
#define FASTRNN_INSTANTIATE_BACKWARD_ALL_SCALARS(C) \
  FASTRNN_INSTANTIATE_BACKWARD(C, Float32)          \
  FASTRNN_INSTANTIATE_BACKWARD(C, Float16)          \
  FASTRNN_INSTANTIATE_BACKWARD(C, BFloat16)         \
  FASTRNN_INSTANTIATE_BACKWARD(C, Float64)

FASTRNN_INSTANTIATE_BACKWARD_ALL_SCALARS(RnnTanh)
FASTRNN_INSTANTIATE_BACKWARD_ALL_SCALARS(RnnRelu)
FASTRNN_INSTANTIATE_BACKWARD_ALL_SCALARS(Lstm)
FASTRNN_INSTANTIATE_BACKWARD_ALL_SCALARS(Gru)

#endif  // FASTRNN_EMULATE

}  // namespace fastrnn
