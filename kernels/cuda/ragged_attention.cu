// Split-K attention over ragged runs (kernels/cuda/ragged_attention.h).
#include <cfloat>
#include <cstring>

#include "kernels/cuda/ragged_attention.h"
#include "kernels/cuda/row_elements.cuh"

namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR {
namespace {

constexpr int kThreads = 128;
constexpr int kWarps = kThreads / 32;
constexpr int kMaxAcc = 32;  // accumulators per thread: group x head_dim_v <= 4096
constexpr size_t kSharedLimit = 48 * 1024;

struct Layout {  // the dynamic shared memory of one block, in floats
  int tile;      // keys per tile
  size_t q, k, v, p, stats, total;
};

Layout layout_for(int group, int k_stride, int dv) {
  Layout l{};
  for (l.tile = 32;; l.tile /= 2) {
    l.q = 0;
    l.k = l.q + static_cast<size_t>(group) * k_stride;
    l.v = l.k + static_cast<size_t>(l.tile) * (k_stride + 1);  // key rows padded: no bank conflicts
    l.p = l.v + static_cast<size_t>(l.tile) * dv;
    l.stats = l.p + static_cast<size_t>(group) * l.tile;
    l.total = l.stats + 3 * static_cast<size_t>(group);
    if (l.total * sizeof(float) <= kSharedLimit || l.tile == 4) return l;
  }
}

__device__ float warp_max(float v) {
  for (int off = 16; off > 0; off /= 2) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, off));
  return v;
}
__device__ float warp_sum(float v) {
  for (int off = 16; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Rows [0, n) of a tile (rows `row_bytes` apart, `width` elements each) into shared floats at
// dst + j * stride, rows [n, tile) zero. 16-byte loads where the rows allow (f16/bf16 rows of a
// multiple of 8 elements, f32 of 4), which decode needs to stream the cache at full bandwidth.
__device__ void load_tile(const char* rows, size_t row_bytes, RowType type, int n, int tile, int width, float* dst, int stride) {
  const int per_vec = type == RowType::F32 ? 4 : 8;
  if (width % per_vec == 0 && row_bytes % 16 == 0) {
    const int vecs = width / per_vec;
    for (int e = threadIdx.x; e < tile * vecs; e += kThreads) {
      const int j = e / vecs, c = (e % vecs) * per_vec;
      float* out = dst + j * stride + c;
      if (j >= n) {
        for (int i = 0; i < per_vec; ++i) out[i] = 0.0f;
        continue;
      }
      const uint4 raw = *reinterpret_cast<const uint4*>(rows + j * row_bytes + c * (type == RowType::F32 ? 4 : 2));
      if (type == RowType::F32) {
        float f[4];
        memcpy(f, &raw, sizeof f);
        for (int i = 0; i < 4; ++i) out[i] = f[i];
      } else {
        uint16_t bits[8];
        memcpy(bits, &raw, sizeof bits);
        for (int i = 0; i < 8; ++i) out[i] = bits_to_float(bits[i], type);
      }
    }
    return;
  }
  for (int e = threadIdx.x; e < tile * width; e += kThreads) {
    const int j = e / width, i = e % width;
    dst[j * stride + i] = j < n ? load_element(rows + j * row_bytes, type, i) : 0.0f;
  }
}

__device__ bool visible(int32_t key_pos, int32_t query_pos, int32_t window) {
  return key_pos <= query_pos && (window <= 0 || query_pos - key_pos < window);
}

// Block (query qi, run g, split): the partial softmax state of each of the run's query heads over
// the split's slots: max m, sum l of exp(s - m), and sum of exp(s - m) x value.
__global__ void partial_kernel(AttentionArgs args, RunTable runs, Layout lay, const float* q, const int32_t* q_pos,
                               int64_t chunk, int splits, float* part_ml, float* part_acc) {
  KVSQ_DYNAMIC_SHARED(float, smem);
  const int64_t qi = blockIdx.x / runs.count;
  const int g = static_cast<int>(blockIdx.x % runs.count);
  const int split = static_cast<int>(blockIdx.y);
  const DeviceRun& r = runs.run[g];
  const int group = args.n_head / runs.count, ks = r.k_stride, dk = runs.head_dim_k, dv = runs.head_dim_v, tile = lay.tile;
  const int32_t qp = q_pos[qi];
  const int64_t begin = split * chunk, end = min(r.len, begin + chunk);

  float* qs = smem + lay.q;  // the group's queries on the run's channels, scaled
  float* kt = smem + lay.k;
  float* vt = smem + lay.v;
  float* p = smem + lay.p;
  float* m = smem + lay.stats;
  float* l = m + group;
  float* alpha = l + group;
  for (int e = threadIdx.x; e < group * ks; e += kThreads) {
    const int gi = e / ks, i = e % ks;
    const int c = r.k_channels ? r.k_channels[i] : i;
    qs[e] = q[(qi * args.n_head + g * group + gi) * dk + c] * args.scale;
  }
  for (int gi = threadIdx.x; gi < group; gi += kThreads) {
    m[gi] = -FLT_MAX;
    l[gi] = 0.0f;
  }
  float acc[kMaxAcc];
#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) acc[i] = 0.0f;
  const size_t kb = row_bytes(runs.k_type, ks), vb = row_bytes(runs.v_type, dv);
  __syncthreads();

  for (int64_t t0 = begin; t0 < end; t0 += tile) {
    if (r.pos[t0] > qp) break;  // positions ascend: nothing further is visible
    const int n = static_cast<int>(min(static_cast<int64_t>(tile), end - t0));
    load_tile(static_cast<const char*>(r.k) + t0 * kb, kb, runs.k_type, n, tile, ks, kt, ks + 1);
    load_tile(static_cast<const char*>(r.v) + t0 * vb, vb, runs.v_type, n, tile, dv, vt, dv);
    __syncthreads();
    for (int e = threadIdx.x; e < group * tile; e += kThreads) {
      const int gi = e / tile, j = e % tile;
      float s = -FLT_MAX;
      if (j < n && visible(r.pos[t0 + j], qp, args.window)) {
        s = 0.0f;
        for (int i = 0; i < ks; ++i) s += qs[gi * ks + i] * kt[j * (ks + 1) + i];
      }
      p[e] = s;
    }
    __syncthreads();
    const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
    for (int gi = warp; gi < group; gi += kWarps) {  // online softmax, one warp per query head
      float mx = -FLT_MAX;
      for (int j = lane; j < tile; j += 32) mx = fmaxf(mx, p[gi * tile + j]);
      mx = warp_max(mx);
      const float m_new = fmaxf(m[gi], mx);
      float sum = 0.0f;
      for (int j = lane; j < tile; j += 32) {
        const float s = p[gi * tile + j];
        const float e = s == -FLT_MAX ? 0.0f : __expf(s - m_new);
        p[gi * tile + j] = e;
        sum += e;
      }
      sum = warp_sum(sum);
      if (lane == 0) {
        const float a = m[gi] == -FLT_MAX ? 0.0f : __expf(m[gi] - m_new);
        alpha[gi] = a;
        l[gi] = l[gi] * a + sum;
        m[gi] = m_new;
      }
    }
    __syncthreads();
#pragma unroll
    for (int i = 0; i < kMaxAcc; ++i) {
      const int e = threadIdx.x + i * kThreads;
      if (e >= group * dv) break;
      const int gi = e / dv, d = e % dv;
      float a = acc[i] * alpha[gi];
      for (int j = 0; j < n; ++j) a += p[gi * tile + j] * vt[j * dv + d];
      acc[i] = a;
    }
    __syncthreads();  // the next tile overwrites kt, vt and p
  }

#pragma unroll
  for (int i = 0; i < kMaxAcc; ++i) {
    const int e = threadIdx.x + i * kThreads;
    if (e >= group * dv) break;
    const int gi = e / dv, d = e % dv;
    const int64_t part = (qi * args.n_head + g * group + gi) * splits + split;
    part_acc[part * dv + d] = acc[i];
  }
  for (int gi = threadIdx.x; gi < group; gi += kThreads) {
    const int64_t part = (qi * args.n_head + g * group + gi) * splits + split;
    part_ml[2 * part] = m[gi];
    part_ml[2 * part + 1] = l[gi];
  }
}

// Block (query, head): the splits' states combined; out = acc / l, lse = m + log l.
__global__ void combine_kernel(int splits, int dv, const float* part_ml, const float* part_acc, float* out, float* lse) {
  const int64_t row = blockIdx.x;  // qi * n_head + h
  const float* ml = part_ml + row * splits * 2;
  float mx = -FLT_MAX;
  for (int s = 0; s < splits; ++s)
    if (ml[2 * s + 1] > 0.0f) mx = fmaxf(mx, ml[2 * s]);
  float total = 0.0f;
  for (int s = 0; s < splits; ++s)
    if (ml[2 * s + 1] > 0.0f) total += ml[2 * s + 1] * __expf(ml[2 * s] - mx);
  for (int d = threadIdx.x; d < dv; d += kThreads) {
    float sum = 0.0f;
    for (int s = 0; s < splits; ++s)
      if (ml[2 * s + 1] > 0.0f) sum += part_acc[(row * splits + s) * dv + d] * __expf(ml[2 * s] - mx);
    out[row * dv + d] = total > 0.0f ? sum / total : 0.0f;
  }
  if (lse && threadIdx.x == 0) lse[row] = total > 0.0f ? mx + logf(total) : -INFINITY;
}

}  // namespace

int64_t attention_splits(int64_t n_q, int64_t n_head_kv, int64_t max_len, int sm_count) {
  const int64_t blocks = n_q * n_head_kv, wanted = 4 * static_cast<int64_t>(sm_count);
  const int64_t by_length = (max_len + 63) / 64;  // at least 64 slots per split
  int64_t splits = (wanted + blocks - 1) / blocks;
  if (splits > by_length) splits = by_length;
  if (splits > 1024) splits = 1024;
  return splits < 1 ? 1 : splits;
}

size_t attention_scratch_floats(int64_t n_q, int64_t n_head, int64_t splits, int64_t head_dim_v) {
  return static_cast<size_t>(n_q * n_head * splits) * static_cast<size_t>(2 + head_dim_v);
}

cudaError_t attention(const AttentionArgs& args, const RunTable& runs, const float* q, const int32_t* q_pos, int64_t n_q,
                      int64_t max_len, int sm_count, float* out, float* lse, float* scratch, cudaStream_t stream) {
  if (runs.count <= 0 || runs.count > kMaxRuns || args.n_head % runs.count != 0) return cudaErrorInvalidValue;
  const int group = args.n_head / runs.count;
  if (group * runs.head_dim_v > kThreads * kMaxAcc) return cudaErrorInvalidValue;
  if (n_q <= 0) return cudaSuccess;
  int widest = 0;  // the widest stored key row decides the shared memory
  for (int g = 0; g < runs.count; ++g) widest = runs.run[g].k_stride > widest ? runs.run[g].k_stride : widest;
  const Layout lay = layout_for(group, widest, runs.head_dim_v);
  if (lay.total * sizeof(float) > kSharedLimit) return cudaErrorInvalidValue;
  const int64_t splits = attention_splits(n_q, runs.count, max_len, sm_count);
  const int64_t chunk = max_len <= 0 ? 1 : (max_len + splits - 1) / splits;
  float* part_ml = scratch;
  float* part_acc = scratch + n_q * args.n_head * splits * 2;
  const dim3 grid(static_cast<unsigned>(n_q * runs.count), static_cast<unsigned>(splits));
  KVSQ_LAUNCH(partial_kernel, grid, kThreads, lay.total * sizeof(float), stream, args, runs, lay, q, q_pos, chunk, static_cast<int>(splits),
                                                                          part_ml, part_acc);
  const cudaError_t err = KVSQ_LAUNCH_ERROR();
  if (err != cudaSuccess) return err;
  KVSQ_LAUNCH(combine_kernel, static_cast<unsigned>(n_q * args.n_head), kThreads, 0, stream, static_cast<int>(splits), runs.head_dim_v,
                                                                                     part_ml, part_acc, out, lse);
  return KVSQ_LAUNCH_ERROR();
}

}  // namespace kvsqueeze::kernels::cuda::inline KVSQ_CUDA_FLAVOR
