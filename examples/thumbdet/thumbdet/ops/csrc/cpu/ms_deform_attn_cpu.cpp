// C++ CPU kernel of multi-scale deformable attention, forward and backward, parallel over
// at::parallel_for (OpenMP). Accumulates in at::opmath_type (float for half/bfloat16).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <torch/library.h>

#include <cmath>
#include <vector>

#include "../ms_deform_attn.h"

namespace thumbdet {
namespace {

struct Sizes {
  int64_t batch, pixels, heads, channels, queries, levels, points;
};

Sizes sizes_of(const at::Tensor& value, const at::Tensor& sampling_locations) {
  return {value.size(0), value.size(1), value.size(2), value.size(3),
          sampling_locations.size(1), sampling_locations.size(3), sampling_locations.size(4)};
}

// The five (checked, contiguous) inputs of the op as the kernels read them, with their sizes.
template <typename scalar_t>
struct Inputs {
  Sizes s;
  const scalar_t* value;      // (N, S, M, D)
  const int64_t* shapes;      // (L, 2): H, W of each level
  const int64_t* starts;      // (L,): first pixel of each level along S
  const scalar_t* locations;  // (N, Lq, M, L, P, 2)
  const scalar_t* weights;    // (N, Lq, M, L, P)
  int64_t pixel_stride;       // elements between two pixels of one head: M * D
  int64_t samples;            // sampling points per (n, q, m): L * P

  Inputs(const at::Tensor& value_, const at::Tensor& spatial_shapes,
         const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
         const at::Tensor& attention_weights)
      : s(sizes_of(value_, sampling_locations)),
        value(value_.data_ptr<scalar_t>()),
        shapes(spatial_shapes.data_ptr<int64_t>()),
        starts(level_start_index.data_ptr<int64_t>()),
        locations(sampling_locations.data_ptr<scalar_t>()),
        weights(attention_weights.data_ptr<scalar_t>()),
        pixel_stride(s.heads * s.channels),
        samples(s.levels * s.points) {}
};

// The four bilinear neighbours of one sampling point. An out-of-map corner gets weight 0 and
// points at `fallback` so loops over channels stay branch-free.
template <typename scalar_t, typename acc_t>
struct Corners {
  const scalar_t* pixel[4];
  acc_t weight[4];
  bool valid[4];
  acc_t frac_h, frac_w;  // position inside the cell, for the location gradient
};

// Returns false when the point lies entirely outside the map (all corners zero).
// `level_value` points at pixel (0, 0) of the level for this batch item and head; pixels are
// `pixel_stride` elements apart. align_corners=False: normalised x reads pixel x * W - 0.5.
template <typename scalar_t, typename acc_t>
inline bool find_corners(const scalar_t* level_value, int64_t pixel_stride, int64_t height,
                         int64_t width, acc_t x, acc_t y, Corners<scalar_t, acc_t>& corners) {
  const acc_t h = y * static_cast<acc_t>(height) - acc_t(0.5);
  const acc_t w = x * static_cast<acc_t>(width) - acc_t(0.5);
  if (!(h > acc_t(-1) && w > acc_t(-1) && h < static_cast<acc_t>(height) &&
        w < static_cast<acc_t>(width))) {
    return false;
  }
  const int64_t h_low = static_cast<int64_t>(std::floor(h));
  const int64_t w_low = static_cast<int64_t>(std::floor(w));
  const acc_t frac_h = h - static_cast<acc_t>(h_low);
  const acc_t frac_w = w - static_cast<acc_t>(w_low);
  corners.frac_h = frac_h;
  corners.frac_w = frac_w;
  const int64_t rows[4] = {h_low, h_low, h_low + 1, h_low + 1};
  const int64_t cols[4] = {w_low, w_low + 1, w_low, w_low + 1};
  const acc_t weights[4] = {(1 - frac_h) * (1 - frac_w), (1 - frac_h) * frac_w,
                            frac_h * (1 - frac_w), frac_h * frac_w};
  for (int corner = 0; corner < 4; ++corner) {
    const bool valid = rows[corner] >= 0 && rows[corner] < height && cols[corner] >= 0 &&
                       cols[corner] < width;
    corners.valid[corner] = valid;
    corners.weight[corner] = valid ? weights[corner] : acc_t(0);
    corners.pixel[corner] =
        valid ? level_value + (rows[corner] * width + cols[corner]) * pixel_stride : level_value;
  }
  return true;
}

template <typename scalar_t>
void forward_kernel(const Inputs<scalar_t> in, scalar_t* output_data) {
  using acc_t = at::opmath_type<scalar_t>;
  const Sizes s = in.s;

  // One task per (n, q, m): each writes its own D outputs.
  at::parallel_for(0, s.batch * s.queries * s.heads, 16, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> accumulator(s.channels);
    Corners<scalar_t, acc_t> corners;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task % s.heads;
      const int64_t batch = task / (s.queries * s.heads);
      std::fill(accumulator.begin(), accumulator.end(), acc_t(0));
      const scalar_t* locations = in.locations + task * in.samples * 2;
      const scalar_t* weights = in.weights + task * in.samples;
      for (int64_t level = 0; level < s.levels; ++level) {
        const int64_t height = in.shapes[2 * level];
        const int64_t width = in.shapes[2 * level + 1];
        const scalar_t* level_value =
            in.value + ((batch * s.pixels + in.starts[level]) * s.heads + head) * s.channels;
        for (int64_t point = 0; point < s.points; ++point) {
          const int64_t sample = level * s.points + point;
          const acc_t x = static_cast<acc_t>(locations[2 * sample]);
          const acc_t y = static_cast<acc_t>(locations[2 * sample + 1]);
          if (!find_corners(level_value, in.pixel_stride, height, width, x, y, corners)) continue;
          const acc_t attention = static_cast<acc_t>(weights[sample]);
          const acc_t w0 = attention * corners.weight[0], w1 = attention * corners.weight[1];
          const acc_t w2 = attention * corners.weight[2], w3 = attention * corners.weight[3];
          const scalar_t *p0 = corners.pixel[0], *p1 = corners.pixel[1];
          const scalar_t *p2 = corners.pixel[2], *p3 = corners.pixel[3];
          for (int64_t channel = 0; channel < s.channels; ++channel) {
            accumulator[channel] += w0 * static_cast<acc_t>(p0[channel]) +
                                    w1 * static_cast<acc_t>(p1[channel]) +
                                    w2 * static_cast<acc_t>(p2[channel]) +
                                    w3 * static_cast<acc_t>(p3[channel]);
          }
        }
      }
      scalar_t* out = output_data + task * s.channels;
      for (int64_t channel = 0; channel < s.channels; ++channel) {
        out[channel] = static_cast<scalar_t>(accumulator[channel]);
      }
    }
  });
}

// grad_value_data is in acc_t (float for half/bfloat16): samples scatter-add into it.
template <typename scalar_t>
void backward_kernel(const scalar_t* grad_data, const Inputs<scalar_t> in,
                     at::opmath_type<scalar_t>* grad_value_data, scalar_t* grad_location_data,
                     scalar_t* grad_weight_data) {
  using acc_t = at::opmath_type<scalar_t>;
  const Sizes s = in.s;
  const int64_t samples = in.samples;

  // Tasks are (n, m) pairs, or (n, m, l) triples when there are too few pairs to keep every
  // thread busy. Only samples of the same batch item, head and level scatter into the same
  // grad_value rows (levels occupy disjoint ranges of S, as the Python entry point checks), so
  // tasks never race and no atomics are needed. Splitting by level re-reads each grad row once
  // per level, which costs about 10% on 2 threads, so it is only done when it adds parallelism.
  const bool enough_pairs = s.batch * s.heads >= 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t level_groups = enough_pairs || s.levels == 0 ? 1 : s.levels;
  const int64_t levels_per_group = s.levels / level_groups;  // all levels, or one
  at::parallel_for(0, s.batch * s.heads * level_groups, 1, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> grad(s.channels);
    Corners<scalar_t, acc_t> corners;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t head = task % s.heads;
      const int64_t first_level = ((task / s.heads) % level_groups) * levels_per_group;
      const int64_t batch = task / (s.heads * level_groups);
      for (int64_t query = 0; query < s.queries; ++query) {
        const int64_t row = (batch * s.queries + query) * s.heads + head;  // (n, q, m)
        const scalar_t* grad_row = grad_data + row * s.channels;
        for (int64_t channel = 0; channel < s.channels; ++channel) {
          grad[channel] = static_cast<acc_t>(grad_row[channel]);
        }
        const scalar_t* locations = in.locations + row * samples * 2;
        const scalar_t* weights = in.weights + row * samples;
        for (int64_t level = first_level; level < first_level + levels_per_group; ++level) {
          const int64_t height = in.shapes[2 * level];
          const int64_t width = in.shapes[2 * level + 1];
          const int64_t level_offset =
              ((batch * s.pixels + in.starts[level]) * s.heads + head) * s.channels;
          for (int64_t point = 0; point < s.points; ++point) {
            const int64_t sample = level * s.points + point;
            const int64_t out_index = row * samples + sample;
            const acc_t x = static_cast<acc_t>(locations[2 * sample]);
            const acc_t y = static_cast<acc_t>(locations[2 * sample + 1]);
            if (!find_corners(in.value + level_offset, in.pixel_stride, height, width, x, y,
                              corners)) {
              grad_weight_data[out_index] = scalar_t(0);
              grad_location_data[2 * out_index] = scalar_t(0);
              grad_location_data[2 * out_index + 1] = scalar_t(0);
              continue;
            }
            const acc_t attention = static_cast<acc_t>(weights[sample]);
            acc_t dot[4] = {0, 0, 0, 0};  // <grad, corner value> per corner
            for (int corner = 0; corner < 4; ++corner) {
              if (!corners.valid[corner]) continue;
              const scalar_t* __restrict__ pixel = corners.pixel[corner];
              // The same pixel offset in grad_value as in value.
              acc_t* __restrict__ grad_pixel = grad_value_data + (pixel - in.value);
              const acc_t* __restrict__ grad_channels = grad.data();
              const acc_t scale = attention * corners.weight[corner];
              acc_t sum = 0;
              // One pass per corner: the dot product and the scatter share the loads of grad.
#pragma omp simd reduction(+ : sum)
              for (int64_t channel = 0; channel < s.channels; ++channel) {
                sum += grad_channels[channel] * static_cast<acc_t>(pixel[channel]);
                grad_pixel[channel] += scale * grad_channels[channel];
              }
              dot[corner] = sum;
            }
            const acc_t frac_h = corners.frac_h, frac_w = corners.frac_w;
            const acc_t sampled = corners.weight[0] * dot[0] + corners.weight[1] * dot[1] +
                                  corners.weight[2] * dot[2] + corners.weight[3] * dot[3];
            // d(bilinear)/dw and d(bilinear)/dh in pixel units, then chain through x*W-0.5.
            const acc_t grad_w = (1 - frac_h) * (dot[1] - dot[0]) + frac_h * (dot[3] - dot[2]);
            const acc_t grad_h = (1 - frac_w) * (dot[2] - dot[0]) + frac_w * (dot[3] - dot[1]);
            grad_weight_data[out_index] = static_cast<scalar_t>(sampled);
            grad_location_data[2 * out_index] =
                static_cast<scalar_t>(attention * grad_w * static_cast<acc_t>(width));
            grad_location_data[2 * out_index + 1] =
                static_cast<scalar_t>(attention * grad_h * static_cast<acc_t>(height));
          }
        }
      }
    }
  });
}

}  // namespace

at::Tensor ms_deform_attn_cpu(const at::Tensor& value, const at::Tensor& spatial_shapes,
                              const at::Tensor& level_start_index,
                              const at::Tensor& sampling_locations,
                              const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_cpu needs CPU tensors");
  const Sizes s = sizes_of(value, sampling_locations);
  at::Tensor output = at::empty({s.batch, s.queries, s.heads * s.channels}, value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_cpu", [&] {
        const Inputs<scalar_t> in(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
        forward_kernel<scalar_t>(in, output.data_ptr<scalar_t>());
      });
  return output;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ms_deform_attn_backward_cpu(
    const at::Tensor& grad_output, const at::Tensor& value, const at::Tensor& spatial_shapes,
    const at::Tensor& level_start_index, const at::Tensor& sampling_locations,
    const at::Tensor& attention_weights) {
  check_ms_deform_attn_inputs(value, spatial_shapes, level_start_index, sampling_locations,
                              attention_weights);
  TORCH_CHECK(value.device().is_cpu(), "ms_deform_attn_backward_cpu needs CPU tensors");
  const Sizes s = sizes_of(value, sampling_locations);
  TORCH_CHECK(grad_output.dim() == 3 && grad_output.size(0) == s.batch &&
                  grad_output.size(1) == s.queries &&
                  grad_output.size(2) == s.heads * s.channels,
              "grad_output must have shape (N, Lq, M * D), got ", grad_output.sizes());
  TORCH_CHECK(grad_output.scalar_type() == value.scalar_type(),
              "grad_output must have the dtype of value");
  const at::Tensor grad = grad_output.contiguous();
  const at::ScalarType acc_type = at::toOpMathType(value.scalar_type());
  at::Tensor grad_value_acc = at::zeros(value.sizes(), value.options().dtype(acc_type));
  at::Tensor grad_locations = at::empty(sampling_locations.sizes(), value.options());
  at::Tensor grad_weights = at::empty(attention_weights.sizes(), value.options());
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, value.scalar_type(), "ms_deform_attn_backward_cpu", [&] {
        const Inputs<scalar_t> in(value, spatial_shapes, level_start_index, sampling_locations,
                                  attention_weights);
        backward_kernel<scalar_t>(grad.data_ptr<scalar_t>(), in,
                                  grad_value_acc.data_ptr<at::opmath_type<scalar_t>>(),
                                  grad_locations.data_ptr<scalar_t>(),
                                  grad_weights.data_ptr<scalar_t>());
      });
  return {grad_value_acc.to(value.scalar_type()), grad_locations, grad_weights};
}

TORCH_LIBRARY_IMPL(thumbdet, CPU, m) {
  m.impl("ms_deform_attn", &ms_deform_attn_cpu);
  m.impl("ms_deform_attn_backward", &ms_deform_attn_backward_cpu);
}

}  // namespace thumbdet
