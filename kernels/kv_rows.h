#pragma once
// Reading cached K/V rows of any element type, and which slots a query position can see.
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kivi_quantize.h"
#include "kernels/kivi_rows.h"
#include "kernels/kv_int_scores.h"
#include "kernels/matmul.h"
#include "kernels/transpose16.h"
#include "kernels/variant.h"

#if defined(__AVX512F__) || defined(__F16C__) || defined(__AVX2__)
#include <immintrin.h>
#endif

namespace kvsqueeze::kernels::inline KVSQ_VARIANT {

// The weight type matmul and dequantize_row know a KV element type by.
inline TensorType kv_tensor_type(KvType type) {
  switch (type) {
    case KvType::F32: return TensorType::F32;
    case KvType::F16: return TensorType::F16;
    case KvType::BF16: return TensorType::BF16;
    case KvType::Q8_0: return TensorType::Q8_0;
    case KvType::Q4_0: return TensorType::Q4_0;
    case KvType::KIVI2: break;  // no weight type: read through kivi_quantize.h
  }
  return TensorType::F32;
}

// Row `index` of rows of `stride` elements, as stored (value rows; KIVI2 keys are read by
// stored_key_row).
inline const uint8_t* kv_row_at(const void* base, int64_t index, int64_t stride, KvType type) {
  return static_cast<const uint8_t*>(base) + static_cast<size_t>(index) * kv_row_bytes(type, stride);
}

#if defined(KVSQ_VARIANT_TU)
// Row `index` (rows of `stride` elements) of a cached K or V block as d floats (KIVI2: value rows).
inline void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst) {
  const uint8_t* row = kv_row_at(base, index, stride, type);
  switch (type) {
    case KvType::F32: {
      const float* src = reinterpret_cast<const float*>(row);
      std::copy(src, src + d, dst);
      return;
    }
    case KvType::F16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(row);
      int64_t i = 0;
#if defined(__AVX512F__)
      for (; i + 16 <= d; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
#elif defined(__F16C__)
      for (; i + 8 <= d; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
#endif
      for (; i < d; ++i) dst[i] = fp16_to_fp32(src[i]);
      return;
    }
    case KvType::BF16: {
      const uint16_t* src = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < d; ++i) dst[i] = bf16_to_fp32(src[i]);
      return;
    }
    case KvType::Q8_0:
    case KvType::Q4_0: dequantize_row(kv_tensor_type(type), row, dst, d); return;
    case KvType::KIVI2: dequantize_row_kivi2(row, dst, d); return;
  }
}
#else
// Outside kernels/ (presses, value norms) row_to_f32 and dot_row are the selected variant's,
// through the dispatcher (kernels/forward.cpp): presses call them for every cached row.
void row_to_f32(const void* base, int64_t index, int64_t stride, int64_t d, KvType type, float* dst);
float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type);
#endif

inline void f16_row_to_f32(const uint16_t* src, int64_t d, float* dst) {
  for (int64_t i = 0; i < d; ++i) dst[i] = fp16_to_fp32(src[i]);
}

// Key row `index` of a run as stored (its k_stride channels, rotated and centred as stored):
// from the recent window, a KIVI2 group, or the row itself.
inline void stored_key_row(const KvRun& run, int64_t index, float* dst) {
  const int64_t d = run.k_stride;
  if (run.in_recent(index)) return f16_row_to_f32(run.k_recent + (index - run.recent_first) * d, d, dst);
  if (run.k_type == KvType::KIVI2) {
    const int64_t group = (run.k_phase + index) / kKiviGroup;
    return dequantize_key_kivi2(run.k_groups + static_cast<size_t>(group) * kivi_group_bytes(d), run.k_row(index), dst, d);
  }
  row_to_f32(run.k, index, d, d, run.k_type, dst);
}

// Value row `index` of a run as stored (rotated when the run's values are).
inline void stored_value_row(const KvRun& run, int64_t index, float* dst) {
  const int64_t d = run.v_stride;
  if (run.in_recent(index)) return f16_row_to_f32(run.v_recent + (index - run.recent_first) * d, d, dst);
  row_to_f32(run.v, index, d, d, run.v_type, dst);
}

#if defined(KVSQ_VARIANT_TU)
// n consecutive stored rows of d elements (contiguous, so one conversion call covers them) as
// n x d floats; KIVI2: value rows.
inline void rows_to_f32(const uint8_t* rows, int64_t n, int64_t d, KvType type, float* dst) {
  if (type == KvType::F32 || type == KvType::BF16) {
    for (int64_t j = 0; j < n; ++j) row_to_f32(rows, j, d, d, type, dst + j * d);
    return;
  }
  if (type == KvType::KIVI2 && d <= 1024) return kivi_value_rows(rows, n, d, dst);
  row_to_f32(rows, 0, n * d, n * d, type, dst);  // f16 and the block types: one long row
}

// Value rows [first, first + n) of a run as stored, n x v_stride floats.
inline void stored_value_rows(const KvRun& run, int64_t first, int64_t n, float* dst) {
  const int64_t d = run.v_stride;
  const int64_t plain = std::clamp<int64_t>(run.recent_first - first, 0, n);  // rows before the recent window
  if (plain > 0) rows_to_f32(run.v_row(first), plain, d, run.v_type, dst);
  for (int64_t j = plain; j < n; ++j) f16_row_to_f32(run.v_recent + (first + j - run.recent_first) * d, d, dst + j * d);
}

// Key rows [first, first + n) of a run as stored, n x k_stride floats.
inline void stored_key_rows(const KvRun& run, int64_t first, int64_t n, float* dst) {
  const int64_t d = run.k_stride;
  const int64_t plain = std::clamp<int64_t>(run.recent_first - first, 0, n);
  if (run.k_type != KvType::KIVI2) {
    if (plain > 0) rows_to_f32(run.k_row(first), plain, d, run.k_type, dst);
  } else {
    for (int64_t j = 0; j < plain;) {  // a group's parameters read once for its rows
      const int64_t group = (run.k_phase + first + j) / kKiviGroup;
      const int64_t end = std::min(plain, (group + 1) * kKiviGroup - run.k_phase - first);
      const uint8_t* params = run.k_groups + static_cast<size_t>(group) * kivi_group_bytes(d);
      if (d <= 1024) kivi_key_rows(params, run.k_row(first + j), end - j, d, dst + j * d);
      else dequantize_keys_kivi2(params, run.k_row(first + j), end - j, dst + j * d, d);
      j = end;
    }
  }
  for (int64_t j = plain; j < n; ++j) f16_row_to_f32(run.k_recent + (first + j - run.recent_first) * d, d, dst + j * d);
}
#endif

// Key rows that are not plain rows of the run's type: KIVI2 groups and the recent window.
inline bool key_rows_plain(const KvRun& run, int64_t first, int64_t n) {
  return run.k_type != KvType::KIVI2 && first + n <= run.recent_first;
}

// Key row `index` of a run as head_dim_k = d floats: channel-pruned runs (KvRun::k_channels)
// scatter their stored channels and leave the pruned ones 0.
inline void key_row_to_f32(const KvRun& run, int64_t index, int64_t d, float* dst) {
  if (!run.k_channels) {
    stored_key_row(run, index, dst);
    if (run.k_rotated) hadamard_rotate(dst, d);
    if (run.k_offset)
      for (int64_t i = 0; i < d; ++i) dst[i] += run.k_offset[i];
    return;
  }
  float stored[1024];
  float* buf = run.k_stride <= 1024 ? stored : nullptr;
  std::vector<float> big;
  if (!buf) {
    big.resize(static_cast<size_t>(run.k_stride));
    buf = big.data();
  }
  stored_key_row(run, index, buf);
  std::fill(dst, dst + d, 0.0f);
  for (int64_t i = 0; i < run.k_stride; ++i) dst[run.k_channels[i]] = buf[i];
}

// The query as the run's keys are stored: q (head_dim_k floats) gathered to run.k_stride floats
// for channel-pruned runs, rotated for rotated ones, q itself otherwise. scratch: k_stride floats.
inline const float* gather_query(const KvRun& run, const float* q, float* scratch) {
  if (run.k_rotated) {
    std::copy(q, q + run.k_stride, scratch);
    hadamard_rotate(scratch, run.k_stride);
    return scratch;
  }
  if (!run.k_channels) return q;
  for (int64_t i = 0; i < run.k_stride; ++i) scratch[i] = q[run.k_channels[i]];
  return scratch;
}

#if defined(KVSQ_VARIANT_TU)
// q . k for one cached row, converting the key on the fly.
inline float dot_row(const float* q, const void* base, int64_t index, int64_t stride, int64_t d, KvType type) {
  const uint8_t* row = kv_row_at(base, index, stride, type);
#if defined(__AVX512F__)
  if (d % 16 == 0 && (type == KvType::F16 || type == KvType::F32)) {
    __m512 acc = _mm512_setzero_ps();
    if (type == KvType::F16) {
      const uint16_t* k = reinterpret_cast<const uint16_t*>(row);
      for (int64_t i = 0; i < d; i += 16)
        acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i),
                              _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(k + i))), acc);
    } else {
      const float* k = reinterpret_cast<const float*>(row);
      for (int64_t i = 0; i < d; i += 16) acc = _mm512_fmadd_ps(_mm512_loadu_ps(q + i), _mm512_loadu_ps(k + i), acc);
    }
    return _mm512_reduce_add_ps(acc);
  }
#endif
  float sum = 0.0f;
  if (kv_type_quantized(type)) {
    float k[1024];  // head dimensions are far below this (the cache checks multiples of 32 only)
    for (int64_t c = 0; c < d; c += 1024) {
      const int64_t m = std::min<int64_t>(1024, d - c);
      dequantize_row(kv_tensor_type(type), row + kv_row_bytes(type, c), k, m);
      for (int64_t i = 0; i < m; ++i) sum += q[c + i] * k[i];
    }
    return sum;
  }
  for (int64_t i = 0; i < d; ++i) {
    float k;
    if (type == KvType::F32) k = reinterpret_cast<const float*>(row)[i];
    else if (type == KvType::F16) k = fp16_to_fp32(reinterpret_cast<const uint16_t*>(row)[i]);
    else k = bf16_to_fp32(reinterpret_cast<const uint16_t*>(row)[i]);
    sum += q[i] * k;
  }
  return sum;
}

#endif

// Slots [lo, hi) of a run visible to a query at position p (positions ascending).
inline void visible_range(const KvRun& run, int32_t p, int32_t window, int64_t& lo, int64_t& hi) {
  hi = std::upper_bound(run.pos, run.pos + run.len, p) - run.pos;
  lo = 0;
  if (window > 0) lo = std::lower_bound(run.pos, run.pos + hi, p - window + 1) - run.pos;
}

// Cached key rows [first, first + n) of a run as the weight matrix of a matmul.
inline WeightMatrix key_rows(const KvRun& run, int64_t first, int64_t n) {
  WeightMatrix keys;
  keys.type = kv_tensor_type(run.k_type);
  keys.data = run.k_row(first);
  keys.rows = n;
  keys.cols = run.k_stride;
  keys.row_bytes = kv_row_bytes(run.k_type, run.k_stride);
  return keys;
}

#if defined(KVSQ_VARIANT_TU)
#if defined(__AVX512F__)
// Channels c0..c0+15 of key row j as floats: float rows as stored; f16 rows converted in
// registers (exact), so no float tile is written to L2 and read back.
inline __m512 key_slice(const float* keys, int64_t d, int j, int64_t c0) { return _mm512_loadu_ps(keys + j * d + c0); }
inline __m512 key_slice(const uint16_t* keys, int64_t d, int j, int64_t c0) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(keys + j * d + c0)));
}

// Scores of 16 keys (rows of d floats or f16, d a multiple of 16) for NQ queries: each 16x16
// block of the keys is transposed, so a query channel is one broadcast FMA into a vector of 16
// keys' sums and no sum crosses lanes; the NQ accumulators are independent chains.
template <int NQ, class Key>
inline void scores_of_16_keys(const Key* keys, int64_t d, const float* q, float* out, int64_t ldo) {
  __m512 acc[NQ];
  for (auto& a : acc) a = _mm512_setzero_ps();
  for (int64_t c0 = 0; c0 < d; c0 += 16) {
    __m512i kt[16];
    for (int j = 0; j < 16; ++j) kt[j] = _mm512_castps_si512(key_slice(keys, d, j, c0));
    detail::transpose16x16(kt);
    for (int c = 0; c < 16; ++c)
      for (int t = 0; t < NQ; ++t) acc[t] = _mm512_fmadd_ps(_mm512_set1_ps(q[t * d + c0 + c]), _mm512_castsi512_ps(kt[c]), acc[t]);
  }
  for (int t = 0; t < NQ; ++t) _mm512_storeu_ps(out + t * ldo, acc[t]);
}

template <int NQ = 1, class Key>
inline void scores_of_16_keys(int64_t nq, const Key* keys, int64_t d, const float* q, float* out, int64_t ldo) {
  if constexpr (NQ < 16)
    if (nq != NQ) return scores_of_16_keys<NQ + 1>(nq, keys, d, q, out, ldo);
  scores_of_16_keys<NQ>(keys, d, q, out, ldo);
}
#endif

// out[t * ldo + j] = q_t . k_j for nq queries and nt keys, both rows of d floats. AVX-512:
// sixteen keys at a time (transposed blocks); AVX2: eight keys at a time per query, their
// eight sums reduced together.
inline void group_scores(const float* keys, int64_t nt, int64_t d, const float* q, int64_t nq, float* out, int64_t ldo) {
  int64_t j = 0;
#if defined(__AVX512F__)
  if (d % 16 == 0) {
    for (; j + 16 <= nt; j += 16)
      for (int64_t t0 = 0; t0 < nq; t0 += 16)
        scores_of_16_keys(std::min<int64_t>(16, nq - t0), keys + j * d, d, q + t0 * d, out + t0 * ldo + j, ldo);
  }
#endif
#if defined(__AVX2__) && defined(__FMA__)
  if (d % 8 == 0)
    for (; j + 8 <= nt; j += 8) {
      const float* k = keys + j * d;
      for (int64_t t = 0; t < nq; ++t) {
        const float* qt = q + t * d;
        __m256 a[8];
        for (auto& x : a) x = _mm256_setzero_ps();
        for (int64_t c = 0; c < d; c += 8) {
          const __m256 qv = _mm256_loadu_ps(qt + c);
          for (int r = 0; r < 8; ++r) a[r] = _mm256_fmadd_ps(qv, _mm256_loadu_ps(k + r * d + c), a[r]);
        }
        // Lane sums of a[0..7] into one vector: hadd pairs, then the two 128-bit halves.
        const __m256 h01 = _mm256_hadd_ps(a[0], a[1]), h23 = _mm256_hadd_ps(a[2], a[3]);
        const __m256 h45 = _mm256_hadd_ps(a[4], a[5]), h67 = _mm256_hadd_ps(a[6], a[7]);
        const __m256 h0123 = _mm256_hadd_ps(h01, h23), h4567 = _mm256_hadd_ps(h45, h67);
        const __m256 sums = _mm256_add_ps(_mm256_permute2f128_ps(h0123, h4567, 0x20), _mm256_permute2f128_ps(h0123, h4567, 0x31));
        _mm256_storeu_ps(out + t * ldo + j, sums);
      }
    }
#endif
  for (; j < nt; ++j)
    for (int64_t t = 0; t < nq; ++t) {
      float sum = 0.0f;
      for (int64_t c = 0; c < d; ++c) sum += q[t * d + c] * keys[j * d + c];
      out[t * ldo + j] = sum;
    }
}

// out[t * ldo + j] = q_t . key row (first + j), for nq query rows of k_stride floats (already
// gathered/rotated as the run stores its keys) and j < n. Float keys are the weights of one
// matmul; quantized keys are dequantized a tile at a time and multiplied with the float queries,
// so the scores carry the keys' rounding only (a quantized matmul would round the queries to 8
// bits as well).
inline void key_scores(const KvRun& run, int64_t first, int64_t n, const float* q, int64_t nq, float* out, int64_t ldo) {
  constexpr int64_t kTile = 256;
  const int64_t d = run.k_stride;
  thread_local std::vector<float> tile;
  tile.resize(static_cast<size_t>(kTile * d));
  if (nq <= 16) {
#if defined(__AVX512F__)
    if (run.k_type == KvType::F16 && d % 16 == 0 && key_rows_plain(run, first, n)) {
      const auto* rows = reinterpret_cast<const uint16_t*>(run.k_row(first));
      int64_t j = 0;
      for (; j + 16 <= n; j += 16) scores_of_16_keys(nq, rows + j * d, d, q, out + j, ldo);
      first += j;
      n -= j;
      out += j;
    }
#endif
    // Few queries (decode, a GQA group): a tile of keys converted to floats once, in L1/L2,
    // then dotted with every query of the group.
    for (int64_t j0 = 0; j0 < n; j0 += kTile) {
      const int64_t nt = std::min(kTile, n - j0);
      stored_key_rows(run, first + j0, nt, tile.data());
      group_scores(tile.data(), nt, d, q, nq, out + j0, ldo);
    }
    return;
  }
  if (!kv_type_quantized(run.k_type) && key_rows_plain(run, first, n)) return matmul(key_rows(run, first, n), q, nq, out, ldo);
  for (int64_t j0 = 0; j0 < n; j0 += kTile) {
    const int64_t nt = std::min(kTile, n - j0);
    stored_key_rows(run, first + j0, nt, tile.data());
    WeightMatrix keys;
    keys.type = TensorType::F32;
    keys.data = reinterpret_cast<const uint8_t*>(tile.data());
    keys.rows = nt;
    keys.cols = d;
    keys.row_bytes = static_cast<size_t>(d) * sizeof(float);
    matmul(keys, q, nq, out + j0, ldo);
  }
}

// key_scores for decode attention: q8_0/q4_0 keys scored in integers straight from the stored
// blocks where the machine has VNNI (kv_int_scores.h: the queries rounded to 16 bits). The
// presses' statistics keep key_scores, so their scores do not depend on the machine.
inline void decode_key_scores(const KvRun& run, int64_t first, int64_t n, const float* q, int64_t nq, float* out, int64_t ldo) {
#if defined(KVSQ_INT_KEY_SCORES)
  if ((run.k_type == KvType::Q8_0 || run.k_type == KvType::Q4_0) && key_rows_plain(run, first, n)) {
    const int64_t done = detail::int_key_scores(run.k_type == KvType::Q4_0, run.k_row(first),
                                                kv_key_row_bytes(run.k_type, run.k_stride), n, run.k_stride, q, nq, out, ldo);
    first += done;
    n -= done;
    out += done;
  }
#endif
  if (n > 0) key_scores(run, first, n, q, nq, out, ldo);
}
#endif

}  // namespace kvsqueeze::kernels::inline KVSQ_VARIANT
