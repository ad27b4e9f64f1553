// Test-only: the C interface of the host emulation (host_emulation.cpp), used through ctypes
// by tests/test_backend_cuda.py and directly by sanitize_driver.cpp.
#pragma once

#include <cstdint>

// Pointer slots of emu_run, in order (nullptr where absent): the RecurrentParams pointers.
enum EmuSlot {
  kWhh, kBhn, kWhr, kLengths, kXg, kY, kWs, kHState, kCState, kMBuf, kGradY, kH0, kC0, kDXg,
  kDHnGru, kDHProj, kDhState, kDcState, kDgBuf, kDirectBuf, kSlots
};

// Entries of emu_run's `sizes`.
enum EmuSize { kT, kB, kH, kR, kP, kReverse, kCtas, kThreadsPerCta, kPath, kSizes };

// Run the forward (backward = 0) or backward (1) time loop of csrc/recurrent_fwd.cu /
// recurrent_bwd.cu for `cell` (fastrnn::CellKind) and `scalar` (fastrnn::ScalarKind) on host
// threads, as run_plan would on `sizes[kCtas]` CTAs of `sizes[kThreadsPerCta]` threads:
// sizes[kPath] = 1 (Resident: one cooperative launch, weights in shared memory), 2 (Streamed:
// one cooperative launch) or 3 (Stepwise: one launch per step and phase). Buffers as
// RecurrentParams (params.h) describes them. Returns 0, or 1 for an unknown cell, scalar or
// path (float16 / bfloat16 count as unknown in a -DFASTRNN_EMU_NO_HALF build).
extern "C" int emu_run(int backward, int cell, int scalar, const int64_t* sizes, void** ptrs);
