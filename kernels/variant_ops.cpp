#include "kernels/gcc_intrinsics_warnings.h"  // first: before any intrinsics header
// This variant's table of entry points: after the partial link (cmake/kernel_variants.cmake)
// the only symbol a variant exports.
#include "kernels/attention.h"
#include "kernels/dequantize.h"
#include "kernels/divergence.h"
#include "kernels/kernel_ops.h"
#include "kernels/kv_rows.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant_blocks.h"
#include "kernels/variant.h"

namespace k = kvsqueeze::kernels::KVSQ_VARIANT;

extern "C" const kvsqueeze::kernels::KernelOps KVSQ_VARIANT_OPS = {
    .matmul = &k::matmul,
    .set_exact_activations = &k::set_exact_activations,
    .get_row = &k::get_row,
    .dequantize_row = &k::dequantize_row,
    .attention = &k::attention,
    .attention_probabilities = &k::attention_probabilities,
    .row_to_f32 = &k::row_to_f32,
    .dot_row = &k::dot_row,
    .rms_norm = &k::rms_norm,
    .rms_norm_rows = &k::rms_norm_rows,
    .rope_tables = &k::rope_tables,
    .rope_apply = &k::rope_apply,
    .silu_mul = &k::silu_mul,
    .gelu_tanh_mul = &k::gelu_tanh_mul,
    .add_inplace = &k::add_inplace,
    .scale_inplace = &k::scale_inplace,
    .softmax = &k::softmax,
    .log_sum_exp = &k::log_sum_exp,
    .kl_divergence_logits = &k::kl_divergence_logits,
    .dequantize_row_scalar = &k::detail::dequantize_row_scalar,
    .matmul_portable = &k::detail::matmul_portable,
};
