// Operator schemas of multi-scale deformable attention. The kernels register themselves for the
// CPU (cpu/ms_deform_attn_cpu.cpp) and CUDA (cuda/ms_deform_attn_cuda.cu) dispatch keys;
// autograd and the fake (meta) implementations are registered from Python (thumbdet/ops/_library.py).
#include <torch/library.h>

TORCH_LIBRARY(thumbdet, m) {
  m.def(
      "ms_deform_attn(Tensor value, Tensor spatial_shapes, Tensor level_start_index, "
      "Tensor sampling_locations, Tensor attention_weights) -> Tensor");
  m.def(
      "ms_deform_attn_backward(Tensor grad_output, Tensor value, Tensor spatial_shapes, "
      "Tensor level_start_index, Tensor sampling_locations, Tensor attention_weights) "
      "-> (Tensor, Tensor, Tensor)");
}
