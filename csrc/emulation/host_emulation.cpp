// Test-only: the device code of recurrent_fwd.cu / recurrent_bwd.cu compiled as plain host
// C++ and run phase by phase, CTA by CTA, each CTA's threads as real std::threads with
// __syncthreads as a std::barrier (tests/test_backend_cuda.py builds it with g++ and drives it
// through ctypes). A machine without a GPU can thus check the kernels' indexing, work split,
// split-K reduction, masking and shared-memory layouts against the reference. Running every
// CTA of a phase to completion before the next phase is what the grid barrier guarantees, and
// CTAs only communicate through global buffers between phases, so this is one of the
// schedules the GPU may run. What it cannot check: cache coherence (__ldcg), and the launch /
// occupancy code (make_plan, run_plan), which is compiled out here.
//
// Not part of the extension: setup.py compiles only csrc/*.cpp and csrc/*.cu.
#include <barrier>
#include <cmath>
#include <cstdint>
#include <thread>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

struct EmuDim {
  unsigned x = 0, y = 0, z = 0;
};
static thread_local EmuDim emu_threadIdx, emu_blockIdx, emu_blockDim;
#define threadIdx emu_threadIdx
#define blockIdx emu_blockIdx
#define blockDim emu_blockDim
inline float __ldcg(const float* p) { return *p; }
inline double __ldcg(const double* p) { return *p; }
static thread_local std::barrier<>* emu_cta_barrier = nullptr;
inline void __syncthreads() { emu_cta_barrier->arrive_and_wait(); }

#define FASTRNN_EMULATE 1
#include "../recurrent_bwd.cu"
#include "../recurrent_fwd.cu"

namespace fastrnn {
namespace {

// Pointer slots of emu_run, in order.
enum Slot {
  kWhh, kBhn, kWhr, kLengths, kXg, kY, kWs, kHState, kCState, kMBuf, kGradY, kH0, kC0, kDXg,
  kDHnGru, kDHProj, kDhState, kDcState, kDgBuf, kDirectBuf, kSlots
};

RecurrentParams params_from(const int64_t* sizes, void** ptrs) {
  RecurrentParams p{};
  p.T = sizes[0];
  p.B = sizes[1];
  p.H = sizes[2];
  p.R = sizes[3];
  p.P = sizes[4];
  p.reverse = sizes[5] != 0;
  p.w_hh = ptrs[kWhh];
  p.b_hn = ptrs[kBhn];
  p.w_hr = ptrs[kWhr];
  p.lengths = static_cast<const int64_t*>(ptrs[kLengths]);
  p.xg = ptrs[kXg];
  p.y = ptrs[kY];
  p.ws = ptrs[kWs];
  p.h_state = ptrs[kHState];
  p.c_state = ptrs[kCState];
  p.m_buf = ptrs[kMBuf];
  p.grad_y = ptrs[kGradY];
  p.h0 = ptrs[kH0];
  p.c0 = ptrs[kC0];
  p.d_xg = ptrs[kDXg];
  p.d_hn_gru = ptrs[kDHnGru];
  p.d_h_proj = ptrs[kDHProj];
  p.dh_state = ptrs[kDhState];
  p.dc_state = ptrs[kDcState];
  p.dg_buf = ptrs[kDgBuf];
  p.direct_buf = ptrs[kDirectBuf];
  return p;
}

// Run `fn(cta)` on every thread of every CTA (one phase of the grid): CTAs one after the
// other, the threads of a CTA concurrently.
template <class Fn>
void for_grid(int ctas, int threads, Fn fn) {
  for (int c = 0; c < ctas; ++c) {
    std::barrier<> bar(threads);
    std::vector<std::thread> pool;
    for (int th = 0; th < threads; ++th) {
      pool.emplace_back([&, c, th] {
        emu_blockDim.x = threads;
        emu_blockIdx.x = c;
        emu_threadIdx.x = th;
        emu_cta_barrier = &bar;
        fn(c);
      });
    }
    for (auto& worker : pool) worker.join();
  }
}

template <class Cell, class T>
void run(bool backward, RecurrentParams p, int ctas, int threads, bool resident) {
  Plan plan{};
  plan.path = resident ? Path::Resident : Path::Streamed;
  plan.ctas = ctas;
  plan.U = (p.H + ctas - 1) / ctas;
  plan.UR = (p.R + ctas - 1) / ctas;
  // Same slice sizes as make_plan's callers in recurrent_fwd.cu / recurrent_bwd.cu.
  const int64_t per_u = backward ? p.P : Cell::G * p.R;
  const int64_t per_ur = backward ? Cell::G * p.H : (p.w_hr != nullptr ? p.H : 0);
  const int64_t off = second_slice_offset(per_u * plan.U, sizeof(T));
  const int64_t bytes = off + per_ur * plan.UR * static_cast<int64_t>(sizeof(T));
  // Poison shared memory so that a read of an unloaded element shows up as NaN.
  std::vector<std::vector<double>> smem(ctas, std::vector<double>(bytes / 8 + 2, NAN));
  auto s0 = [&](int c) { return reinterpret_cast<T*>(smem[c].data()); };
  // The kernels' static split-K scratch, per CTA.
  using A = typename AccOf<T>::type;
  std::vector<std::vector<A>> scratch(ctas, std::vector<A>(static_cast<size_t>(Cell::G) * threads));
  auto red = [&](int c) { return scratch[c].data(); };
  auto s1 = [&](int c) {
    return reinterpret_cast<T*>(reinterpret_cast<unsigned char*>(smem[c].data()) + off);
  };
  if (resident) {
    for_grid(ctas, threads, [&](int c) {
      if (backward) {
        load_backward_slices<Cell, T>(p, plan, s0(c), s1(c));
      } else {
        load_forward_slices<Cell, T>(p, plan, s0(c), s1(c));
      }
    });
  }
  for (int64_t s = 0; s < p.T; ++s) {
    if (!backward) {
      for_grid(ctas, threads, [&](int c) {
        if (resident) forward_cells<Cell, T, true>(p, plan, s, s0(c), red(c));
        else forward_cells<Cell, T, false>(p, plan, s, s0(c), red(c));
      });
      if (p.w_hr != nullptr) {
        for_grid(ctas, threads, [&](int c) {
          if (resident) forward_projection<T, true>(p, plan, s, s1(c), red(c));
          else forward_projection<T, false>(p, plan, s, s1(c), red(c));
        });
      }
    } else {
      for_grid(ctas, threads, [&](int c) {
        if (resident) backward_cells<Cell, T, true>(p, plan, s, s0(c), red(c));
        else backward_cells<Cell, T, false>(p, plan, s, s0(c), red(c));
      });
      for_grid(ctas, threads, [&](int c) {
        if (resident) backward_recurrent<Cell, T, true>(p, plan, s, s1(c), red(c));
        else backward_recurrent<Cell, T, false>(p, plan, s, s1(c), red(c));
      });
    }
  }
}

template <class Cell>
int run_scalar(int scalar, bool backward, const RecurrentParams& p, int ctas, int threads,
               bool resident) {
  switch (scalar) {
    case 0: run<Cell, float>(backward, p, ctas, threads, resident); return 0;
    case 1: run<Cell, __half>(backward, p, ctas, threads, resident); return 0;
    case 2: run<Cell, __nv_bfloat16>(backward, p, ctas, threads, resident); return 0;
    case 3: run<Cell, double>(backward, p, ctas, threads, resident); return 0;
  }
  return 1;
}

}  // namespace
}  // namespace fastrnn

// sizes: T, B, H, R, P, reverse, ctas, threads, resident. cell: CellKind; scalar: ScalarKind.
// ptrs: kSlots pointers (nullptr where absent). Returns 0 on success.
extern "C" int emu_run(int backward, int cell, int scalar, const int64_t* sizes, void** ptrs) {
  using namespace fastrnn;
  const RecurrentParams p = params_from(sizes, ptrs);
  const int ctas = static_cast<int>(sizes[6]);
  const int threads = static_cast<int>(sizes[7]);
  const bool resident = sizes[8] != 0;
  switch (cell) {
    case 0: return run_scalar<RnnCell<false>>(scalar, backward, p, ctas, threads, resident);
    case 1: return run_scalar<RnnCell<true>>(scalar, backward, p, ctas, threads, resident);
    case 2: return run_scalar<LstmCell>(scalar, backward, p, ctas, threads, resident);
    case 3: return run_scalar<GruCell>(scalar, backward, p, ctas, threads, resident);
  }
  return 1;
}
