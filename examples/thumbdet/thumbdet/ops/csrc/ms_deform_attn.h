// Multi-scale deformable attention: shared declarations and input checks for the kernels.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>

#include <tuple>

namespace thumbdet {

// Shapes: value (N, S, M, D), spatial_shapes (L, 2) int64 (H, W), level_start_index (L,) int64,
// sampling_locations (N, Lq, M, L, P, 2) normalised (x, y), attention_weights (N, Lq, M, L, P).
// Returns (N, Lq, M * D).
at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights);

// Returns (grad_value, grad_sampling_locations, grad_attention_weights).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights);

// Checks shared by every kernel; the Python entry point already checked the values (areas), so
// this guards the raw operator against crashes: ranks, sizes, dtypes, devices, contiguity.
inline void check_ms_deform_attn_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                                        const at::Tensor& level_start_index,
                                        const at::Tensor& sampling_locations,
                                        const at::Tensor& attention_weights) {
  TORCH_CHECK(value.dim() == 4, "value must have shape (N, S, M, D), got ", value.sizes());
  TORCH_CHECK(spatial_shapes.dim() == 2 && spatial_shapes.size(1) == 2,
              "spatial_shapes must have shape (L, 2), got ", spatial_shapes.sizes());
  const int64_t levels = spatial_shapes.size(0);
  TORCH_CHECK(level_start_index.dim() == 1 && level_start_index.size(0) == levels,
              "level_start_index must have shape (L,) = (", levels, "), got ",
              level_start_index.sizes());
  TORCH_CHECK(sampling_locations.dim() == 6 && sampling_locations.size(0) == value.size(0) &&
                  sampling_locations.size(2) == value.size(2) &&
                  sampling_locations.size(3) == levels && sampling_locations.size(5) == 2,
              "sampling_locations must have shape (N, Lq, M, L, P, 2) with N=", value.size(0),
              ", M=", value.size(2), ", L=", levels, ", got ", sampling_locations.sizes());
  TORCH_CHECK(attention_weights.dim() == 5 &&
                  attention_weights.sizes() == sampling_locations.sizes().slice(0, 5),
              "attention_weights must have shape (N, Lq, M, L, P) = ",
              sampling_locations.sizes().slice(0, 5), ", got ", attention_weights.sizes());
  TORCH_CHECK(spatial_shapes.scalar_type() == at::kLong &&
                  level_start_index.scalar_type() == at::kLong,
              "spatial_shapes and level_start_index must be int64");
  TORCH_CHECK(sampling_locations.scalar_type() == value.scalar_type() &&
                  attention_weights.scalar_type() == value.scalar_type(),
              "value, sampling_locations and attention_weights must share a dtype, got ",
              value.scalar_type(), ", ", sampling_locations.scalar_type(), ", ",
              attention_weights.scalar_type());
  TORCH_CHECK(value.is_contiguous() && spatial_shapes.is_contiguous() &&
                  level_start_index.is_contiguous() && sampling_locations.is_contiguous() &&
                  attention_weights.is_contiguous(),
              "ms_deform_attn kernels need contiguous tensors (call .contiguous())");
  TORCH_CHECK(sampling_locations.device() == value.device() &&
                  attention_weights.device() == value.device(),
              "value, sampling_locations and attention_weights must be on one device");
}

}  // namespace thumbdet
