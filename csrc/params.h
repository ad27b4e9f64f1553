// The one plain struct the host fills and the kernels read. No torch here: the .cu files
// include this with bare nvcc, recurrent.cpp includes it with the host compiler.
//
// Shapes (time-major, as in fastrnn/backends/__init__.py): T steps, B batch, H hidden units,
// G gates, R recurrent width (P if the LSTM has a projection, else H), W workspace slabs.
// "scalar_t" is the dtype of the call (float, half, bfloat16, double); "acc_t" is double for
// float64 calls and float otherwise (fp32 accumulation and fp32 cell state).
// [cross-CTA]: a buffer that CTAs of one launch write and other CTAs read, between grid
// barriers; the kernels touch it only through CrossCta (persistent.cuh: reads are __ldcg).
// Every other buffer a kernel writes is either never read in that launch or read back only by
// the thread that wrote it.
#pragma once

#include <cstdint>

#include <cuda_runtime_api.h>

namespace fastrnn {

enum class CellKind : int { RnnTanh = 0, RnnRelu = 1, Lstm = 2, Gru = 3 };
enum class ScalarKind : int { Float32 = 0, Float16 = 1, BFloat16 = 2, Float64 = 3 };

// Which execution path the launcher may take (env FASTRNN_CUDA_PATH; tests force each one).
//  Resident: cooperative persistent kernel, W slices in shared memory for the whole sequence.
//  Streamed: cooperative persistent kernel, W read from global memory (L2) every step; taken
//            when the slices do not fit in shared memory.
//  Stepwise: one ordinary launch per step and phase (kernel boundaries are the barriers);
//            taken when the cooperative grid cannot be co-resident or is unsupported.
enum class Path : int { Auto = 0, Resident = 1, Streamed = 2, Stepwise = 3 };

struct RecurrentParams {
  // ---- sizes ---------------------------------------------------------------------------
  int64_t T;  // sequence length (> 0 when a kernel is launched)
  int64_t B;  // batch (> 0 when a kernel is launched)
  int64_t H;  // hidden units
  int64_t R;  // recurrent width: P if w_hr is given, else H
  int64_t P;  // projection size, 0 without projection
  bool reverse;  // process t = T-1 .. 0

  // ---- inputs shared by forward and backward -------------------------------------------
  const void* w_hh;        // (G*H, R) scalar_t, gate rows in torch.nn order
  const void* b_hn;        // (H) scalar_t, GRU with bias only, else nullptr
  const void* w_hr;        // (P, H) scalar_t, LSTM projection only, else nullptr
  const int64_t* lengths;  // (B) int64 on the device, or nullptr (all sequences have length T)

  // ---- forward --------------------------------------------------------------------------
  const void* xg;  // (T, B, G*H) scalar_t input projection with biases folded in
  void* y;         // forward: out (T, B, R) scalar_t; backward: in, forward's y
  void* ws;        // forward: out (T, B, W*H) scalar_t or nullptr (no workspace wanted);
                   // backward: in, forward's workspace (nullptr for RNN cells)
  void* h_state;   // [cross-CTA] (2, B, R) acc_t double buffer of h (rounded to scalar_t);
                   // [0] = h0 on entry; after step s buffer (s+1)%2 holds the state
  void* c_state;   // (B, H) acc_t LSTM cell state: c0 on entry, c_n on exit; else nullptr
                   // (element (b, j) only ever touched by the thread that owns it)
  void* m_buf;     // [cross-CTA] (B, H) acc_t LSTM-with-projection o*tanh(c) of the current
                   // step; else nullptr

  // ---- backward -------------------------------------------------------------------------
  const void* grad_y;  // (T, B, R) scalar_t
  const void* h0;      // (B, R) scalar_t initial hidden state (h_prev of the first step)
  const void* c0;      // (B, H) scalar_t LSTM initial cell state, else nullptr
  void* d_xg;          // out (T, B, G*H) scalar_t gate pre-activation gradients
  void* d_hn_gru;      // out (T, B, H) scalar_t GRU gradient w.r.t. W_hn h + b_hn, else nullptr
  void* d_h_proj;      // out (T, B, P) scalar_t LSTM-projection total dh_t, else nullptr
  void* dh_state;      // [cross-CTA] (2, B, R) acc_t double buffer of dh: [0] = grad_hn on
                       // entry; after backward step q buffer (q+1)%2 holds it
  void* dc_state;      // (B, H) acc_t LSTM dc: grad_cn on entry, d_c0 on exit; else nullptr
                       // (element (b, j) only ever touched by the thread that owns it)
  void* dg_buf;        // [cross-CTA] (B, G*H) acc_t gradient w.r.t. the recurrent
                       // pre-activations W_hh h of the current step (GRU n row: d_hn)
  void* direct_buf;    // [cross-CTA] (B, H) acc_t GRU direct term dh_t * z of the current
                       // step, else nullptr

  // ---- execution request ----------------------------------------------------------------
  Path path;  // requested path (Auto picks the fastest that fits)
};

// What the launcher did (for the `last_path` debug op and the GPU tests).
struct LaunchInfo {
  Path path;       // path taken
  int ctas;        // CTAs in the grid
  int64_t smem;    // dynamic shared memory bytes per CTA
};

// Defined (explicitly instantiated for every cell x scalar) in recurrent_fwd.cu /
// recurrent_bwd.cu. They launch on `stream` and return the first CUDA error, if any.
template <CellKind C, ScalarKind S>
cudaError_t recurrent_forward(const RecurrentParams& p, cudaStream_t stream, LaunchInfo* info);
template <CellKind C, ScalarKind S>
cudaError_t recurrent_backward(const RecurrentParams& p, cudaStream_t stream, LaunchInfo* info);

}  // namespace fastrnn
