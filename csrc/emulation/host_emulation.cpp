// Test-only: the device code of recurrent_fwd.cu / recurrent_bwd.cu compiled as plain host
// C++ (device_shim.h supplies threadIdx, __syncthreads, the grid barrier) and launched the way
// run_plan launches it: every CTA of a launch at once, each CUDA thread a std::thread. The
// cooperative paths run forward_loop / backward_loop once for all steps with the kernel's own
// grid barriers; the stepwise path runs one launch per step and phase, joined in between.
// So a machine without a GPU can check the kernels' indexing, work split, split-K reduction,
// masking and shared-memory layouts against the reference (tests/test_backend_cuda.py, via
// ctypes), and, under ThreadSanitizer and AddressSanitizer (.ci/sanitize_emulation.sh), that
// no two CTAs or threads race between barriers and that no access leaves its buffer: shared
// memory, the split-K scratch and the global buffers are allocated at their exact sizes.
// What it cannot check: cache coherence (tests/test_emulation_coherence.py audits the
// __ldcg path statically) and the launch / occupancy code (make_plan), compiled out here.
//
// Not part of the extension: setup.py compiles only csrc/*.cpp and csrc/*.cu.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <type_traits>
#include <vector>

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "device_shim.h"
#include "emulation.h"

#define FASTRNN_EMULATE 1
#include "../recurrent_bwd.cu"
#include "../recurrent_fwd.cu"

namespace fastrnn {
namespace {

RecurrentParams params_from(const int64_t* sizes, void** ptrs) {
  RecurrentParams p{};
  p.T = sizes[kT];
  p.B = sizes[kB];
  p.H = sizes[kH];
  p.R = sizes[kR];
  p.P = sizes[kP];
  p.reverse = sizes[kReverse] != 0;
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
  p.path = static_cast<Path>(sizes[kPath]);
  return p;
}

// One kernel launch of `ctas` CTAs x `threads` threads, all running at once: `body(cta)` on
// every thread. The CTA barriers and the grid barrier are created per launch, like the
// hardware's.
template <class Body>
void launch(int ctas, int threads, Body body) {
  fastrnn_emu::GridBarrier grid(ctas * threads);
  std::vector<std::unique_ptr<fastrnn_emu::Barrier>> cta(ctas);
  for (auto& bar : cta) bar = std::make_unique<fastrnn_emu::Barrier>(threads);
  std::vector<std::thread> pool;
  pool.reserve(static_cast<size_t>(ctas) * threads);
  for (int c = 0; c < ctas; ++c) {
    for (int th = 0; th < threads; ++th) {
      pool.emplace_back([&, c, th] {
        fastrnn_emu::block_dim.x = static_cast<unsigned>(threads);
        fastrnn_emu::block_idx.x = static_cast<unsigned>(c);
        fastrnn_emu::thread_idx.x = static_cast<unsigned>(th);
        fastrnn_emu::cta_sync = cta[c].get();
        fastrnn_emu::grid_sync = &grid;
        body(c);
      });
    }
  }
  for (auto& worker : pool) worker.join();
}

// The shared memory of one launch, per CTA, at exactly the size the kernel is given (so an
// AddressSanitizer build sees one element too far), poisoned with all-ones bytes: NaN in
// every scalar type, so a read of an element that was never loaded shows up in the outputs.
template <class A>
struct CtaMemory {
  std::vector<std::unique_ptr<unsigned char[]>> smem;  // dynamic: the weight slices
  std::vector<std::unique_ptr<A[]>> red;               // static: the split-K scratch
  CtaMemory(int ctas, int64_t smem_bytes, int64_t red_elems) {
    for (int c = 0; c < ctas; ++c) {
      smem.emplace_back(new unsigned char[smem_bytes]);
      std::memset(smem.back().get(), 0xff, static_cast<size_t>(smem_bytes));
      red.emplace_back(new A[red_elems]);
      std::memset(static_cast<void*>(red.back().get()), 0xff, sizeof(A) * red_elems);
    }
  }
};

// run_plan of recurrent_fwd.cu / recurrent_bwd.cu for a given plan, on host threads.
template <class Cell, class T>
void run(bool backward, const RecurrentParams& p, int ctas, int threads) {
  using A = typename AccOf<T>::type;
  Plan plan{};
  plan.path = p.path;
  plan.ctas = ctas;
  plan.U = (p.H + ctas - 1) / ctas;
  plan.UR = (p.R + ctas - 1) / ctas;
  // The slice sizes recurrent_forward / recurrent_backward pass to make_plan.
  const int64_t per_u = backward ? p.P : Cell::G * p.R;
  const int64_t per_ur = backward ? Cell::G * p.H : (p.w_hr != nullptr ? p.H : 0);
  plan.smem = p.path == Path::Resident
                  ? second_slice_offset(per_u * plan.U, sizeof(T)) +
                        per_ur * plan.UR * static_cast<int64_t>(sizeof(T))
                  : 0;
  // The kernels' static scratch: [G][blockDim.x] forward, [blockDim.x] backward.
  const int64_t red_elems = (backward ? 1 : Cell::G) * static_cast<int64_t>(threads);
  const int phases = backward || p.w_hr != nullptr ? 2 : 1;

  auto one_launch = [&](auto coop, int64_t begin, int64_t end, int phase) {
    constexpr bool kCoop = decltype(coop)::value;
    CtaMemory<A> mem(ctas, plan.smem, red_elems);
    launch(ctas, threads, [&](int c) {
      if (backward) {
        backward_loop<Cell, T, kCoop>(p, plan, begin, end, phase, mem.smem[c].get(),
                                      mem.red[c].get());
      } else {
        forward_loop<Cell, T, kCoop>(p, plan, begin, end, phase, mem.smem[c].get(),
                                     mem.red[c].get());
      }
    });
  };
  if (p.path != Path::Stepwise) {
    one_launch(std::true_type{}, 0, p.T, -1);
    return;
  }
  for (int64_t s = 0; s < p.T; ++s) {
    for (int phase = 0; phase < phases; ++phase) one_launch(std::false_type{}, s, s + 1, phase);
  }
}

template <class Cell>
int run_scalar(ScalarKind scalar, bool backward, const RecurrentParams& p, int ctas,
               int threads) {
  switch (scalar) {
    case ScalarKind::Float32: run<Cell, float>(backward, p, ctas, threads); return 0;
    case ScalarKind::Float64: run<Cell, double>(backward, p, ctas, threads); return 0;
#ifndef FASTRNN_EMU_NO_HALF  // the sanitizer driver runs float64 / float32 only: faster builds
    case ScalarKind::Float16: run<Cell, __half>(backward, p, ctas, threads); return 0;
    case ScalarKind::BFloat16: run<Cell, __nv_bfloat16>(backward, p, ctas, threads); return 0;
#endif
    default: return 1;
  }
}

}  // namespace
}  // namespace fastrnn

extern "C" int emu_run(int backward, int cell, int scalar, const int64_t* sizes, void** ptrs) {
  using namespace fastrnn;
  const RecurrentParams p = params_from(sizes, ptrs);
  const int ctas = static_cast<int>(sizes[kCtas]);
  const int threads = static_cast<int>(sizes[kThreadsPerCta]);
  if (p.path != Path::Resident && p.path != Path::Streamed && p.path != Path::Stepwise) return 1;
  if (ctas < 1 || threads < 1) return 1;
  const auto s = static_cast<ScalarKind>(scalar);
  switch (static_cast<CellKind>(cell)) {
    case CellKind::RnnTanh: return run_scalar<RnnCell<false>>(s, backward, p, ctas, threads);
    case CellKind::RnnRelu: return run_scalar<RnnCell<true>>(s, backward, p, ctas, threads);
    case CellKind::Lstm: return run_scalar<LstmCell>(s, backward, p, ctas, threads);
    case CellKind::Gru: return run_scalar<GruCell>(s, backward, p, ctas, threads);
  }
  return 1;
}
