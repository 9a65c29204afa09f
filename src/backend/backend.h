#pragma once
// The backend seam: the operations the forward pass needs, on memory the backend owns.
// Activations are Buffers and weights are named by (layer, Matrix | Vector), so that a device
// backend can keep both on its device; the KV cache's runs live in a KvStorage the backend
// creates (src/backend/kv_storage.h) and are reached through the KvCache that owns it.
// Only src/backend/<device>/ knows how the memory is laid out or which kernels run on it.
#include <cstdint>
#include <functional>
#include <memory>

#include "kvsqueeze/attention_probabilities.h"
#include "kvsqueeze/device.h"

namespace kvsqueeze {

class KvCache;
struct KvCacheShape;
class Model;

namespace backend {

class KvStorage;

// Row-major floats the backend owns (host or device memory). Code above the seam holds
// buffers and passes them to operations; only the backend reads or writes their contents.
class Buffer {
 public:
  virtual ~Buffer() = default;
};

// A layer's weight matrices and vectors, by name (the backend holds the tensors).
enum class Matrix { Q, K, V, O, Gate, Up, Down };
enum class Vector { AttnNorm, FfnNorm, QNorm, KNorm, PostAttnNorm, PostFfwNorm, BiasQ, BiasK, BiasV };

// The attention's shape and the probabilities a press asked for (StatsRequest), computed with it.
using kvsqueeze::AttentionShape;
using kvsqueeze::ProbabilityRequest;

class Backend {
 public:
  virtual ~Backend() = default;
  virtual Device device() const = 0;
  virtual void set_threads(int n) = 0;

  // A buffer of `floats` floats, contents undefined.
  virtual std::unique_ptr<Buffer> buffer(int64_t floats) = 0;
  // dst[0, n) = src[offset, offset + n) (statistics copy activations out with this).
  virtual void read(const Buffer& src, int64_t offset, int64_t n, float* dst) const = 0;
  // The floats of `b` from `offset` on, as a buffer that shares b's memory (one sequence's rows of
  // a batched step). It must not outlive b.
  virtual std::unique_ptr<Buffer> view(Buffer& b, int64_t offset) = 0;
  // out row i = x row rows[i] (host indices), rows of `width` floats, for i < count.
  virtual void gather_rows(const Buffer& x, const int64_t* rows, int64_t count, int64_t width, Buffer& out) = 0;

  // x (n rows of n_embd) = the embeddings of token ids[0, n) (host), times the model's scale.
  virtual void embed(const int32_t* ids, int64_t n, Buffer& x) = 0;
  // out = RMS norm of `rows` rows of `width` floats of x, times vector `w` of `layer`. out may be x.
  virtual void rms_norm(const Buffer& x, int64_t rows, int64_t width, int64_t layer, Vector w, Buffer& out) = 0;
  // y (n rows) = x (n rows) times matrix `m` of `layer`, transposed (any GGUF weight type).
  // The first `decode_rows` rows are decode tokens, the others prompt tokens, computed apart so that
  // a row's numbers never depend on the rows beside it: a batch of decoding sequences and prompt
  // chunks gives each sequence, to the bit, what it gets alone (the CPU kernels; a GPU's GEMMs need not).
  virtual void matmul(int64_t layer, Matrix m, const Buffer& x, int64_t n, Buffer& y, int64_t decode_rows) = 0;
  // Adds bias `b` of `layer` to each of x's n rows; nothing when the model has none.
  virtual void add_bias(int64_t layer, Vector b, int64_t n, Buffer& x) = 0;
  // RoPE cos/sin tables (n rows of head_dim_k / 2) of positions pos[0, n) (host), with the
  // frequencies of sliding-window or of full-attention layers (base and scaling included).
  virtual void rope_tables(const int32_t* pos, int64_t n, bool sliding, Buffer& cos, Buffer& sin) = 0;
  // Rotates every head vector (head_dim_k floats) of x's n rows of `heads` heads by its row's tables.
  virtual void rope(Buffer& x, int64_t n, int64_t heads, const Buffer& cos, const Buffer& sin) = 0;
  // gate = act(gate) * up over n floats, act the model's (SiLU or tanh GELU).
  virtual void gated_activation(Buffer& gate, const Buffer& up, int64_t n) = 0;
  // x += y over n floats.
  virtual void add(Buffer& x, const Buffer& y, int64_t n) = 0;

  // Empty runs (no capacity) of a KV cache of `shape` in this backend's memory, for a KvCache to own.
  virtual std::unique_ptr<KvStorage> kv_storage(const KvCacheShape& shape) = 0;
  // Appends n tokens' keys and values (rows of n_head_kv x head dim) at positions pos (host)
  // to every run of `layer`.
  virtual void append_kv(KvCache& cache, int64_t layer, int64_t n, const Buffer& k, const Buffer& v, const int32_t* pos) = 0;
  // out (n rows of n_head x head_dim_v) = attention of q's n queries at positions pos (host)
  // over the runs of `layer` (the chunk appended already; ragged: each run its own length).
  // With a request, `probs` receives the probabilities it asks for.
  virtual void attention(const AttentionShape& shape, const Buffer& q, const int32_t* pos, int64_t n, const KvCache& cache,
                         int64_t layer, Buffer& out, const ProbabilityRequest& request, Probabilities* probs) = 0;

  // Host logits (rows x n_vocab) of x's rows [first, first + rows): the output norm, then the LM head
  // (the first `decode_rows` of them decode rows, as in matmul).
  virtual void logits(const Buffer& x, int64_t first, int64_t rows, float* out, int64_t decode_rows) = 0;
};

// The backend of `device` for a loaded model; throws kvsqueeze::Error for a device this build lacks.
std::unique_ptr<Backend> make_backend(Device device, const Model& model);

// A device's backend as a factory. The CUDA backend is the built-in one for Device::Cuda when
// this build has it; a test may put another in its place (the CUDA backend compiled for the CPU
// emulation of CUDA, tests/gpu/), which then answers device_available and make_* for the device.
struct BackendFactory {
  std::function<bool()> available;
  std::function<std::unique_ptr<Backend>(const Model&)> make;
  std::function<std::unique_ptr<KvStorage>(const KvCacheShape&)> storage;
};
void override_backend(Device device, BackendFactory factory);

}  // namespace backend
}  // namespace kvsqueeze
