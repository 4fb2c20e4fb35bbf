"""bench/device_profile.py: kernel kinds and the busy time of overlapping kernels, by hand."""

import pytest

from bench import device_profile


@pytest.mark.parametrize('name, kind', [
    ('void cudnn::engines_precompiled::nchwToNhwcKernel<bf16> cudnn-conv.102', 'layout transpose'),
    ('sm90_xmma_dgrad_implicit_gemm_bf16bf16 cudnn-conv-bw-input.23', 'convolution'),
    ('nvjet_sm90_tst_512x64 cudnn-conv.103', 'convolution'),
    ('cudnn_generated_fort_native_sdpa_sm90_flash_bprop command_buffer_1188', 'fused attention'),
    ('nvjet_sm90_tss_64x24 dot.12', 'matrix product'),
    ('input_scatter_fusion_1 command_buffer_1542', 'scatter (pooling backward)'),
    ('add_convert_fusion.1 add_convert_fusion.1', 'other fusion'),  # 'convert' is no convolution
    ('input_reduce_fusion_94 input_reduce_fusion.94', 'reduction'),
    ('memcpy32_post command_buffer_1', 'copy'),
    ('wrapped_iota.3 wrapped_iota.3', 'other')])
def test_kinds(name, kind):
  assert device_profile.kind_of(name) == kind


def test_busy_time_counts_overlapping_kernels_once():
  # [0, 2) ∪ [1, 3) ∪ [5, 6) ∪ [5.5, 5.75) covers 3 + 1 = 4 units.
  assert device_profile._union_ns([(5, 6), (0, 2), (1, 3), (5.5, 5.75)]) == 4  # pylint: disable=protected-access
