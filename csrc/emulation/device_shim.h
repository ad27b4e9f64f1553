// Test-only: what the device code of csrc/*.cu needs from the hardware, for host threads.
// One std::thread per CUDA thread; threadIdx / blockIdx / blockDim are thread_locals set by
// launch() (host_emulation.cpp), __syncthreads is a barrier over the threads of one CTA and
// grid_barrier<true> (grid.sync) a barrier over every thread of the launch.
//
// Both barriers are a mutex + condition variable, not std::barrier: ThreadSanitizer models
// pthread mutexes exactly, so the only happens-before edges it sees between CUDA threads are
// the ones a barrier of the kernel provides, and a missing barrier shows up as a data race.
//
// -DFASTRNN_EMU_COHERENCE (a ThreadSanitizer build only) models L1 instead: the grid barrier
// still orders the CTAs but gives ThreadSanitizer no happens-before edge, and the L2 path
// (__ldcg / __stcg, i.e. CrossCta) is a relaxed atomic access. Then any other access to data
// another CTA touches in the same launch (a plain load that could hit a stale L1 line on a
// GPU) is reported as a race, while the CTA barrier (one SM, one L1) still synchronizes.
#pragma once

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>

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

#ifdef FASTRNN_EMU_COHERENCE
extern "C" void AnnotateIgnoreSyncBegin(const char* file, int line);  // ThreadSanitizer's
extern "C" void AnnotateIgnoreSyncEnd(const char* file, int line);

// The grid barrier of the coherence build: atomics only (a mutex's own fields would race once
// its synchronization is ignored), and invisible to ThreadSanitizer as synchronization.
class GridBarrier {
 public:
  explicit GridBarrier(int count) : count_(count) {}
  void arrive_and_wait() {
    AnnotateIgnoreSyncBegin(__FILE__, __LINE__);
    const uint64_t generation = generation_.load();  // before arriving: this phase's
    if (arrived_.fetch_add(1) + 1 == count_) {
      arrived_.store(0);
      generation_.fetch_add(1);
    } else {
      while (generation_.load() == generation) std::this_thread::yield();
    }
    AnnotateIgnoreSyncEnd(__FILE__, __LINE__);
  }

 private:
  const int count_;
  std::atomic<int> arrived_{0};
  std::atomic<uint64_t> generation_{0};
};
#else
using GridBarrier = Barrier;
#endif

inline thread_local Dim3 thread_idx, block_idx, block_dim;
inline thread_local Barrier* cta_sync = nullptr;       // this thread's CTA
inline thread_local GridBarrier* grid_sync = nullptr;  // every thread of the launch

}  // namespace fastrnn_emu

#define threadIdx fastrnn_emu::thread_idx
#define blockIdx fastrnn_emu::block_idx
#define blockDim fastrnn_emu::block_dim

// Host memory is coherent: the L2 path is a plain access here, or a relaxed atomic one in the
// coherence build (see the file comment).
template <class A>
inline A emu_load_cg(const A* p) {
#ifdef FASTRNN_EMU_COHERENCE
  return std::atomic_ref<A>(*const_cast<A*>(p)).load(std::memory_order_relaxed);
#else
  return *p;
#endif
}
template <class A>
inline void emu_store_cg(A* p, A v) {
#ifdef FASTRNN_EMU_COHERENCE
  std::atomic_ref<A>(*p).store(v, std::memory_order_relaxed);
#else
  *p = v;
#endif
}
inline float __ldcg(const float* p) { return emu_load_cg(p); }
inline double __ldcg(const double* p) { return emu_load_cg(p); }
inline void __stcg(float* p, float v) { emu_store_cg(p, v); }
inline void __stcg(double* p, double v) { emu_store_cg(p, v); }
inline void __syncthreads() { fastrnn_emu::cta_sync->arrive_and_wait(); }

namespace fastrnn {
// persistent.cuh's grid barrier (compiled out under FASTRNN_EMULATE). Stepwise launches
// (kCoop false) have none: the emulated launch boundary, a join, is the barrier.
template <bool kCoop>
inline void grid_barrier() {
  if constexpr (kCoop) fastrnn_emu::grid_sync->arrive_and_wait();
}
}  // namespace fastrnn
