// CUDA kernel of multi-scale deformable attention, forward and backward.
// float, double, half and bfloat16; accumulation in at::opmath_type (float for half/bfloat16).
// Forward: one thread per output element (n, q, m, d), so reads of a value row are coalesced.
// Backward: one thread per sample (n, q, m, l, p) looping over channels, so the location and
// attention gradients need no cross-thread reduction; value gradients are scattered with
// atomicAdd into an opmath-typed buffer (converted to the value dtype at the end).
// Only c10/cuda headers are used (not ATen/cuda/CUDAContext.h, which needs cuSPARSE/cuBLAS
// headers), so a minimal CUDA toolkit (nvcc + cudart) is enough to build.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../ms_deform_attn.h"

namespace thumbdet {
namespace {

constexpr int kThreadsPerBlock = 256;
constexpr int64_t kMaxBlocks = int64_t(1) << 22;  // grid-stride loops cover the rest

struct Sizes {
  int64_t batch, pixels, heads, channels, queries, levels, points;
};

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

int64_t blocks_for(int64_t work) {
  return std::max<int64_t>(1, std::min((work + kThreadsPerBlock - 1) / kThreadsPerBlock,
                                       kMaxBlocks));
}

// Bilinear neighbours of a normalised point (align_corners=False: x reads pixel x * W - 0.5).
// `offset` is the element offset of each corner pixel from pixel (0, 0) of the level (pixels
// `pixel_stride` elements apart), -1 for corners outside the map (weight 0).
// Returns false when the point is entirely outside the map.
template <typename acc_t>
__device__ __forceinline__ bool find_corners(int64_t height, int64_t width, int64_t pixel_stride,
                                             acc_t x, acc_t y, int64_t offset[4],
                                             acc_t weight[4], acc_t& frac_h, acc_t& frac_w) {
  const acc_t h = y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t w = x * static_cast<acc_t>(width) - acc_t(0.5);
  if (!(h > acc_t(-1) && w > acc_t(-1) && h < static_cast<acc_t>(height) &&
        w < static_cast<acc_t>(width))) {
    return false;
  }
  const acc_t h_floor = floor(h);
  const acc_t w_floor = floor(w);
  const int64_t h_low = static_cast<int64_t>(h_floor);
  const int64_t w_low = static_cast<int64_t>(w_floor);
  frac_h = h - h_floor;
  frac_w = w - w_floor;
  const int64_t rows[4] = {h_low, h_low, h_low + 1, h_low + 1};
  const int64_t cols[4] = {w_low, w_low + 1, w_low, w_low + 1};
  const acc_t weights[4] = {(1 - frac_h) * (1 - frac_w), (1 - frac_h) * frac_w,
                            frac_h * (1 - frac_w), frac_h * frac_w};
#pragma unroll
  for (int corner = 0; corner < 4; ++corner) {
    const bool valid = rows[corner] >= 0 && rows[corner] < height && cols[corner] >= 0 &&
                       cols[corner] < width;
    offset[corner] = valid ? (rows[corner] * width + cols[corner]) * pixel_stride : -1;
    weight[corner] = valid ? weights[corner] : acc_t(0);
  }
  return true;
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ value,
                               const int64_t* __restrict__ spatial_shapes,
                               const int64_t* __restrict__ level_start_index,
                               const scalar_t* __restrict__ sampling_locations,
                               const scalar_t* __restrict__ attention_weights,
                               scalar_t* __restrict__ output, Sizes s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = s.batch * s.queries * s.heads * s.channels;
  const int64_t pixel_stride = s.heads * s.channels;
  const int64_t samples = s.levels * s.points;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t channel = index % s.channels;
    const int64_t row = index / s.channels;  // (n, q, m)
    const int64_t head = row % s.heads;
    const int64_t batch = row / (s.queries * s.heads);
    const scalar_t* locations = sampling_locations + row * samples * 2;
    const scalar_t* weights = attention_weights + row * samples;
    acc_t sum = 0;
    int64_t offset[4];
    acc_t weight[4];
    acc_t frac_h, frac_w;
    for (int64_t level = 0; level < s.levels; ++level) {
      const int64_t height = spatial_shapes[2 * level];
      const int64_t width = spatial_shapes[2 * level + 1];
      const scalar_t* level_value =
          value + ((batch * s.pixels + level_start_index[level]) * s.heads + head) * s.channels +
          channel;
      for (int64_t point = 0; point < s.points; ++point) {
        const int64_t sample = level * s.points + point;
        const acc_t x = static_cast<acc_t>(locations[2 * sample]);
        const acc_t y = static_cast<acc_t>(locations[2 * sample + 1]);
        if (!find_corners(height, width, pixel_stride, x, y, offset, weight, frac_h, frac_w)) {
          continue;
        }
        acc_t sampled = 0;
#pragma unroll
        for (int corner = 0; corner < 4; ++corner) {
          if (offset[corner] >= 0) {
            sampled += weight[corner] * static_cast<acc_t>(level_value[offset[corner]]);
          }
        }
        sum += static_cast<acc_t>(weights[sample]) * sampled;
      }
    }
    output[index] = static_cast<scalar_t>(sum);
  }
}

template <typename scalar_t>
__global__ void backward_kernel(const scalar_t* __restrict__ grad_output,
                                const scalar_t* __restrict__ value,
                                const int64_t* __restrict__ spatial_shapes,
                                const int64_t* __restrict__ level_start_index,
                                const scalar_t* __restrict__ sampling_locations,
                                const scalar_t* __restrict__ attention_weights,
                                at::opmath_type<scalar_t>* __restrict__ grad_value,
                                scalar_t* __restrict__ grad_locations,
                                scalar_t* __restrict__ grad_weights, Sizes s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t total = s.batch * s.queries * s.heads * s.levels * s.points;
  const int64_t pixel_stride = s.heads * s.channels;
  for (int64_t index = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       index < total; index += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t level = (index / s.points) % s.levels;
    const int64_t row = index / (s.levels * s.points);  // (n, q, m)
    const int64_t head = row % s.heads;
    const int64_t batch = row / (s.queries * s.heads);
    const int64_t height = spatial_shapes[2 * level];
    const int64_t width = spatial_shapes[2 * level + 1];
    const int64_t level_offset =
        ((batch * s.pixels + level_start_index[level]) * s.heads + head) * s.channels;
    const acc_t x = static_cast<acc_t>(sampling_locations[2 * index]);
    const acc_t y = static_cast<acc_t>(sampling_locations[2 * index + 1]);
    int64_t offset[4];
    acc_t weight[4];
    acc_t frac_h, frac_w;
    if (!find_corners(height, width, pixel_stride, x, y, offset, weight, frac_h, frac_w)) {
      grad_weights[index] = static_cast<scalar_t>(0);
      grad_locations[2 * index] = static_cast<scalar_t>(0);
      grad_locations[2 * index + 1] = static_cast<scalar_t>(0);
      continue;
    }
    const acc_t attention = static_cast<acc_t>(attention_weights[index]);
    const scalar_t* grad_row = grad_output + row * s.channels;
    const scalar_t* level_value = value + level_offset;
    acc_t* level_grad_value = grad_value + level_offset;
    acc_t dot[4] = {0, 0, 0, 0};  // <grad, corner value> per corner
    for (int64_t channel = 0; channel < s.channels; ++channel) {
      const acc_t grad = static_cast<acc_t>(grad_row[channel]);
#pragma unroll
      for (int corner = 0; corner < 4; ++corner) {
        if (offset[corner] < 0) continue;
        dot[corner] += grad * static_cast<acc_t>(level_value[offset[corner] + channel]);
        atomicAdd(level_grad_value + offset[corner] + channel,
                  attention * weight[corner] * grad);
      }
    }
    const acc_t sampled =
        weight[0] * dot[0] + weight[1] * dot[1] + weight[2] * dot[2] + weight[3] * dot[3];
    const acc_t grad_w = (1 - frac_h) * (dot[1] - dot[0]) + frac_h * (dot[3] - dot[2]);
    const acc_t grad_h = (1 - frac_w) * (dot[2] - dot[0]) + frac_w * (dot[3] - dot[1]);
    grad_weights[index] = static_cast<scalar_t>(sampled);
    grad_locations[2 * index] =
        static_cast<scalar_t>(attention * grad_w * static_cast<acc_t>(width));
    grad_locations[2 * index + 1] =
        static_cast<scalar_t>(attention * grad_h * static_cast<acc_t>(height));
  }
}

void check_cuda_inputs(const at::Tensor& value, const at::Tensor& spatial_shapes,
                       const at::Tensor& level_start_index) {
  TORCH_CHECK(value.is_cuda(), "the CUDA ms_deform_attn kernel needs CUDA tensors");
  TORCH_CHECK(spatial_shapes.device() == value.device() &&
                  level_start_index.device() == value.device(),
              "spatial_shapes and level_start_index must be on the device of value (",
              value.device(), ")");
}

}  // namespace

at::Tensor ms_deform_attn_cuda(const at::Tensor& value, const at::Tensor& spatial_shapes,
                               const at::Tensor& level_start_index,
                               const at::Tensor& sampling_locations,
                               const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  check_cuda_inputs(value, spatial_shapes, level_start_index);
  const c10::cuda::CUDAGuard device_guard(value.device());
  const Sizes s = sizes_of(value, sampling_locations);
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  const int64_t work = output.numel();
  if (work == 0) return output;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cuda", [&] {
        forward_kernel<scalar_t><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(
            value.data_ptr<scalar_t>(), spatial_shapes.data_ptr<int64_t>(),
            level_start_index.data_ptr<int64_t>(), sampling_locations.data_ptr<scalar_t>(),
            attention_weights.data_ptr<scalar_t>(), output.data_ptr<scalar_t>(), s);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cuda(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  check_cuda_inputs(value, spatial_shapes, level_start_index);
  const Sizes s = sizes_of(value, sampling_locations);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == s.batch &&
                  grad_output.size(1) == s.queries &&
                  grad_output.size(2) == s.heads * s.channels,
              "grad_output must have shape (N, Lq, M * D), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type() &&
                  grad_output.device() == value.device(),
              "grad_output must have the dtype and device of value");
  const c10::cuda::CUDAGuard device_guard(value.device());
  const at::Tensor grad = grad_output.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), value.options());
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), value.options());
  const int64_t work = attention_weights.numel();
  if (work > 0) {
    const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cuda", [&] {
          backward_kernel<scalar_t><<<blocks_for(work), kThreadsPerBlock, 0, stream>>>(
              grad.data_ptr<scalar_t>(), value.data_ptr<scalar_t>(),
              spatial_shapes.data_ptr<int64_t>(), level_start_index.data_ptr<int64_t>(),
              sampling_locations.data_ptr<scalar_t>(), attention_weights.data_ptr<scalar_t>(),
              grad_value_acc.data_ptr<at::opmath_type<scalar_t>>(),
              grad_locations.data_ptr<scalar_t>(), grad_weights.data_ptr<scalar_t>(), s);
          C10_CUDA_KERNEL_LAUNCH_CHECK();
        });
  }
  return {grad_value_acc.to(value.scalar_type()), grad_locations, grad_weights};
}

TORCH_LIBRARY_IMPL(thumbdet, CUDA, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cuda);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cuda);
}

}  // namespace thumbdet
