// int8 weights x fp32 activations -> fp32, for models/int8.py (built once per machine by torch's extension loader).
//
//   y[m, n] = scale[n] * sum_k x[m, k] * w[n, k]      w int8 [N, K] row-major, one scale per output row
//
// Why: a decode step streams every weight from memory once; torch's int8 kernel (_weight_int8pack_mm) streams
// int8 at about half the rate MKL streams fp32, so int8's 4x fewer bytes became 2x less time. This loop (AVX2 +
// FMA: 4 weight rows at a time, int8 widened to fp32 in registers, the rows a few blocks ahead prefetched) keeps
// the memory busy. Each output is one fp32 sum in a fixed order (k ascending in 8 lanes, the lanes added last) that
// does not depend on M or on how the rows are split between threads: a session's step gives the same bits alone
// or batched with others.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <immintrin.h>
#include <torch/library.h>

#include <cstdint>

namespace {

constexpr int64_t kPrefetchBlocks = 8;  // how many 4-row blocks ahead to prefetch (timed: 2, 8, 16, 32)

inline float lanes_sum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

inline __m256 widen(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}

inline void prefetch_rows(const int8_t* w, int64_t k, int64_t K, int64_t rows) {
  for (int64_t r = 0; r < rows; ++r) _mm_prefetch(reinterpret_cast<const char*>(w + r * K + k), _MM_HINT_T0);
}

// One output: the lanes of acc added, then the last K % 8 columns, times the row's scale.
inline float row_output(__m256 acc, const float* xr, const int8_t* w, int64_t K8, int64_t K, float scale) {
  float sum = lanes_sum(acc);
  for (int64_t k = K8; k < K; ++k) sum += xr[k] * static_cast<float>(w[k]);
  return sum * scale;
}

// Output rows n .. n+3 (the block at w) for every activation row m; the block `ahead` is prefetched on the way.
void four_rows(const float* x, int64_t M, int64_t K, const int8_t* w, const float* scale, float* y, int64_t N,
               const int8_t* ahead) {
  const int64_t K8 = K - K % 8;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    for (int64_t k = 0; k < K8; k += 8) {
      if (m == 0 && ahead != nullptr && k % 64 == 0) prefetch_rows(ahead, k, K, 4);
      const __m256 v = _mm256_loadu_ps(xr + k);
      a0 = _mm256_fmadd_ps(v, widen(w + k), a0);
      a1 = _mm256_fmadd_ps(v, widen(w + K + k), a1);
      a2 = _mm256_fmadd_ps(v, widen(w + 2 * K + k), a2);
      a3 = _mm256_fmadd_ps(v, widen(w + 3 * K + k), a3);
    }
    const __m256 acc[4] = {a0, a1, a2, a3};
    for (int64_t r = 0; r < 4; ++r) y[m * N + r] = row_output(acc[r], xr, w + r * K, K8, K, scale[r]);
  }
}

// One output row n for every m (the rows left over after the blocks of four).
void one_row(const float* x, int64_t M, int64_t K, const int8_t* w, float scale, float* y, int64_t N) {
  const int64_t K8 = K - K % 8;
  for (int64_t m = 0; m < M; ++m) {
    const float* xr = x + m * K;
    __m256 a = _mm256_setzero_ps();
    for (int64_t k = 0; k < K8; k += 8) a = _mm256_fmadd_ps(_mm256_loadu_ps(xr + k), widen(w + k), a);
    y[m * N] = row_output(a, xr, w, K8, K, scale);
  }
}

at::Tensor int8_linear(const at::Tensor& x_in, const at::Tensor& w_in, const at::Tensor& scale_in) {
  TORCH_CHECK(x_in.scalar_type() == at::kFloat, "int8_linear: x must be float32");
  TORCH_CHECK(w_in.scalar_type() == at::kChar, "int8_linear: weights must be int8");
  TORCH_CHECK(scale_in.scalar_type() == at::kFloat, "int8_linear: scales must be float32");
  TORCH_CHECK(x_in.dim() == 2 && w_in.dim() == 2, "int8_linear: x [M, K] and weights [N, K]");
  TORCH_CHECK(x_in.size(1) == w_in.size(1) && scale_in.numel() == w_in.size(0), "int8_linear: shapes disagree");
  const at::Tensor x = x_in.contiguous(), w = w_in.contiguous(), scale = scale_in.contiguous();
  const int64_t M = x.size(0), K = x.size(1), N = w.size(0);
  at::Tensor y = at::empty({M, N}, x.options());
  const float* xp = x.data_ptr<float>();
  const int8_t* wp = w.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* yp = y.data_ptr<float>();
  const int64_t blocks = N / 4;
  at::parallel_for(0, blocks, 16, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int8_t* ahead = b + kPrefetchBlocks < b1 ? wp + (b + kPrefetchBlocks) * 4 * K : nullptr;
      four_rows(xp, M, K, wp + b * 4 * K, sp + b * 4, yp + b * 4, N, ahead);
    }
  });
  for (int64_t n = blocks * 4; n < N; ++n) one_row(xp, M, K, wp + n * K, sp[n], yp + n, N);
  return y;
}

}  // namespace

TORCH_LIBRARY(inferchain, m) { m.def("int8_linear(Tensor x, Tensor weight, Tensor scale) -> Tensor"); }

TORCH_LIBRARY_IMPL(inferchain, CPU, m) { m.impl("int8_linear", &int8_linear); }
