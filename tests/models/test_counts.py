"""Parameter counts and multiply-adds against the paper's figures and hand computations."""

import pytest

from nonlocal_jax.models import ResNetVideo
from nonlocal_jax.models.summary import analyse
from tests.models.helpers import abstract_image, abstract_video, count


def nonlocal_block_params(c):
  """θ, φ, g: C -> C/2 with bias; W_z: C/2 -> C with bias; BN scale and bias on C (docs/paper.md §2)."""
  inter = c // 2
  return 3 * (c * inter + inter) + (inter * c + c) + 2 * c


def test_r50_c2d_params_match_the_paper():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=50, num_classes=400)
  assert count(variables['params']) == pytest.approx(24.33e6, rel=3e-3)


def test_r101_c2d_params_match_the_paper():
  _, variables = abstract_video((1, 8, 224, 224, 3), depth=101, num_classes=400)
  assert count(variables['params']) == pytest.approx(43.2e6, rel=5e-3)


@pytest.mark.parametrize('depth,preset,channels', [
    (50, '1', [1024]),
    (50, '5', [512, 512, 1024, 1024, 1024]),
    (50, '10', [512] * 4 + [1024] * 6),
    (101, '5', [512, 512, 1024, 1024, 1024]),
    (50, 'res2', [256]),
    (50, 'res5', [2048]),
])
def test_each_nonlocal_block_adds_what_its_weights_predict(depth, preset, channels):
  _, plain = abstract_video((1, 8, 224, 224, 3), depth=depth, stem='8x8')
  _, with_nl = abstract_video((1, 8, 224, 224, 3), depth=depth, stem='8x8', nonlocal_locations=preset)
  added = count(with_nl['params']) - count(plain['params'])
  assert added == sum(nonlocal_block_params(c) for c in channels)
  # About 4·C·C/2 weights each (docs/paper.md §3).
  assert added == pytest.approx(sum(2 * c * c for c in channels), rel=1e-2)
  # The running mean and variance of each block's BN.
  assert count(with_nl['batch_stats']) - count(plain['batch_stats']) == sum(2 * c for c in channels)


def test_i3d_adds_exactly_the_inflated_kernel_planes():
  _, c2d = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='c2d')
  _, i3d = abstract_video((1, 8, 224, 224, 3), depth=50, temporal='i3d_3x1x1')
  # conv1 7×7 -> 5×7×7 adds 4 planes; each inflated branch2a (1×1 -> 3×1×1, C_in -> w) adds 2 planes.
  # Official R50 pattern: res2 [1,1,1], res3 [1,0,1,0], res4 [1,0,1,0,1,0], res5 [0,1,0].
  extra = 4 * 7 * 7 * 3 * 64
  extra += 2 * (64 * 64 + 256 * 64 + 256 * 64)        # res2 blocks 0, 1, 2 (inputs 64, 256, 256; width 64)
  extra += 2 * (256 * 128 + 512 * 128)                # res3 blocks 0, 2
  extra += 2 * (512 * 256 + 1024 * 256 + 1024 * 256)  # res4 blocks 0, 2, 4
  extra += 2 * (2048 * 512)                           # res5 block 1
  assert count(i3d['params']) - count(c2d['params']) == extra


def test_r101_c2d_multiply_adds_match_the_paper():
  # The paper's 34.2 G matches the MSRA ResNet, which strides the first 1×1 of res3..res5 (stride_in_1x1).
  model = ResNetVideo(depth=101, stride_in_1x1=True, stem='table1')
  summary = analyse(model, (1, 32, 224, 224, 3))
  assert summary.macs == pytest.approx(34.2e9, rel=0.03)


def test_official_stride_placement_costs_the_branch2a_difference():
  # Striding branch2b instead of branch2a runs branch2a of res{3,4,5}_0 at the input resolution:
  # T·(H_in² − H_out²)·C_in·w more multiply-adds, with T = 4, (H_in, H_out) = (56, 28), (28, 14), (14, 7).
  paper = analyse(ResNetVideo(depth=101, stride_in_1x1=True), (1, 32, 224, 224, 3)).macs
  official = analyse(ResNetVideo(depth=101), (1, 32, 224, 224, 3)).macs
  expected = 4 * ((56**2 - 28**2) * 256 * 128 + (28**2 - 14**2) * 512 * 256 + (14**2 - 7**2) * 1024 * 512)
  assert official - paper == expected


def test_r50_c2d_multiply_adds_by_hand():
  # Table 1 row by row for one 32×224×224 clip, official layout (stride on the 3×3).
  def bottleneck(t, h_in, h_out, c_in, w, project):
    macs = t * h_in * h_in * c_in * w + t * h_out * h_out * 9 * w * w + t * h_out * h_out * w * 4 * w
    return macs + (t * h_out * h_out * c_in * 4 * w if project else 0)
  expected = 16 * 112 * 112 * 49 * 3 * 64
  expected += bottleneck(8, 56, 56, 64, 64, True) + 2 * bottleneck(8, 56, 56, 256, 64, False)
  expected += bottleneck(4, 56, 28, 256, 128, True) + 3 * bottleneck(4, 28, 28, 512, 128, False)
  expected += bottleneck(4, 28, 14, 512, 256, True) + 5 * bottleneck(4, 14, 14, 1024, 256, False)
  expected += bottleneck(4, 14, 7, 1024, 512, True) + 2 * bottleneck(4, 7, 7, 2048, 512, False)
  expected += 2048 * 400
  summary = analyse(ResNetVideo(depth=50), (1, 32, 224, 224, 3))
  assert summary.macs == expected
  # torchvision's ResNet-50 (25,557,032) with a 400-way instead of a 1000-way classifier.
  assert summary.params == 25_557_032 - (2048 * 1000 + 1000) + (2048 * 400 + 400)


def test_one_nonlocal_block_multiply_adds_by_hand():
  # res4 of R50 at 32×224×224: x is 4×14×14×1024 (N = 784), pooled 4×7×7 (196), C' = 512.
  plain = analyse(ResNetVideo(depth=50), (1, 32, 224, 224, 3))
  one = analyse(ResNetVideo(depth=50, nonlocal_locations='1'), (1, 32, 224, 224, 3))
  n, m, c, ci = 784, 196, 1024, 512
  expected = n * c * ci + 2 * m * c * ci + n * ci * c  # θ on all positions, φ and g on pooled x, W_z
  expected += n * m * ci * 2                            # θᵀφ and f·g
  assert one.macs - plain.macs == expected
  res4 = {r.stage: r for r in one.rows}['res4']
  assert res4.nonlocal_blocks == 1


def test_summary_rows_add_up():
  summary = analyse(ResNetVideo(depth=50, temporal='i3d_3x1x1', nonlocal_locations='5', stem='8x8'),
                    (1, 8, 224, 224, 3))
  assert sum(r.params for r in summary.rows) == summary.params
  assert [r.stage for r in summary.rows] == ['conv1', 'pool1', 'res2', 'pool2', 'res3', 'res4', 'res5', 'head']
  assert {r.stage: r.nonlocal_blocks for r in summary.rows}['res3'] == 2
  assert {r.stage: r.output_shape for r in summary.rows}['res4'] == (4, 14, 14, 1024)
  table = summary.table()
  assert '| res4 (+3 NL) | 4×14×14×1024 |' in table


def test_image_param_counts():
  # torchvision's ResNet-18 / ResNet-50 (1000 classes) have 11,689,512 and 25,557,032 parameters.
  _, r18 = abstract_image((1, 224, 224, 3), depth=18)
  _, r50 = abstract_image((1, 224, 224, 3), depth=50)
  assert count(r18['params']) == 11_689_512
  assert count(r50['params']) == 25_557_032
  # CIFAR ResNet-20 (He et al. 2016: 0.27 M), projection shortcuts, by hand:
  # conv1 432 + 32; res2 3·(2·2304 + 64); res3 (4608 + 9216 + 128 + 512 + 64) + 2·(2·9216 + 128);
  # res4 (18432 + 36864 + 256 + 2048 + 128) + 2·(2·36864 + 256); fc 650.
  _, r20 = abstract_image((1, 32, 32, 3), depth=20, stem='cifar', num_classes=10)
  assert count(r20['params']) == 272_474


def test_image_nonlocal_block_adds_its_weights():
  _, plain = abstract_image((1, 224, 224, 3), depth=50)
  _, with_nl = abstract_image((1, 224, 224, 3), depth=50, nonlocal_locations='res4')
  assert count(with_nl['params']) - count(plain['params']) == nonlocal_block_params(1024)
  assert 'nonlocal_conv4_4' in with_nl['params']
  assert with_nl['params']['nonlocal_conv4_4']['theta']['kernel'].shape == (1024, 512)
