"""``bench.hlo_roofline`` on a hand-written XLA:GPU module: a 3×3 convolution (64 -> 128 channels, 8 images of
28×28, channels-last), its two backward calls and one batched cuBLAS product, counted by hand below."""

import pytest

from bench import hlo_roofline

MODULE = """HloModule jit_step, is_scheduled=true

ENTRY %main (x: bf16[8,28,28,64], w: bf16[128,3,3,64], dy: bf16[8,28,28,128], q: bf16[8,3136,256], k: bf16[8,784,256]) -> f32[8,3136,784] {
  %x = bf16[8,28,28,64]{3,2,1,0} parameter(0)
  %w = bf16[128,3,3,64]{3,2,1,0} parameter(1)
  %dy = bf16[8,28,28,128]{3,2,1,0} parameter(2)
  %q = bf16[8,3136,256]{2,1,0} parameter(3)
  %k = bf16[8,784,256]{2,1,0} parameter(4)
  %fwd = (bf16[8,28,28,128]{3,2,1,0}, u8[0]{0}) custom-call(%x, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convForward"
  %dx = (bf16[8,28,28,64]{3,2,1,0}, u8[0]{0}) custom-call(%dy, %w), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardInput"
  %dw = (bf16[128,3,3,64]{3,2,1,0}, u8[0]{0}) custom-call(%x, %dy), window={size=3x3 pad=1_1x1_1}, dim_labels=b01f_o01i->b01f, custom_call_target="__cudnn$convBackwardFilter"
  ROOT %logits = (f32[8,3136,784]{2,1,0}, s8[33554432]{0}) custom-call(%q, %k), custom_call_target="__cublas$lt$matmul", backend_config={"gemm_backend_config":{"alpha_real":1,"dot_dimension_numbers":{"lhs_contracting_dimensions":["2"],"rhs_contracting_dimensions":["2"],"lhs_batch_dimensions":["0"],"rhs_batch_dimensions":["0"]}}}
}
"""

X, W, DY = 8 * 28 * 28 * 64 * 2, 128 * 3 * 3 * 64 * 2, 8 * 28 * 28 * 128 * 2  # bf16 bytes.
CONV_FLOPS = 2 * (8 * 28 * 28) * 128 * (3 * 3 * 64)  # Each output pixel and feature: a 3×3×64 dot product.
Q, K, LOGITS = 8 * 3136 * 256 * 2, 8 * 784 * 256 * 2, 8 * 3136 * 784 * 4
GEMM_FLOPS = 2 * 8 * 3136 * 784 * 256


def test_library_calls_count_operands_result_and_flops():
  calls = hlo_roofline.library_calls(MODULE)
  assert [(c.target, c.bytes, c.flops) for c in calls] == [
      ('__cudnn$convForward', X + W + DY, CONV_FLOPS),
      ('__cudnn$convBackwardInput', DY + W + X, CONV_FLOPS),
      ('__cudnn$convBackwardFilter', X + DY + W, CONV_FLOPS),
      ('__cublas$lt$matmul', Q + K + LOGITS, GEMM_FLOPS)]


def test_floor_takes_each_call_at_its_slower_bound_and_xla_bytes_at_the_copy_rate():
  calls = hlo_roofline.library_calls(MODULE)
  # At 200 TFLOP/s and 1,000 GB/s the convolutions are bound by their flops (0.0046 ms against 0.0026 ms of
  # bytes) and the product by its bytes (0.0947 ms of bytes against 0.0503 ms of flops).
  got = hlo_roofline.floor(5e8, calls, tflops=200.0, gb_per_s=1000.0)
  conv_ms, gemm_ms = 1e3 * CONV_FLOPS / 2e14, 1e3 * (Q + K + LOGITS) / 1e12
  assert got['library_ms'] == pytest.approx(3 * conv_ms + gemm_ms)
  assert got['floor_ms'] == pytest.approx(0.5 + 3 * conv_ms + gemm_ms)  # 5e8 bytes at 1e12 B/s: 0.5 ms.
  assert got['memory_bound_calls'] == 1 and got['library_calls'] == 4
  assert got['library_tflop'] == pytest.approx((3 * CONV_FLOPS + GEMM_FLOPS) / 1e12)
