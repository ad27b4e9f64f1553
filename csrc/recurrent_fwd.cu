// The generic forward time loop (one layer-direction), for every cell x scalar type.
//
// Each step has one phase, or two for an LSTM with projection:
//   phase 0 (CTA owns hidden units j): gh = W_hh[rows of j] . h_prev for each batch row b,
//            the cell math, y / workspace / cell state writes; without projection it also
//            writes the next h (R == H, so unit j is column j of h).
//   phase 1 (projection only, CTA owns columns p of h): h_next[b, p] = W_hr[p] . m[b].
// A grid barrier separates phases and steps. h is double-buffered in global memory (acc_t,
// holding values rounded to scalar_t like the reference), so a step reads one buffer and
// writes the other. Masking: a sequence b is updated only where t < lengths[b]; elsewhere
// y and the workspace are 0 and its state is copied forward unchanged.
#include "cells.cuh"
#include "params.h"
#include "persistent.cuh"

namespace fastrnn {
namespace {

// Copy this CTA's weight slices into shared memory (Resident path only).
//   slice 0: W_hh rows of units [j0, j0+U), laid out [k][g][jj] so that threads handling
//            consecutive units read consecutive words;
//   slice 1: W_hr rows of columns [p0, p0+UR), laid out [k][pp] (projection only).
template <class Cell, class T>
__device__ void load_forward_slices(const RecurrentParams& p, const Plan& plan, T* s0, T* s1) {
  constexpr int G = Cell::G;
  const T* w_hh = static_cast<const T*>(p.w_hh);
  const int64_t j0 = blockIdx.x * plan.U;
  const int64_t n0 = p.R * G * plan.U;
  for (int64_t e = threadIdx.x; e < n0; e += blockDim.x) {
    const int64_t jj = e % plan.U;
    const int64_t g = (e / plan.U) % G;
    const int64_t k = e / (plan.U * G);
    const int64_t j = j0 + jj;
    s0[e] = j < p.H ? w_hh[(g * p.H + j) * p.R + k] : from_acc<T>(typename AccOf<T>::type(0));
  }
  if (p.w_hr != nullptr) {
    const T* w_hr = static_cast<const T*>(p.w_hr);
    const int64_t p0 = blockIdx.x * plan.UR;
    const int64_t n1 = p.H * plan.UR;
    for (int64_t e = threadIdx.x; e < n1; e += blockDim.x) {
      const int64_t pp = e % plan.UR;
      const int64_t k = e / plan.UR;
      s1[e] = p0 + pp < p.P ? w_hr[(p0 + pp) * p.H + k] : from_acc<T>(typename AccOf<T>::type(0));
    }
  }
  __syncthreads();
}

// Phase 0 of forward step s: cell math for this CTA's hidden units. `red`: the split-K
// scratch, [G][blockDim.x] acc_t.
template <class Cell, class T, bool kResident>
__device__ void forward_cells(const RecurrentParams& p, const Plan& plan, int64_t s, const T* s0,
                              typename AccOf<T>::type* red) {
  using A = typename AccOf<T>::type;
  constexpr int G = Cell::G;
  constexpr int W = Cell::W > 0 ? Cell::W : 1;
  const int64_t H = p.H, R = p.R, B = p.B;
  const int64_t t = p.reverse ? p.T - 1 - s : s;
  const int64_t j0 = blockIdx.x * plan.U;
  const int64_t own = min64(plan.U, H - j0);
  if (own <= 0) return;  // uniform across the CTA
  const auto h_state = CrossCta<A>(p.h_state);
  const CrossCta<A> h_cur = h_state + (s & 1) * B * R, h_next = h_state + ((s + 1) & 1) * B * R;
  const auto m = CrossCta<A>(p.m_buf);
  const T* xg = static_cast<const T*>(p.xg);
  const T* w_hh = static_cast<const T*>(p.w_hh);
  T* y = static_cast<T*>(p.y);
  T* ws = static_cast<T*>(p.ws);
  const bool proj = p.w_hr != nullptr;
  const int64_t items = B * own;
  const BlockSplit split(items);

  for (int64_t base = 0; base < items; base += split.per_pass) {
    const int64_t item = base + split.slot;
    const bool active = split.slot >= 0 && item < items;
    const int64_t b = active ? item / own : 0;
    const int64_t jj = active ? item % own : 0;
    const int64_t j = j0 + jj;
    const int64_t row = t * B + b;  // (t, b) row of the (T, B, *) tensors
    const bool valid = active && is_valid(p.lengths, b, t);
    const CrossCta<A> h_row = h_cur + b * R;
    // gh[g] = W_hh[g*H + j] . h_prev[b], this thread's share of k.
    A gh[G];
#pragma unroll
    for (int g = 0; g < G; ++g) gh[g] = A(0);
    if (valid) {
      for (int64_t k = split.part; k < R + kPlantedOverrun; k += split.S) {
        const A hk = h_row.load(k);
#pragma unroll
        for (int g = 0; g < G; ++g) {
          const T w = kResident ? s0[(k * G + g) * plan.U + jj] : w_hh[(g * H + j) * R + k];
          gh[g] += to_acc(w) * hk;
        }
      }
    }
#pragma unroll
    for (int g = 0; g < G; ++g) red[g * blockDim.x + threadIdx.x] = gh[g];
#ifndef FASTRNN_PLANT_MISSING_CTA_BARRIER
    __syncthreads();  // every part of every item is in `red`
#endif
    if (active && split.part == 0) {
      if (!valid) {
        if (ws != nullptr) {
          for (int w = 0; w < Cell::W; ++w) ws[row * Cell::W * H + w * H + j] = from_acc<T>(A(0));
        }
        if (!proj) {
          y[row * R + j] = from_acc<T>(A(0));
          h_next.store(b * R + j, h_cur.load(b * R + j));
        }
      } else {
        reduce_parts<G>(red, split.S, gh);
        A xv[G];
#pragma unroll
        for (int g = 0; g < G; ++g) xv[g] = to_acc(xg[row * G * H + g * H + j]);
        const A bhn = p.b_hn != nullptr ? to_acc(static_cast<const T*>(p.b_hn)[j]) : A(0);
        const A h_prev = Cell::kNeedsHPrev ? h_row.load(j) : A(0);
        A* c_state = static_cast<A*>(p.c_state);
        A c = Cell::kHasC ? c_state[b * H + j] : A(0);
        A out;
        A wsv[W];
        Cell::forward(xv, gh, bhn, h_prev, c, out, wsv);
        if (Cell::kHasC) c_state[b * H + j] = c;  // only this thread ever touches (b, j)
        if (ws != nullptr) {
#pragma unroll
          for (int w = 0; w < Cell::W; ++w) {
            ws[row * Cell::W * H + w * H + j] = from_acc<T>(wsv[w]);
          }
        }
        const T out_t = from_acc<T>(out);
        if (proj) {
          m.store(b * H + j, to_acc(out_t));
        } else {
          y[row * R + j] = out_t;
          h_next.store(b * R + j, to_acc(out_t));
        }
      }
    }
    __syncthreads();  // `red` is reused by the next pass
  }
}

// Phase 1 of forward step s (LSTM projection): h_next[b, p] = W_hr[p] . m[b].
template <class T, bool kResident>
__device__ void forward_projection(const RecurrentParams& p, const Plan& plan, int64_t s,
                                   const T* s1, typename AccOf<T>::type* red) {
  using A = typename AccOf<T>::type;
  const int64_t H = p.H, R = p.R, B = p.B;
  const int64_t t = p.reverse ? p.T - 1 - s : s;
  const int64_t p0 = blockIdx.x * plan.UR;
  const int64_t own = min64(plan.UR, R - p0);
  if (own <= 0) return;  // uniform across the CTA
  const auto h_state = CrossCta<A>(p.h_state);
  const CrossCta<A> h_cur = h_state + (s & 1) * B * R, h_next = h_state + ((s + 1) & 1) * B * R;
  const auto m = CrossCta<A>(p.m_buf);
  const T* w_hr = static_cast<const T*>(p.w_hr);
  T* y = static_cast<T*>(p.y);
  const int64_t items = B * own;
  const BlockSplit split(items);
  for (int64_t base = 0; base < items; base += split.per_pass) {
    const int64_t item = base + split.slot;
    const bool active = split.slot >= 0 && item < items;
    const int64_t b = active ? item / own : 0;
    const int64_t pp = active ? item % own : 0;
    const int64_t col = p0 + pp;
    const int64_t row = t * B + b;
    const bool valid = active && is_valid(p.lengths, b, t);
    A acc = A(0);
    if (valid) {
      for (int64_t k = split.part; k < H; k += split.S) {
        const T w = kResident ? s1[k * plan.UR + pp] : w_hr[col * H + k];
        acc += to_acc(w) * m.load(b * H + k);
      }
    }
    red[threadIdx.x] = acc;
    __syncthreads();
    if (active && split.part == 0) {
      if (!valid) {
        y[row * R + col] = from_acc<T>(A(0));
        h_next.store(b * R + col, h_cur.load(b * R + col));
      } else {
        reduce_parts<1>(red, split.S, &acc);
        const T out_t = from_acc<T>(acc);
        y[row * R + col] = out_t;
        h_next.store(b * R + col, to_acc(out_t));
      }
    }
    __syncthreads();
  }
}

// The whole forward of one CTA: steps [s_begin, s_end), phase `phase` only, or every phase
// with grid barriers in between (phase < 0, cooperative launch). `smem`: the dynamic shared
// memory (weight slices, Resident path); `red`: the split-K scratch, [G][blockDim.x] acc_t.
// The host emulation runs this same function on host threads.
template <class Cell, class T, bool kCoop>
__device__ __forceinline__ void forward_loop(const RecurrentParams& p, const Plan& plan,
                                             int64_t s_begin, int64_t s_end, int phase,
                                             unsigned char* smem, typename AccOf<T>::type* red) {
  T* s0 = reinterpret_cast<T*>(smem);
  T* s1 = reinterpret_cast<T*>(smem + second_slice_offset(Cell::G * p.R * plan.U, sizeof(T)));
  const bool resident = kCoop && plan.path == Path::Resident;
  if (resident) load_forward_slices<Cell, T>(p, plan, s0, s1);
  const bool proj = p.w_hr != nullptr;
  for (int64_t s = s_begin; s < s_end; ++s) {
    if (phase < 0 || phase == 0) {
      if (resident) {
        forward_cells<Cell, T, true>(p, plan, s, s0, red);
      } else {
        forward_cells<Cell, T, false>(p, plan, s, s0, red);
      }
    }
    if (proj) {
      grid_barrier<kCoop>();  // m of every unit is written
      if (phase < 0 || phase == 1) {
        if (resident) {
          forward_projection<T, true>(p, plan, s, s1, red);
        } else {
          forward_projection<T, false>(p, plan, s, s1, red);
        }
      }
    }
#ifndef FASTRNN_PLANT_MISSING_GRID_BARRIER
    grid_barrier<kCoop>();  // h of the next step is written, m and h_cur are no longer read
#endif
  }
}

}  // namespace

#ifndef FASTRNN_EMULATE  // csrc/emulation/host_emulation.cpp runs forward_loop on host threads
template <class Cell, class T, bool kCoop>
__global__ void __launch_bounds__(kThreads, kMinCtasPerSm)
    forward_kernel(RecurrentParams p, Plan plan, int64_t s_begin, int64_t s_end, int phase) {
  extern __shared__ __align__(16) unsigned char smem[];
  // Split-K scratch (see BlockSplit): G partial sums per thread.
  __shared__ typename AccOf<T>::type red[Cell::G * kThreads];
  forward_loop<Cell, T, kCoop>(p, plan, s_begin, s_end, phase, smem, red);
}

template <CellKind C, ScalarKind S>
cudaError_t recurrent_forward(const RecurrentParams& p, cudaStream_t stream, LaunchInfo* info) {
  using Cell = typename CellOf<C>::type;
  using T = typename ScalarOf<S>::type;
  auto coop = forward_kernel<Cell, T, true>;
  auto step = forward_kernel<Cell, T, false>;
  Plan plan;
  // Shared elements per owned hidden unit: its G rows of W_hh (R each); per owned column of
  // h with projection: one row of W_hr (H).
  FASTRNN_RETURN_IF_ERROR(make_plan<T>(coop, p.H, p.R, Cell::G * p.R,
                                       p.w_hr != nullptr ? p.H : 0, p.path, &plan));
  const int phases = p.w_hr != nullptr ? 2 : 1;
  return run_plan(coop, step, p, plan, phases, stream, info);
}

#define FASTRNN_INSTANTIATE_FORWARD(C, S)                                                     \
  template cudaError_t recurrent_forward<CellKind::C, ScalarKind::S>(const RecurrentParams&, \
                                                                      cudaStream_t, LaunchInfo*);
#define FASTRNN_INSTANTIATE_FORWARD_ALL_SCALARS(C) \
  FASTRNN_INSTANTIATE_FORWARD(C, Float32)          \
  FASTRNN_INSTANTIATE_FORWARD(C, Float16)          \
  FASTRNN_INSTANTIATE_FORWARD(C, BFloat16)         \
  FASTRNN_INSTANTIATE_FORWARD(C, Float64)

FASTRNN_INSTANTIATE_FORWARD_ALL_SCALARS(RnnTanh)
FASTRNN_INSTANTIATE_FORWARD_ALL_SCALARS(RnnRelu)
FASTRNN_INSTANTIATE_FORWARD_ALL_SCALARS(Lstm)
FASTRNN_INSTANTIATE_FORWARD_ALL_SCALARS(Gru)

#endif  // FASTRNN_EMULATE

}  // namespace fastrnn
