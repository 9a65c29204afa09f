// The CUDA backend's KV storage (cuda_kv_storage.h). The hot paths (append, compaction,
// attention's reads) stay on the device; the rare ones that rewrite rows from host floats
// (merging, ThinK's channel pruning, loading a cache) encode on the host and upload.
#include "backend/cuda/cuda_kv_storage.h"

#include <algorithm>
#include <string>

#include "kernels/fp16.h"
#include "kernels/kv_rows.h"
#include "kvsqueeze/error.h"

namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR {
namespace kc = kernels::cuda;

namespace {

kc::RowType row_type(KvType type) {
  switch (type) {
    case KvType::F32: return kc::RowType::F32;
    case KvType::F16: return kc::RowType::F16;
    case KvType::BF16: return kc::RowType::BF16;
    default: break;
  }
  throw Error(std::string("the cuda backend stores f32, f16 and bf16 caches; ") + kv_type_name(type) +
              " is not supported there yet (use --device cpu)");
}

// n rows of d floats as rows of `type`, appended to out.
void encode_rows(const float* src, int64_t n, int64_t d, KvType type, std::vector<uint8_t>& out) {
  const size_t bytes = static_cast<size_t>(n * d) * (type == KvType::F32 ? 4 : 2);
  out.resize(bytes);
  if (type == KvType::F32) {
    std::copy_n(reinterpret_cast<const uint8_t*>(src), bytes, out.data());
    return;
  }
  auto* dst = reinterpret_cast<uint16_t*>(out.data());
  for (int64_t i = 0; i < n * d; ++i) dst[i] = type == KvType::F16 ? kernels::fp32_to_fp16(src[i]) : kernels::fp32_to_bf16(src[i]);
}

}  // namespace

CudaKvStorage::CudaKvStorage(const KvCacheShape& shape) : KvStorage(shape) {
  row_type(shape.k_type);
  row_type(shape.v_type);
  if (shape.k_rotated || shape.v_rotated)
    throw Error("the cuda backend does not store rotated rows yet (use kv_rotation off, or --device cpu)");
  if (shape.n_head_kv > kc::kMaxRuns)
    throw Error("the cuda backend handles at most " + std::to_string(kc::kMaxRuns) + " KV heads per layer");
  runs_.resize(static_cast<size_t>(shape.n_layer * shape.n_head_kv));
}

std::unique_ptr<KvStorage> CudaKvStorage::empty_like() const { return std::make_unique<CudaKvStorage>(shape()); }

std::unique_ptr<KvStorage> CudaKvStorage::clone() const {
  auto copy = std::make_unique<CudaKvStorage>(shape());
  for (size_t i = 0; i < runs_.size(); ++i) {
    const Run& from = runs_[i];
    Run& to = copy->runs_[i];
    copy->set_channels(to, from.k_channels);
    copy->set_offset(to, from.k_offset);
    copy->resize(to, from.len);
    device_copy(to.k.data(), from.k.data(), static_cast<size_t>(from.len) * k_bytes(from));
    device_copy(to.v.data(), from.v.data(), static_cast<size_t>(from.len) * v_bytes());
    device_copy(to.pos.data(), from.pos.data(), static_cast<size_t>(from.len) * sizeof(int32_t));
    to.host_pos = from.host_pos;
    to.len = from.len;
  }
  return copy;
}

std::span<const int32_t> CudaKvStorage::positions(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.host_pos.data(), static_cast<size_t>(r.len)};
}

std::span<const int32_t> CudaKvStorage::key_channels(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_channels.data(), r.k_channels.size()};
}

std::span<const float> CudaKvStorage::key_offset(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_offset.data(), r.k_offset.size()};
}

int64_t CudaKvStorage::k_stride(const Run& r) const {
  return r.k_channels.empty() ? shape().head_dim_k : static_cast<int64_t>(r.k_channels.size());
}
size_t CudaKvStorage::k_bytes(const Run& r) const { return kv_key_row_bytes(shape().k_type, k_stride(r)); }
size_t CudaKvStorage::v_bytes() const { return kv_row_bytes(shape().v_type, shape().head_dim_v); }

void CudaKvStorage::resize(Run& r, int64_t cap) const {
  const int64_t keep = std::min(r.len, cap);
  DeviceBytes k(static_cast<size_t>(cap) * k_bytes(r)), v(static_cast<size_t>(cap) * v_bytes()), pos(static_cast<size_t>(cap) * sizeof(int32_t));
  device_copy(k.data(), r.k.data(), static_cast<size_t>(keep) * k_bytes(r));
  device_copy(v.data(), r.v.data(), static_cast<size_t>(keep) * v_bytes());
  device_copy(pos.data(), r.pos.data(), static_cast<size_t>(keep) * sizeof(int32_t));
  r.k = std::move(k);
  r.v = std::move(v);
  r.pos = std::move(pos);
  r.cap = cap;
  r.len = keep;
  r.host_pos.resize(static_cast<size_t>(keep));
}

void CudaKvStorage::set_capacity(int64_t layer, int64_t head, int64_t cap) { resize(at(layer, head), cap); }

void CudaKvStorage::set_channels(Run& r, std::vector<int32_t> channels) const {
  r.k_channels = std::move(channels);
  r.k_channels_dev = DeviceBytes(r.k_channels.size() * sizeof(int32_t));
  to_device(r.k_channels_dev.data(), r.k_channels.data(), r.k_channels.size() * sizeof(int32_t));
}

void CudaKvStorage::set_offset(Run& r, std::vector<float> offset) const {
  r.k_offset = std::move(offset);
  r.k_offset_dev = DeviceBytes(r.k_offset.size() * sizeof(float));
  to_device(r.k_offset_dev.data(), r.k_offset.data(), r.k_offset.size() * sizeof(float));
}

// A centred run's offset is the per-channel mean of the first keys appended to it when empty
// (as the CPU storage takes it); the rows are on the device, so they are read back once.
void CudaKvStorage::take_offsets(int64_t layer, int64_t n, const float* k) {
  if (!shape().k_centered || n == 0) return;
  const int64_t hkv = shape().n_head_kv, d = shape().head_dim_k;
  std::vector<float> rows;
  for (int64_t h = 0; h < hkv; ++h) {
    Run& r = at(layer, h);
    if (!r.k_channels.empty() || !r.k_offset.empty() || r.len > 0) continue;
    if (rows.empty()) {
      rows.resize(static_cast<size_t>(n * hkv * d));
      to_host(rows.data(), k, rows.size() * sizeof(float));
    }
    std::vector<double> sum(static_cast<size_t>(d), 0.0);
    for (int64_t t = 0; t < n; ++t)
      for (int64_t i = 0; i < d; ++i) sum[static_cast<size_t>(i)] += rows[static_cast<size_t>((t * hkv + h) * d + i)];
    std::vector<float> offset(static_cast<size_t>(d));
    for (int64_t i = 0; i < d; ++i) offset[static_cast<size_t>(i)] = static_cast<float>(sum[static_cast<size_t>(i)] / static_cast<double>(n));
    set_offset(r, std::move(offset));
  }
}

kc::RunTable CudaKvStorage::table(int64_t layer) const {
  kc::RunTable t;
  t.count = static_cast<int32_t>(shape().n_head_kv);
  t.k_type = row_type(shape().k_type);
  t.v_type = row_type(shape().v_type);
  t.head_dim_k = static_cast<int32_t>(shape().head_dim_k);
  t.head_dim_v = static_cast<int32_t>(shape().head_dim_v);
  for (int64_t h = 0; h < shape().n_head_kv; ++h) {
    const Run& r = at(layer, h);
    kc::DeviceRun& d = t.run[h];
    d.k = r.k.data();
    d.v = r.v.data();
    d.pos = r.pos.as<int32_t>();
    d.k_channels = r.k_channels.empty() ? nullptr : r.k_channels_dev.as<const int32_t>();
    d.k_offset = r.k_offset.empty() ? nullptr : r.k_offset_dev.as<const float>();
    d.len = r.len;
    d.k_stride = static_cast<int32_t>(k_stride(r));
  }
  return t;
}

int64_t CudaKvStorage::max_length(int64_t layer) const {
  int64_t longest = 0;
  for (int64_t h = 0; h < shape().n_head_kv; ++h) longest = std::max(longest, at(layer, h).len);
  return longest;
}

void CudaKvStorage::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  if (n <= 0) return;
  take_offsets(layer, n, k);
  pos_scratch_.reserve(static_cast<size_t>(n) * sizeof(int32_t));
  to_device(pos_scratch_.data(), pos, static_cast<size_t>(n) * sizeof(int32_t));
  check(kc::append_rows(table(layer), k, v, pos_scratch_.as<const int32_t>(), n, nullptr), "appending to the KV cache");
  for (int64_t h = 0; h < shape().n_head_kv; ++h) {
    Run& r = at(layer, h);
    r.host_pos.insert(r.host_pos.end(), pos, pos + n);
    r.len += n;
  }
}

// The kept rows are gathered into scratch and copied back: the run keeps its allocation.
void CudaKvStorage::compact(int64_t layer, int64_t head, std::span<const int32_t> keep) {
  Run& r = at(layer, head);
  const int64_t m = static_cast<int64_t>(keep.size());
  if (m == r.len) return;  // strictly ascending within the length: all of them
  DeviceBytes idx(keep.size() * sizeof(int32_t));
  to_device(idx.data(), keep.data(), keep.size() * sizeof(int32_t));
  const size_t kb = k_bytes(r), vb = v_bytes();
  DeviceBytes k(static_cast<size_t>(m) * kb), v(static_cast<size_t>(m) * vb), p(static_cast<size_t>(m) * sizeof(int32_t));
  check(kc::gather_rows_bytes(r.k.data(), idx.as<const int32_t>(), m, kb, k.data(), nullptr), "compacting keys");
  check(kc::gather_rows_bytes(r.v.data(), idx.as<const int32_t>(), m, vb, v.data(), nullptr), "compacting values");
  check(kc::gather_rows_bytes(r.pos.data(), idx.as<const int32_t>(), m, sizeof(int32_t), p.data(), nullptr), "compacting positions");
  device_copy(r.k.data(), k.data(), k.size());
  device_copy(r.v.data(), v.data(), v.size());
  device_copy(r.pos.data(), p.data(), p.size());
  std::vector<int32_t> kept(keep.size());
  for (size_t i = 0; i < keep.size(); ++i) kept[i] = r.host_pos[static_cast<size_t>(keep[i])];
  r.host_pos = std::move(kept);
  r.len = m;
}

void CudaKvStorage::drop_front(int64_t layer, int64_t head, int64_t n) {
  Run& r = at(layer, head);
  if (n <= 0) return;
  std::vector<int32_t> keep(static_cast<size_t>(r.len - n));
  for (size_t i = 0; i < keep.size(); ++i) keep[i] = static_cast<int32_t>(n + static_cast<int64_t>(i));
  compact(layer, head, keep);
}

void CudaKvStorage::truncate(int64_t layer, int64_t head, int64_t len) {
  Run& r = at(layer, head);
  r.len = len;
  r.host_pos.resize(static_cast<size_t>(len));
}

void CudaKvStorage::write_keys(Run& r, int64_t first, int64_t n, const float* stored) const {
  std::vector<uint8_t> bytes;
  encode_rows(stored, n, k_stride(r), shape().k_type, bytes);
  to_device(static_cast<uint8_t*>(r.k.data()) + static_cast<size_t>(first) * k_bytes(r), bytes.data(), bytes.size());
}

void CudaKvStorage::write_values(Run& r, int64_t first, int64_t n, const float* values) const {
  std::vector<uint8_t> bytes;
  encode_rows(values, n, shape().head_dim_v, shape().v_type, bytes);
  to_device(static_cast<uint8_t*>(r.v.data()) + static_cast<size_t>(first) * v_bytes(), bytes.data(), bytes.size());
}

void CudaKvStorage::rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                                 const int32_t* pos) {
  Run& r = at(layer, head);
  const int64_t d = shape().head_dim_k, ks = k_stride(r);
  if (keys) {  // as append stores them: the run's channels, its offset taken off
    std::vector<float> stored(static_cast<size_t>(n * ks));
    for (int64_t j = 0; j < n; ++j)
      for (int64_t i = 0; i < ks; ++i) {
        const int64_t c = r.k_channels.empty() ? i : r.k_channels[static_cast<size_t>(i)];
        stored[static_cast<size_t>(j * ks + i)] =
            keys[j * d + c] - (r.k_offset.empty() ? 0.0f : r.k_offset[static_cast<size_t>(c)]);
      }
    write_keys(r, first, n, stored.data());
  }
  if (values) write_values(r, first, n, values);
  if (pos) {
    std::copy_n(pos, n, r.host_pos.begin() + first);
    to_device(r.pos.as<int32_t>() + first, pos, static_cast<size_t>(n) * sizeof(int32_t));
  }
}

// Keys read back whole (offset added back), the kept channels stored as they are: exact for the
// float types. Pruned runs are stored without an offset, as on the CPU.
void CudaKvStorage::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  Run& r = at(layer, head);
  const int64_t d = shape().head_dim_k, n = static_cast<int64_t>(channels.size()), len = r.len;
  const KvRun before = host_run(layer, head);
  std::vector<float> row(static_cast<size_t>(d)), kept(static_cast<size_t>(len * n));
  for (int64_t j = 0; j < len; ++j) {
    kernels::key_row_to_f32(before, j, d, row.data());
    for (int64_t i = 0; i < n; ++i) kept[static_cast<size_t>(j * n + i)] = row[static_cast<size_t>(channels[static_cast<size_t>(i)])];
  }
  set_offset(r, {});
  set_channels(r, n == d ? std::vector<int32_t>{} : std::vector<int32_t>(channels.begin(), channels.end()));
  r.k = DeviceBytes(static_cast<size_t>(r.cap) * k_bytes(r));
  write_keys(r, 0, len, kept.data());
}

void CudaKvStorage::assign(int64_t layer, int64_t head, const KvRun& rows) {
  Run& r = at(layer, head);
  r.len = 0;
  r.host_pos.clear();
  set_offset(r, rows.k_offset ? std::vector<float>(rows.k_offset, rows.k_offset + shape().head_dim_k) : std::vector<float>{});
  set_channels(r, rows.k_channels ? std::vector<int32_t>(rows.k_channels, rows.k_channels + rows.k_stride) : std::vector<int32_t>{});
  resize(r, std::max(r.cap, rows.len));  // rows of the (maybe new) key width
  if (rows.len == 0) return;
  to_device(r.k.data(), rows.k, static_cast<size_t>(rows.len) * k_bytes(r));
  to_device(r.v.data(), rows.v, static_cast<size_t>(rows.len) * v_bytes());
  to_device(r.pos.data(), rows.pos, static_cast<size_t>(rows.len) * sizeof(int32_t));
  r.host_pos.assign(rows.pos, rows.pos + rows.len);
  r.len = rows.len;
}

KvRun CudaKvStorage::host_run(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  r.staged_k.resize(static_cast<size_t>(r.len) * k_bytes(r));
  r.staged_v.resize(static_cast<size_t>(r.len) * v_bytes());
  to_host(r.staged_k.data(), r.k.data(), r.staged_k.size());
  to_host(r.staged_v.data(), r.v.data(), r.staged_v.size());
  KvRun out;
  out.k = r.staged_k.data();
  out.v = r.staged_v.data();
  out.pos = r.host_pos.data();
  out.len = r.len;
  out.k_stride = k_stride(r);
  out.v_stride = shape().head_dim_v;
  out.k_type = shape().k_type;
  out.v_type = shape().v_type;
  out.k_channels = r.k_channels.empty() ? nullptr : r.k_channels.data();
  out.k_offset = r.k_offset.empty() ? nullptr : r.k_offset.data();
  return out;
}

size_t CudaKvStorage::bytes_held() const {
  size_t total = 0;
  for (const Run& r : runs_) total += r.k.size() + r.v.size() + r.pos.size();
  return total;
}

}  // namespace kvsqueeze::backend::cuda::inline KVSQ_CUDA_FLAVOR
