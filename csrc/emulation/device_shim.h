// Test-only: what the device code of csrc/*.cu needs from the hardware, for host threads.
// One std::thread per CUDA thread; threadIdx / blockIdx / blockDim are thread_locals set by
// launch() (host_emulation.cpp), __syncthreads is a barrier over the threads of one CTA and
// grid_barrier<true> (grid.sync) a barrier over every thread of the launch.
//
// Both barriers are a mutex + condition variable, not std::barrier: ThreadSanitizer models
// pthread mutexes exactly, so the only happens-before edges it sees between CUDA threads are
// the ones a barrier of the kernel provides, and a missing barrier shows up as a data race.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>

#include <cuda_runtime.h>

namespace fastrnn_emu {

struct Dim3 {
  unsigned x = 0, y = 0, z = 0;
};

// A reusable barrier for `count` threads (every thread of a CTA, or of the grid).
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    const uint64_t generation = generation_;
    if (++arrived_ == count_) {
      arrived_ = 0;
      ++generation_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return generation_ != generation; });
  }

 private:
  std::mutex mutex_;
  std::condition_variable cv_;
  const int count_;
  int arrived_ = 0;
  uint64_t generation_ = 0;
};

inline thread_local Dim3 thread_idx, block_idx, block_dim;
inline thread_local Barrier* cta_sync = nullptr;   // this thread's CTA
inline thread_local Barrier* grid_sync = nullptr;  // every thread of the launch

}  // namespace fastrnn_emu

#define threadIdx fastrnn_emu::thread_idx
#define blockIdx fastrnn_emu::block_idx
#define blockDim fastrnn_emu::block_dim

// Host memory is coherent: the L2-coherent load is a plain load here. (Whether the kernels
// use it where they must is checked statically, tests/test_emulation_coherence.py.)
inline float __ldcg(const float* p) { return *p; }
inline double __ldcg(const double* p) { return *p; }
inline void __syncthreads() { fastrnn_emu::cta_sync->arrive_and_wait(); }

namespace fastrnn {
// persistent.cuh's grid barrier (compiled out under FASTRNN_EMULATE). Stepwise launches
// (kCoop false) have none: the emulated launch boundary, a join, is the barrier.
template <bool kCoop>
inline void grid_barrier() {
  if constexpr (kCoop) fastrnn_emu::grid_sync->arrive_and_wait();
}
}  // namespace fastrnn
