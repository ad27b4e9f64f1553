// Shared machinery of the persistent time loops (forward and backward): scalar conversions,
// cross-CTA loads, the grid barrier, and the host-side launch plan. No torch here.
//
// Work split: the grid has `ctas` CTAs; CTA c owns hidden units [c*U, c*U + U) (U = ceil(H /
// ctas)) for the per-unit cell math, and recurrent columns [c*UR, c*UR + UR) (UR = ceil(R /
// ctas)) for the phase that produces the next h (projection) or dh (backward). The weight rows
// or columns a CTA needs for its units are its "slices"; on the Resident path they sit in
// shared memory for the whole sequence, on the other paths they are read from global memory.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#ifndef FASTRNN_EMULATE  // csrc/emulation/host_emulation.cpp: the device code compiled as host C++
#include <cooperative_groups.h>
#endif

#include <cstdint>

#include "params.h"

namespace fastrnn {

// Threads per CTA: one CTA per SM, so 16 warps to hide L2 latency; at most 128 registers each.
constexpr int kThreads = 512;
// The kernels' __launch_bounds__ minimum: one CTA per SM. Stated, not left to the default:
// with `__launch_bounds__(512)` alone, CUDA 13's ptxas capped the kernels at 64 registers and
// spilled (the LSTM forward kernels, .ci/compile_cuda.sh's check); with 1 it may use 128.
constexpr int kMinCtasPerSm = 1;

// ---- scalar types ------------------------------------------------------------------------
template <ScalarKind S>
struct ScalarOf;
template <>
struct ScalarOf<ScalarKind::Float32> { using type = float; };
template <>
struct ScalarOf<ScalarKind::Float16> { using type = __half; };
template <>
struct ScalarOf<ScalarKind::BFloat16> { using type = __nv_bfloat16; };
template <>
struct ScalarOf<ScalarKind::Float64> { using type = double; };

template <class T>
struct AccOf { using type = float; };
template <>
struct AccOf<double> { using type = double; };

__device__ __forceinline__ float to_acc(float x) { return x; }
__device__ __forceinline__ double to_acc(double x) { return x; }
__device__ __forceinline__ float to_acc(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(__nv_bfloat16 x) { return __bfloat162float(x); }

template <class T>
__device__ __forceinline__ T from_acc(typename AccOf<T>::type x);
template <>
__device__ __forceinline__ float from_acc<float>(float x) { return x; }
template <>
__device__ __forceinline__ double from_acc<double>(double x) { return x; }
template <>
__device__ __forceinline__ __half from_acc<__half>(float x) { return __float2half_rn(x); }
template <>
__device__ __forceinline__ __nv_bfloat16 from_acc<__nv_bfloat16>(float x) {
  return __float2bfloat16_rn(x);
}

// x rounded to scalar_t and widened back: what the reference carries from step to step.
template <class T, class A>
__device__ __forceinline__ A round_to(A x) {
  return to_acc(from_acc<T>(x));
}

// Planted faults (.ci/sanitize_emulation.sh builds each): each one must make a sanitizer of
// the host emulation report. Never part of a real build.
#if defined(FASTRNN_PLANT_MISSING_GRID_BARRIER) || defined(FASTRNN_PLANT_MISSING_CTA_BARRIER) || \
    defined(FASTRNN_PLANT_OVERRUN) || defined(FASTRNN_PLANT_PLAIN_LOAD)
#ifndef FASTRNN_EMULATE
#error "FASTRNN_PLANT_* faults are for the host emulation (csrc/emulation) only"
#endif
#endif
#ifdef FASTRNN_PLANT_OVERRUN
constexpr int64_t kPlantedOverrun = 1;  // the forward gate dot product reads k = R too
#else
constexpr int64_t kPlantedOverrun = 0;
#endif

// A global buffer that other CTAs of the same launch write: the params.h fields marked
// [cross-CTA] (h, m, dh, dg, direct), exchanged between grid barriers. The type has no raw
// pointer and no other read than __ldcg: L1 is not coherent across SMs, so a plain load could
// return a line cached before another CTA's write, while L2 is consistent once the grid
// barrier has passed. Stores are __stcg (cached in L2 only: what the readers read).
// tests/test_emulation_coherence.py checks that those fields are used only through this type;
// the emulation's coherence build (.ci/sanitize_emulation.sh) that no other access crosses CTAs.
template <class A>
class CrossCta {
 public:
  __device__ explicit CrossCta(void* base) : p_(static_cast<A*>(base)) {}
  __device__ CrossCta operator+(int64_t offset) const { return CrossCta(p_ + offset); }
#ifndef FASTRNN_PLANT_PLAIN_LOAD
  __device__ A load(int64_t i) const { return __ldcg(p_ + i); }
#else  // planted fault: a cross-CTA read through L1
  __device__ A load(int64_t i) const { return p_[i]; }
#endif
  __device__ void store(int64_t i, A v) const { __stcg(p_ + i, v); }

 private:
  __device__ explicit CrossCta(A* p) : p_(p) {}
  A* p_;
};

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

__device__ __forceinline__ bool is_valid(const int64_t* lengths, int64_t b, int64_t t) {
  return lengths == nullptr || t < lengths[b];
}

// Split-K inside a CTA: the CTA computes `items` dot products per phase, S consecutive threads
// per item (S a power of two <= 32, as large as the CTA allows), thread `part` summing
// k = part, part + S, ... (coalesced loads across the S threads). Partial sums go through the
// shared scratch `red` ([NG][blockDim.x] acc_t) and the part-0 thread of each item adds them
// in a fixed order and runs the epilogue. Passes over the items are uniform across the CTA,
// so every thread reaches every __syncthreads.
struct BlockSplit {
  int S;             // threads per item
  int64_t per_pass;  // items per pass
  int part;          // this thread's residue class of k
  int64_t slot;      // this thread's item within a pass, or -1 when idle
  __device__ explicit BlockSplit(int64_t items) {
    S = 1;
    while (S < 32 && items * (2 * S) <= static_cast<int64_t>(blockDim.x)) S *= 2;
    per_pass = blockDim.x / S;
    part = threadIdx.x % S;
    slot = threadIdx.x < per_pass * S ? static_cast<int64_t>(threadIdx.x / S) : -1;
  }
};

// Sum of the S partial sums of this thread's item, gate by gate.
template <int NG, class A>
__device__ __forceinline__ void reduce_parts(const A* red, int S, A* out) {
#pragma unroll
  for (int g = 0; g < NG; ++g) {
    A sum = A(0);
    for (int q = 0; q < S; ++q) sum += red[g * blockDim.x + threadIdx.x + q];
    out[g] = sum;
  }
}

// The launch plan (make_plan below): path, grid size, and the work split of the file comment.
struct Plan {
  Path path;
  int ctas;
  int64_t U;     // hidden units per CTA
  int64_t UR;    // recurrent columns per CTA
  int64_t smem;  // dynamic shared memory bytes (0 unless Resident)
};

#ifndef FASTRNN_EMULATE
// Barrier between phases. Cooperative launch: a grid barrier (it fences global memory).
// Stepwise launches run one phase per kernel, so the kernel boundary is the barrier.
template <bool kCoop>
__device__ __forceinline__ void grid_barrier() {
  if constexpr (kCoop) cooperative_groups::this_grid().sync();
}
#endif

// Byte offset of the second shared-memory slice (16-byte aligned).
__host__ __device__ inline int64_t second_slice_offset(int64_t first_elems, int64_t elem_size) {
  return (first_elems * elem_size + 15) / 16 * 16;
}

#ifndef FASTRNN_EMULATE
// ---- host: the launch plan ---------------------------------------------------------------
#define FASTRNN_RETURN_IF_ERROR(expr)     \
  do {                                    \
    cudaError_t err_ = (expr);            \
    if (err_ != cudaSuccess) return err_; \
  } while (0)

// Choose the path. `elems_per_u` / `elems_per_ur`: shared-memory elements a CTA needs per owned
// hidden unit / recurrent column (its weight slices). One CTA per SM: the most shared memory
// each CTA can hold, and a grid that is always co-resident unless registers forbid it.
template <class T, class Kernel>
cudaError_t make_plan(Kernel coop_kernel, int64_t H, int64_t R, int64_t elems_per_u,
                      int64_t elems_per_ur, Path request, Plan* plan) {
  int dev = 0, sms = 0, smem_optin = 0, coop = 0;
  FASTRNN_RETURN_IF_ERROR(cudaGetDevice(&dev));
  FASTRNN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  FASTRNN_RETURN_IF_ERROR(
      cudaDeviceGetAttribute(&smem_optin, cudaDevAttrMaxSharedMemoryPerBlockOptin, dev));
  FASTRNN_RETURN_IF_ERROR(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));

  const int64_t ctas = std::max<int64_t>(1, std::min<int64_t>(sms, std::max(H, R)));
  plan->ctas = static_cast<int>(ctas);
  plan->U = (H + ctas - 1) / ctas;
  plan->UR = (R + ctas - 1) / ctas;
  plan->smem = 0;

  if (coop && request != Path::Streamed && request != Path::Stepwise) {
    const int64_t bytes =
        second_slice_offset(elems_per_u * plan->U, sizeof(T)) + elems_per_ur * plan->UR * sizeof(T);
    cudaFuncAttributes attr{};
    FASTRNN_RETURN_IF_ERROR(cudaFuncGetAttributes(&attr, coop_kernel));
    // The opt-in limit covers static (the split-K scratch) plus dynamic shared memory.
    if (bytes + static_cast<int64_t>(attr.sharedSizeBytes) <= smem_optin) {
      FASTRNN_RETURN_IF_ERROR(cudaFuncSetAttribute(
          coop_kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(bytes)));
      int per_sm = 0;
      FASTRNN_RETURN_IF_ERROR(cudaOccupancyMaxActiveBlocksPerMultiprocessor(
          &per_sm, coop_kernel, kThreads, static_cast<size_t>(bytes)));
      if (static_cast<int64_t>(per_sm) * sms >= ctas) {
        plan->path = Path::Resident;
        plan->smem = bytes;
        return cudaSuccess;
      }
    }
  }
  if (coop && request != Path::Stepwise) {
    int per_sm = 0;
    FASTRNN_RETURN_IF_ERROR(
        cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, coop_kernel, kThreads, 0));
    if (static_cast<int64_t>(per_sm) * sms >= ctas) {
      plan->path = Path::Streamed;
      return cudaSuccess;
    }
  }
  plan->path = Path::Stepwise;
  return cudaSuccess;
}

// Run a time loop of T steps with `phases` phases per step: one cooperative launch of
// `coop_kernel` (all steps), or T * phases launches of `step_kernel` (one phase each).
// Kernel signature: (RecurrentParams, Plan, int64_t step_begin, int64_t step_end, int phase)
// where phase < 0 means "every phase, with grid barriers in between".
template <class CoopKernel, class StepKernel>
cudaError_t run_plan(CoopKernel coop_kernel, StepKernel step_kernel, const RecurrentParams& p,
                     const Plan& plan, int phases, cudaStream_t stream, LaunchInfo* info) {
  if (info != nullptr) {
    info->path = plan.path;
    info->ctas = plan.ctas;
    info->smem = plan.smem;
  }
  if (plan.path != Path::Stepwise) {
    RecurrentParams params = p;
    Plan pl = plan;
    int64_t begin = 0, end = p.T;
    int all_phases = -1;
    void* args[] = {&params, &pl, &begin, &end, &all_phases};
    const cudaError_t err = cudaLaunchCooperativeKernel(
        reinterpret_cast<const void*>(coop_kernel), dim3(plan.ctas), dim3(kThreads), args,
        static_cast<size_t>(plan.smem), stream);
    // The occupancy check passed, but the runtime may still refuse the grid (e.g. under MPS
    // with an SM limit): nothing ran, so clear the error and take the stepwise path.
    if (err != cudaErrorCooperativeLaunchTooLarge) return err;
    (void)cudaGetLastError();
    if (info != nullptr) {
      info->path = Path::Stepwise;
      info->smem = 0;
    }
  }
  for (int64_t s = 0; s < p.T; ++s) {
    for (int phase = 0; phase < phases; ++phase) {
      step_kernel<<<plan.ctas, kThreads, 0, stream>>>(p, plan, s, s + 1, phase);
      FASTRNN_RETURN_IF_ERROR(cudaGetLastError());
    }
  }
  return cudaSuccess;
}

#endif  // FASTRNN_EMULATE

}  // namespace fastrnn
