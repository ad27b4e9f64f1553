// Test-only: runs the emulated kernels (host_emulation.cpp) on the cases make_cases.py wrote,
// for every execution path and two grid shapes, forward and backward, and compares with the
// stored fastrnn.reference outputs. Built with -fsanitize=thread or address,undefined by
// .ci/sanitize_emulation.sh: a plain C++ process, so the sanitizers see every access, and
// every buffer is a std::vector of exactly the size params.h gives it (AddressSanitizer puts
// a red zone right after each).
//   usage: sanitize_driver FILE.case...      exit 0: every run matched; 1: a mismatch or bad file
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "../params.h"
#include "emulation.h"

namespace {

struct Case {
  std::string name;
  std::map<std::string, std::vector<double>> f64;
  std::map<std::string, std::vector<int64_t>> i64;
};

bool read_case(const char* path, Case& out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out.name = path;
  uint32_t name_len = 0;
  while (in.read(reinterpret_cast<char*>(&name_len), sizeof(name_len))) {
    std::string name(name_len, '\0');
    uint8_t kind = 0;
    uint64_t count = 0;
    in.read(name.data(), name_len);
    in.read(reinterpret_cast<char*>(&kind), 1);
    in.read(reinterpret_cast<char*>(&count), sizeof(count));
    if (!in || kind > 1 || count > (1u << 24)) return false;
    if (kind == 0) {
      auto& v = out.f64[name];
      v.resize(count);
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * 8));
    } else {
      auto& v = out.i64[name];
      v.resize(count);
      in.read(reinterpret_cast<char*>(v.data()), static_cast<std::streamsize>(count * 8));
    }
    if (!in) return false;
  }
  return out.i64.count("config") == 1 && out.i64["config"].size() == 8 &&
         out.f64.count("tolerance") == 1 && out.f64["tolerance"].size() == 1;
}

template <class T>
std::vector<T> as(const std::vector<double>& v) {
  return std::vector<T>(v.begin(), v.end());
}

template <class T>
std::vector<T> nans(int64_t n) {
  return std::vector<T>(static_cast<size_t>(n), std::numeric_limits<T>::quiet_NaN());
}

template <class V>
void* ptr(V& v) {
  return v.empty() ? nullptr : static_cast<void*>(v.data());
}

// Runs of one case: counts mismatches and prints the first of each compared tensor.
struct Checker {
  std::string what;
  double tol;
  int failures = 0;

  // got[i] against want[i] for i in [0, n), atol = rtol = tol, NaN never equal.
  template <class T>
  void close(const char* name, const T* got, const std::vector<double>& want) {
    for (size_t i = 0; i < want.size(); ++i) {
      const double g = static_cast<double>(got[i]), w = want[i];
      if (!(std::fabs(g - w) <= tol + tol * std::fabs(w))) {
        std::printf("MISMATCH %s %s[%zu]: got %.17g, want %.17g\n", what.c_str(), name, i, g, w);
        ++failures;
        return;
      }
    }
  }
};

int run_case(const Case& c) {
  const std::vector<int64_t>& cfg = c.i64.at("config");
  const int64_t T = cfg[0], B = cfg[1], H = cfg[2], R = cfg[3], P = cfg[4];
  const int cell = static_cast<int>(cfg[6]), scalar = static_cast<int>(cfg[7]);
  const double tol = c.f64.at("tolerance")[0];
  auto f = [&](const char* name) {
    auto it = c.f64.find(name);
    return it == c.f64.end() ? std::vector<double>() : it->second;
  };
  const int64_t G = static_cast<int64_t>(f("xg").size()) / (T * B * H);
  const int64_t W = static_cast<int64_t>(f("ws").size()) / (T * B * H);
  const bool gru = cell == static_cast<int>(fastrnn::CellKind::Gru);
  const bool lstm = cell == static_cast<int>(fastrnn::CellKind::Lstm);
  std::vector<int64_t> lengths = c.i64.count("lengths") ? c.i64.at("lengths") : std::vector<int64_t>();
  auto valid = [&](int64_t t, int64_t b) { return lengths.empty() || t < lengths[b]; };

  int failures = 0;
  auto body = [&](auto scalar_tag, auto acc_tag) {
    using S = decltype(scalar_tag);
    using A = decltype(acc_tag);
    std::vector<S> w_hh = as<S>(f("w_hh")), b_hn = as<S>(f("b_hn")), w_hr = as<S>(f("w_hr"));
    std::vector<S> xg = as<S>(f("xg")), h0 = as<S>(f("h0")), c0 = as<S>(f("c0"));
    std::vector<S> grad_y = as<S>(f("grad_y")), y_in = as<S>(f("y_in"));
    std::vector<S> ws_in = W ? as<S>(f("ws_in")) : std::vector<S>();
    // Paths 1-3 (Resident, Streamed, Stepwise) on two grids: 7 threads per CTA (fewer than
    // the dot products: several passes, one thread each) and 16 (split-K over 2-8 threads).
    const struct { int path, ctas, threads; } configs[] = {
        {1, 2, 7}, {2, 2, 7}, {3, 2, 7}, {1, 3, 16}, {2, 3, 16}, {3, 3, 16}};
    for (const auto& k : configs) {
      Checker check{c.name + " path=" + std::to_string(k.path) + " ctas=" +
                        std::to_string(k.ctas) + " threads=" + std::to_string(k.threads),
                    tol};
      const int64_t sizes[kSizes] = {T, B, H, R, P, cfg[5], k.ctas, k.threads, k.path};
      // ---- forward: every output starts as NaN, so each element must be written.
      std::vector<S> y = nans<S>(T * B * R), ws = nans<S>(T * B * W * H);
      std::vector<A> h_state = nans<A>(2 * B * R), c_state = as<A>(f("c0"));
      std::vector<A> m_buf = P ? nans<A>(B * H) : std::vector<A>();
      for (int64_t i = 0; i < B * R; ++i) h_state[i] = static_cast<A>(h0[i]);
      void* fw[kSlots] = {};
      fw[kWhh] = ptr(w_hh);
      fw[kBhn] = ptr(b_hn);
      fw[kWhr] = ptr(w_hr);
      fw[kLengths] = ptr(lengths);
      fw[kXg] = ptr(xg);
      fw[kY] = ptr(y);
      fw[kWs] = ptr(ws);
      fw[kHState] = ptr(h_state);
      fw[kCState] = ptr(c_state);
      fw[kMBuf] = ptr(m_buf);
      if (emu_run(0, cell, scalar, sizes, fw) != 0) {
        std::printf("FAILED %s: emu_run(forward) refused the case\n", check.what.c_str());
        ++failures;
        continue;
      }
      check.close("y", y.data(), f("y"));
      check.close("h_n", h_state.data() + (T % 2) * B * R, f("h_n"));
      if (lstm) check.close("c_n", c_state.data(), f("c_n"));
      // Workspace: the reference's values at valid steps, 0 at the others.
      std::vector<double> ws_want = f("ws");
      for (int64_t t = 0; t < T; ++t)
        for (int64_t b = 0; b < B; ++b)
          if (!valid(t, b))
            for (int64_t e = 0; e < W * H; ++e) ws_want[(t * B + b) * W * H + e] = 0.0;
      check.close("ws", ws.data(), ws_want);
      // ---- backward, from the reference's forward outputs (the two loops tested apart).
      std::vector<S> d_xg = nans<S>(T * B * G * H);
      std::vector<S> d_hn_gru = gru ? nans<S>(T * B * H) : std::vector<S>();
      std::vector<S> d_h_proj = P ? nans<S>(T * B * P) : std::vector<S>();
      std::vector<A> dh_state = nans<A>(2 * B * R), dc_state = as<A>(f("grad_cn"));
      std::vector<A> dg_buf = nans<A>(B * G * H);
      std::vector<A> direct_buf = gru ? nans<A>(B * H) : std::vector<A>();
      const std::vector<double> grad_hn = f("grad_hn");
      for (int64_t i = 0; i < B * R; ++i) dh_state[i] = static_cast<A>(grad_hn[i]);
      void* bw[kSlots] = {};
      bw[kWhh] = ptr(w_hh);
      bw[kBhn] = ptr(b_hn);
      bw[kWhr] = ptr(w_hr);
      bw[kLengths] = ptr(lengths);
      bw[kGradY] = ptr(grad_y);
      bw[kY] = ptr(y_in);
      bw[kWs] = ptr(ws_in);
      bw[kH0] = ptr(h0);
      bw[kC0] = ptr(c0);
      bw[kDXg] = ptr(d_xg);
      bw[kDHnGru] = ptr(d_hn_gru);
      bw[kDHProj] = ptr(d_h_proj);
      bw[kDhState] = ptr(dh_state);
      bw[kDcState] = ptr(dc_state);
      bw[kDgBuf] = ptr(dg_buf);
      bw[kDirectBuf] = ptr(direct_buf);
      if (emu_run(1, cell, scalar, sizes, bw) != 0) {
        std::printf("FAILED %s: emu_run(backward) refused the case\n", check.what.c_str());
        ++failures;
        continue;
      }
      check.close("d_xg", d_xg.data(), f("d_xg"));
      if (gru) check.close("d_hn_gru", d_hn_gru.data(), f("d_hn_gru"));
      if (P) check.close("d_h_proj", d_h_proj.data(), f("d_h_proj"));
      check.close("d_h0", dh_state.data() + (T % 2) * B * R, f("d_h0"));
      if (lstm) check.close("d_c0", dc_state.data(), f("d_c0"));
      failures += check.failures;
    }
  };
  if (scalar == static_cast<int>(fastrnn::ScalarKind::Float64)) {
    body(double{}, double{});
  } else if (scalar == static_cast<int>(fastrnn::ScalarKind::Float32)) {
    body(float{}, float{});
  } else {
    std::printf("FAILED %s: scalar kind %d (the driver runs float64 and float32)\n",
                c.name.c_str(), scalar);
    return 1;
  }
  return failures;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s FILE.case...\n", argv[0]);
    return 1;
  }
  int failures = 0;
  for (int i = 1; i < argc; ++i) {
    Case c;
    if (!read_case(argv[i], c)) {
      std::printf("FAILED %s: not a readable case file\n", argv[i]);
      ++failures;
      continue;
    }
    failures += run_case(c);
  }
  std::printf("sanitize_driver: %d case files x 6 launch configurations, forward and backward: %s\n",
              argc - 1, failures ? "MISMATCHES" : "all match the reference");
  return failures ? 1 : 0;
}
