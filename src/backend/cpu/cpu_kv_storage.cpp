// The CPU backend's KV storage: the row layout the attention kernels read in place (K, V and
// positions of a run in their own SlotBuffers, row i at i x row bytes). Caches holding a KIVI2
// type add per run the KIVI2 key groups' parameters and a recent window of f16 rows.
#include "backend/cpu/cpu_kv_storage.h"

#include <algorithm>
#include <cstring>

#include "kernels/fp16.h"
#include "kernels/hadamard.h"
#include "kernels/kivi_quantize.h"
#include "kernels/kv_quantize.h"
#include "kernels/kv_rows.h"

namespace kvsqueeze::backend {

namespace {
// Writes d floats as one row of `type` (quantized types: whole blocks, d a multiple of 32;
// KIVI2: a value row, keys are quantized a group at a time).
void encode_row(const float* src, int64_t d, KvType type, uint8_t* dst) {
  switch (type) {
    case KvType::F32: std::memcpy(dst, src, static_cast<size_t>(d) * 4); return;
    case KvType::F16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < d; ++i) out[i] = kernels::fp32_to_fp16(src[i]);
      return;
    }
    case KvType::BF16: {
      auto* out = reinterpret_cast<uint16_t*>(dst);
      for (int64_t i = 0; i < d; ++i) out[i] = kernels::fp32_to_bf16(src[i]);
      return;
    }
    case KvType::Q8_0: kernels::quantize_row_q8_0(src, dst, d); return;
    case KvType::Q4_0: kernels::quantize_row_q4_0(src, dst, d); return;
    case KvType::KIVI2: kernels::quantize_row_kivi2(src, dst, d); return;
  }
}

size_t rows_bytes(int64_t n, size_t row) { return static_cast<size_t>(n) * row; }
}  // namespace

CpuKvStorage::CpuKvStorage(const KvCacheShape& shape) : KvStorage(shape) {
  runs_.resize(static_cast<size_t>(shape.n_layer * shape.n_head_kv));
}

std::unique_ptr<KvStorage> CpuKvStorage::empty_like() const { return std::make_unique<CpuKvStorage>(shape()); }

std::unique_ptr<KvStorage> CpuKvStorage::clone() const {
  auto copy = std::make_unique<CpuKvStorage>(shape());
  for (size_t i = 0; i < runs_.size(); ++i) {
    Run& to = copy->runs_[i];
    to.k_channels = runs_[i].k_channels;
    to.k_offset = runs_[i].k_offset;
    copy->resize(to, runs_[i].len);
    const KvRun from = view(runs_[i]);
    if (from.len > 0) copy->assign(static_cast<int64_t>(i) / shape().n_head_kv, static_cast<int64_t>(i) % shape().n_head_kv, from);
  }
  return copy;
}

std::span<const int32_t> CpuKvStorage::positions(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.positions(), static_cast<size_t>(r.len)};
}

std::span<const int32_t> CpuKvStorage::key_channels(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_channels.data(), r.k_channels.size()};
}

std::span<const float> CpuKvStorage::key_offset(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  return {r.k_offset.data(), r.k_offset.size()};
}

int64_t CpuKvStorage::k_stride(const Run& r) const {
  return r.k_channels.empty() ? shape().head_dim_k : static_cast<int64_t>(r.k_channels.size());
}

size_t CpuKvStorage::k_row_bytes(const Run& r) const { return kv_key_row_bytes(shape().k_type, k_stride(r)); }

// Reallocates to `cap` slots. Windowed runs allocate the group parameters of every full group
// cap slots can hold and a window for the slots that can still wait (at most kKiviGroup; at
// capacity == length, exactly those waiting); a run shrunk below its quantized slots is rebuilt
// (its last group re-formed).
void CpuKvStorage::resize(Run& r, int64_t cap) const {
  StoredRows keep;
  const bool regroup = windowed() && cap < r.len && cap < r.recent_first;
  if (regroup) keep = read_stored(r);
  Run next;
  next.k_channels = r.k_channels;
  next.k_offset = r.k_offset;
  const size_t kb = k_row_bytes(r), vb = v_row_bytes();
  next.k = SlotBuffer(rows_bytes(cap, kb));
  next.v = SlotBuffer(rows_bytes(cap, vb));
  next.pos = SlotBuffer(rows_bytes(cap, sizeof(int32_t)));
  if (windowed()) {
    if (shape().k_type == KvType::KIVI2) next.k_groups = SlotBuffer(rows_bytes(cap / kKiviGroup, kivi_group_bytes(k_stride(r))));
  }
  next.cap = cap;
  if (regroup) {
    std::vector<int32_t> slots(static_cast<size_t>(cap));
    for (int64_t i = 0; i < cap; ++i) slots[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    r = std::move(next);
    rebuild(r, keep, slots);
    return;
  }
  next.len = std::min(r.len, cap);
  const int64_t quantized = windowed() ? std::min(r.recent_first, next.len) : next.len;
  next.recent_first = windowed() ? quantized : 0;
  if (windowed()) grow_window(next, 0);
  if (next.len > 0) {
    std::memcpy(next.k.data(), r.k.data(), rows_bytes(quantized, kb));
    std::memcpy(next.v.data(), r.v.data(), rows_bytes(quantized, vb));
    std::memcpy(next.pos.data(), r.pos.data(), rows_bytes(next.len, sizeof(int32_t)));
    if (shape().k_type == KvType::KIVI2 && quantized >= kKiviGroup)
      std::memcpy(next.k_groups.data(), r.k_groups.data(), rows_bytes(quantized / kKiviGroup, kivi_group_bytes(k_stride(r))));
    const int64_t recent = next.len - quantized;
    if (recent > 0) {
      std::memcpy(next.k_recent.data(), r.k_recent.data(), rows_bytes(recent, static_cast<size_t>(k_stride(r)) * 2));
      std::memcpy(next.v_recent.data(), r.v_recent.data(), rows_bytes(recent, static_cast<size_t>(shape().head_dim_v) * 2));
    }
  }
  r = std::move(next);
}

CpuKvStorage::Run& CpuKvStorage::writable(int64_t layer, int64_t head) {
  Run& r = at(layer, head);
  if (r.k.shared() || r.v.shared() || r.pos.shared() || r.k_groups.shared() || r.k_recent.shared() || r.v_recent.shared())
    resize(r, r.cap);  // fresh buffers holding the same rows; the reader keeps the old ones
  return r;
}

void CpuKvStorage::set_capacity(int64_t layer, int64_t head, int64_t cap) { resize(at(layer, head), cap); }

// A key of head_dim_k floats as stored: a channel-pruned run keeps only its channels; a full
// one takes its offset off (centred) and is rotated (rotated caches).
const float* CpuKvStorage::stored_key(const Run& r, const float* src, std::vector<float>& scratch) const {
  const int64_t d = shape().head_dim_k;
  if (r.k_channels.empty() && r.k_offset.empty() && !shape().k_rotated) return src;
  scratch.clear();
  if (!r.k_channels.empty()) {
    for (int32_t c : r.k_channels) scratch.push_back(src[c]);
    return scratch.data();
  }
  scratch.assign(src, src + d);
  for (size_t i = 0; i < r.k_offset.size(); ++i) scratch[i] -= r.k_offset[i];
  if (shape().k_rotated) kernels::hadamard_rotate(scratch.data(), d);
  return scratch.data();
}

// A value of head_dim_v floats as stored: rotated first when the cache rotates values.
const float* CpuKvStorage::stored_value(const float* src, std::vector<float>& scratch) const {
  if (!shape().v_rotated) return src;
  scratch.assign(src, src + shape().head_dim_v);
  kernels::hadamard_rotate(scratch.data(), shape().head_dim_v);
  return scratch.data();
}

// A centred run's offset: the per-channel mean of the first keys it stores (n rows, `stride`
// floats apart), taken once, when they are appended to the empty run. A run that holds keys
// stored without an offset keeps storing them so.
void CpuKvStorage::take_offset(Run& r, const float* k, int64_t n, int64_t stride) const {
  if (!shape().k_centered || !r.k_channels.empty() || !r.k_offset.empty() || r.len > 0 || n == 0) return;
  const int64_t d = shape().head_dim_k;
  std::vector<double> sum(static_cast<size_t>(d), 0.0);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t i = 0; i < d; ++i) sum[static_cast<size_t>(i)] += k[t * stride + i];
  r.k_offset.resize(static_cast<size_t>(d));
  for (int64_t i = 0; i < d; ++i) r.k_offset[static_cast<size_t>(i)] = static_cast<float>(sum[static_cast<size_t>(i)] / static_cast<double>(n));
}

int64_t CpuKvStorage::window_rows(const Run& r) const {
  return static_cast<int64_t>(r.v_recent.size() / (static_cast<size_t>(shape().head_dim_v) * 2));
}

// Reallocates the window to the slots that can still wait, min(kKiviGroup, cap - recent_first)
// (its size at all times), keeping its first `keep` rows.
void CpuKvStorage::grow_window(Run& r, int64_t keep) const {
  const int64_t rows = std::min(kKiviGroup, r.cap - r.recent_first);
  const size_t kb = static_cast<size_t>(k_stride(r)) * 2, vb = static_cast<size_t>(shape().head_dim_v) * 2;
  SlotBuffer k(rows_bytes(rows, kb)), v(rows_bytes(rows, vb));
  if (keep > 0) {
    std::memcpy(k.data(), r.k_recent.data(), rows_bytes(keep, kb));
    std::memcpy(v.data(), r.v_recent.data(), rows_bytes(keep, vb));
  }
  r.k_recent = std::move(k);
  r.v_recent = std::move(v);
}

void CpuKvStorage::push_stored(Run& r, const float* k, const float* v, int32_t pos) const {
  const int64_t dk = k_stride(r), dv = shape().head_dim_v, w = r.len - r.recent_first;
  if (w >= window_rows(r)) grow_window(r, w);  // a rebuild can leave more slots waiting than before
  encode_row(k, dk, KvType::F16, r.k_recent.data() + rows_bytes(w, static_cast<size_t>(dk) * 2));
  encode_row(v, dv, KvType::F16, r.v_recent.data() + rows_bytes(w, static_cast<size_t>(dv) * 2));
  r.positions()[r.len] = pos;
  ++r.len;
  if (r.len - r.recent_first == kKiviGroup) flush_window(r);
}

// The full window becomes quantized slots: KIVI2 keys as one group (per channel), other keys
// and every value row by row.
void CpuKvStorage::flush_window(Run& r) const {
  const int64_t dk = k_stride(r), dv = shape().head_dim_v;
  std::vector<float> k(static_cast<size_t>(kKiviGroup * dk)), v(static_cast<size_t>(kKiviGroup * dv));
  for (int64_t t = 0; t < kKiviGroup; ++t) {
    kernels::f16_row_to_f32(reinterpret_cast<const uint16_t*>(r.k_recent.data()) + t * dk, dk, k.data() + t * dk);
    kernels::f16_row_to_f32(reinterpret_cast<const uint16_t*>(r.v_recent.data()) + t * dv, dv, v.data() + t * dv);
  }
  const size_t kb = k_row_bytes(r), vb = v_row_bytes();
  if (shape().k_type == KvType::KIVI2)
    kernels::quantize_group_kivi2(k.data(), dk, r.k_groups.data() + rows_bytes(r.recent_first / kKiviGroup, kivi_group_bytes(dk)),
                                  r.k.data() + rows_bytes(r.recent_first, kb), static_cast<int64_t>(kb));
  else
    for (int64_t t = 0; t < kKiviGroup; ++t) encode_row(k.data() + t * dk, dk, shape().k_type, r.k.data() + rows_bytes(r.recent_first + t, kb));
  for (int64_t t = 0; t < kKiviGroup; ++t) encode_row(v.data() + t * dv, dv, shape().v_type, r.v.data() + rows_bytes(r.recent_first + t, vb));
  r.recent_first += kKiviGroup;
  // The window holds what can still wait, min(kKiviGroup, cap - recent_first): near capacity it
  // shrinks, so a run at capacity == length holds exactly its waiting slots.
  if (window_rows(r) > std::min(kKiviGroup, r.cap - r.recent_first)) grow_window(r, 0);
}

CpuKvStorage::StoredRows CpuKvStorage::read_stored(const Run& r) const {
  const KvRun run = view(r);
  const int64_t dk = run.k_stride, dv = run.v_stride;
  StoredRows out;
  out.k.resize(static_cast<size_t>(r.len * dk));
  out.v.resize(static_cast<size_t>(r.len * dv));
  out.pos.assign(r.positions(), r.positions() + r.len);
  for (int64_t j = 0; j < r.len; ++j) {
    kernels::stored_key_row(run, j, out.k.data() + j * dk);
    kernels::stored_value_row(run, j, out.v.data() + j * dv);
  }
  return out;
}

// Empties a windowed run and appends the listed slots of `rows` again: full groups are
// quantized anew (compaction moves slots between groups), the rest stays in the window.
void CpuKvStorage::rebuild(Run& r, const StoredRows& rows, std::span<const int32_t> slots) const {
  const int64_t dk = k_stride(r), dv = shape().head_dim_v;
  r.len = 0;
  r.recent_first = 0;
  for (int32_t s : slots) push_stored(r, rows.k.data() + s * dk, rows.v.data() + s * dv, rows.pos[static_cast<size_t>(s)]);
}

void CpuKvStorage::append(int64_t layer, int64_t n, const float* k, const float* v, const int32_t* pos) {
  const int64_t dk = shape().head_dim_k, dv = shape().head_dim_v, hkv = shape().n_head_kv;
  std::vector<float> k_scratch, v_scratch;
  for (int64_t h = 0; h < hkv; ++h) {
    // Plain runs only write past their length, which no lent view covers (every operation that
    // shortens a run copies lent rows first); windowed runs rewrite their window in place.
    Run& r = windowed() ? writable(layer, h) : at(layer, h);
    take_offset(r, k + h * dk, n, hkv * dk);
    for (int64_t t = 0; t < n; ++t) {
      const float* key = stored_key(r, k + (t * hkv + h) * dk, k_scratch);
      const float* value = stored_value(v + (t * hkv + h) * dv, v_scratch);
      if (windowed()) {
        push_stored(r, key, value, pos[t]);
        continue;
      }
      encode_row(key, k_stride(r), shape().k_type, r.k.data() + rows_bytes(r.len, k_row_bytes(r)));
      encode_row(value, dv, shape().v_type, r.v.data() + rows_bytes(r.len, v_row_bytes()));
      r.positions()[r.len] = pos[t];
      ++r.len;
    }
  }
}

void CpuKvStorage::compact(int64_t layer, int64_t head, std::span<const int32_t> keep) {
  Run& r = writable(layer, head);
  if (windowed()) return rebuild(r, read_stored(r), keep);
  const size_t kb = k_row_bytes(r), vb = v_row_bytes();
  int64_t out = 0;
  for (int32_t slot : keep) {
    if (slot != out) {  // rows only move down, so copying forward in place is safe
      std::memmove(r.k.data() + rows_bytes(out, kb), r.k.data() + rows_bytes(slot, kb), kb);
      std::memmove(r.v.data() + rows_bytes(out, vb), r.v.data() + rows_bytes(slot, vb), vb);
      r.positions()[out] = r.positions()[slot];
    }
    ++out;
  }
  r.len = out;
}

void CpuKvStorage::drop_front(int64_t layer, int64_t head, int64_t n) {
  Run& r = writable(layer, head);
  if (n <= 0) return;
  const int64_t keep = r.len - n;
  if (windowed()) {
    std::vector<int32_t> slots(static_cast<size_t>(keep));
    for (int64_t i = 0; i < keep; ++i) slots[static_cast<size_t>(i)] = static_cast<int32_t>(n + i);
    return rebuild(r, read_stored(r), slots);
  }
  std::memmove(r.k.data(), r.k.data() + rows_bytes(n, k_row_bytes(r)), rows_bytes(keep, k_row_bytes(r)));
  std::memmove(r.v.data(), r.v.data() + rows_bytes(n, v_row_bytes()), rows_bytes(keep, v_row_bytes()));
  std::memmove(r.positions(), r.positions() + n, rows_bytes(keep, sizeof(int32_t)));
  r.len = keep;
}

void CpuKvStorage::truncate(int64_t layer, int64_t head, int64_t len) {
  Run& r = writable(layer, head);
  if (!windowed() || len >= r.recent_first) {
    r.len = len;
    return;
  }
  std::vector<int32_t> slots(static_cast<size_t>(len));  // the last kept group no longer full
  for (int64_t i = 0; i < len; ++i) slots[static_cast<size_t>(i)] = static_cast<int32_t>(i);
  rebuild(r, read_stored(r), slots);
}

void CpuKvStorage::rewrite_rows(int64_t layer, int64_t head, int64_t first, int64_t n, const float* keys, const float* values,
                                const int32_t* pos) {
  Run& r = writable(layer, head);
  std::vector<float> k_scratch, v_scratch;
  if (windowed()) {  // groups are quantized together: rewrite the stored rows, then regroup
    StoredRows rows = read_stored(r);
    const int64_t dk = k_stride(r), dv = shape().head_dim_v;
    for (int64_t j = first; j < first + n; ++j) {
      if (keys) {
        const float* key = stored_key(r, keys + (j - first) * shape().head_dim_k, k_scratch);
        std::copy(key, key + dk, rows.k.data() + j * dk);
      }
      if (values) {
        const float* value = stored_value(values + (j - first) * dv, v_scratch);
        std::copy(value, value + dv, rows.v.data() + j * dv);
      }
      if (pos) rows.pos[static_cast<size_t>(j)] = pos[j - first];
    }
    std::vector<int32_t> slots(static_cast<size_t>(r.len));
    for (int64_t i = 0; i < r.len; ++i) slots[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    return rebuild(r, rows, slots);
  }
  for (int64_t j = first; j < first + n; ++j) {
    if (keys)
      encode_row(stored_key(r, keys + (j - first) * shape().head_dim_k, k_scratch), k_stride(r), shape().k_type,
                 r.k.data() + rows_bytes(j, k_row_bytes(r)));
    if (values)
      encode_row(stored_value(values + (j - first) * shape().head_dim_v, v_scratch), shape().head_dim_v, shape().v_type,
                 r.v.data() + rows_bytes(j, v_row_bytes()));
    if (pos) r.positions()[j] = pos[j - first];
  }
}

void CpuKvStorage::keep_key_channels(int64_t layer, int64_t head, std::span<const int32_t> channels) {
  Run& r = at(layer, head);
  // Each key read back as it was given (rotated back, offset added), its kept channels gathered
  // and stored as they are: exact for the float types; quantized keys are quantized anew over
  // the kept channels (whole blocks, KvCache checks). A rotation mixes all channels, so pruned
  // runs are stored neither rotated nor centred.
  const int64_t d = shape().head_dim_k, n = static_cast<int64_t>(channels.size()), len = r.len;
  const KvRun before = view(r);
  std::vector<float> row(static_cast<size_t>(d)), kept(static_cast<size_t>(len * n));
  for (int64_t j = 0; j < len; ++j) {
    kernels::key_row_to_f32(before, j, d, row.data());
    for (int64_t i = 0; i < n; ++i) kept[static_cast<size_t>(j * n + i)] = row[static_cast<size_t>(channels[static_cast<size_t>(i)])];
  }
  StoredRows rows;
  if (windowed()) rows = read_stored(r);
  r.k_offset.clear();
  r.k_channels.assign(channels.begin(), channels.end());
  if (r.k_channels.size() == static_cast<size_t>(d)) r.k_channels.clear();  // all of them
  if (windowed()) {  // narrower key rows, window and groups; every group formed anew
    rows.k = std::move(kept);
    r.len = 0;
    resize(r, r.cap);
    std::vector<int32_t> slots(static_cast<size_t>(len));
    for (int64_t i = 0; i < len; ++i) slots[static_cast<size_t>(i)] = static_cast<int32_t>(i);
    return rebuild(r, rows, slots);
  }
  SlotBuffer k(rows_bytes(r.cap, k_row_bytes(r)));
  for (int64_t j = 0; j < len; ++j) encode_row(kept.data() + j * n, n, shape().k_type, k.data() + rows_bytes(j, k_row_bytes(r)));
  r.k = std::move(k);
}

void CpuKvStorage::assign(int64_t layer, int64_t head, const KvRun& rows) {
  Run& r = writable(layer, head);
  r.len = 0;
  r.recent_first = 0;
  r.k_offset.assign(rows.k_offset, rows.k_offset ? rows.k_offset + shape().head_dim_k : rows.k_offset);
  const std::span<const int32_t> channels(rows.k_channels, rows.k_channels ? static_cast<size_t>(rows.k_stride) : 0);
  if (!std::equal(channels.begin(), channels.end(), r.k_channels.begin(), r.k_channels.end())) {
    r.k_channels.assign(channels.begin(), channels.end());
    resize(r, r.cap);  // rows of the new width
  }
  if (rows.len > r.cap) resize(r, rows.len);
  const int64_t quantized = std::min(rows.len, rows.recent_first);
  if (rows.len > 0) {
    std::memcpy(r.k.data(), rows.k, rows_bytes(quantized, k_row_bytes(r)));
    std::memcpy(r.v.data(), rows.v, rows_bytes(quantized, v_row_bytes()));
    std::memcpy(r.pos.data(), rows.pos, rows_bytes(rows.len, sizeof(int32_t)));
  }
  r.len = quantized;
  r.recent_first = quantized;
  if (!windowed()) return;
  grow_window(r, 0);
  if (shape().k_type == KvType::KIVI2 && quantized > 0)
    std::memcpy(r.k_groups.data(), rows.k_groups, rows_bytes(quantized / kKiviGroup, kivi_group_bytes(k_stride(r))));
  const int64_t dk = k_stride(r), dv = shape().head_dim_v;
  std::vector<float> k(static_cast<size_t>(dk)), v(static_cast<size_t>(dv));
  for (int64_t j = quantized; j < rows.len; ++j) {  // the window, through push_stored (f16 stays f16)
    kernels::f16_row_to_f32(rows.k_recent + (j - quantized) * dk, dk, k.data());
    kernels::f16_row_to_f32(rows.v_recent + (j - quantized) * dv, dv, v.data());
    push_stored(r, k.data(), v.data(), rows.pos[j]);
  }
}

KvRun CpuKvStorage::view(const Run& r) const {
  KvRun out;
  out.k = r.k.data();
  out.v = r.v.data();
  out.pos = r.positions();
  out.len = r.len;
  out.k_stride = k_stride(r);
  out.k_channels = r.k_channels.empty() ? nullptr : r.k_channels.data();
  out.v_stride = shape().head_dim_v;
  out.k_type = shape().k_type;
  out.v_type = shape().v_type;
  out.k_rotated = rotated(r);
  out.k_offset = r.k_offset.empty() ? nullptr : r.k_offset.data();
  out.v_rotated = shape().v_rotated;
  if (windowed()) {
    out.k_groups = r.k_groups.data();
    out.recent_first = r.recent_first;
    out.k_recent = reinterpret_cast<const uint16_t*>(r.k_recent.data());
    out.v_recent = reinterpret_cast<const uint16_t*>(r.v_recent.data());
  }
  return out;
}

KvRun CpuKvStorage::host_run(int64_t layer, int64_t head) const { return view(at(layer, head)); }

LentRun CpuKvStorage::lend(int64_t layer, int64_t head) const {
  const Run& r = at(layer, head);
  // The buffers, and copies of the small per-run vectors (the run may replace them in place).
  struct Owners {
    std::shared_ptr<const void> k, v, pos, k_groups, k_recent, v_recent;
    std::vector<int32_t> k_channels;
    std::vector<float> k_offset;
  };
  auto owners = std::make_shared<Owners>(
      Owners{r.k.share(), r.v.share(), r.pos.share(), r.k_groups.share(), r.k_recent.share(), r.v_recent.share(), r.k_channels, r.k_offset});
  KvRun rows = view(r);
  rows.k_channels = owners->k_channels.empty() ? nullptr : owners->k_channels.data();
  rows.k_offset = owners->k_offset.empty() ? nullptr : owners->k_offset.data();
  return {rows, std::move(owners)};
}

size_t CpuKvStorage::bytes_held() const {
  size_t total = 0;
  for (const auto& r : runs_) total += r.k.size() + r.v.size() + r.pos.size() + r.k_groups.size() + r.k_recent.size() + r.v_recent.size();
  return total;
}

}  // namespace kvsqueeze::backend
