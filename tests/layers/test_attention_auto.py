"""The device-aware choice of ``implementation='auto'`` (``nonlocal_jax.layers.attention_auto``) and the cuDNN
path's fallback: a measured table is followed (within the memory budget and what the backend accepts), the
nearest measured case is the one read, no table means today's size rule, and cuDNN asked for where the backend
refuses it (here: the CPU) computes the exact result with one log line instead of an error."""

from __future__ import annotations

import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from nonlocal_jax.layers import NonLocalBlock, attention, attention_auto
from nonlocal_jax.training import tree_reductions


def _entry(pairwise, ranking, dtype='float32', groups=8, n_query=3136, n_key=784, inter=256):
  times = {impl: float(rank + 1) for rank, impl in enumerate(ranking)}
  return attention_auto.make_entry(pairwise, jnp.dtype(dtype), groups, n_query, n_key, inter, times)


def test_device_slug_names_the_table_and_results_folder():
  assert attention_auto.device_slug('NVIDIA H200') == 'nvidia-h200'
  assert attention_auto.device_slug('TPU v5 lite') == 'tpu-v5-lite'
  assert attention_auto.device_slug('cpu') == 'cpu'


def test_no_table_for_the_cpu_so_auto_keeps_the_size_rule():
  # A table measured on a CPU (bench.device --tiny) must never land in the package: the CPU rule is the rule.
  assert attention_auto.current_slug() == 'cpu' and attention_auto.current_table() is None
  assert not os.path.exists(attention_auto.table_path('cpu'))


def test_auto_follows_the_measured_ranking_within_budget_and_backend():
  table = {'entries': [_entry('embedded_gaussian', ['cudnn', 'naive', 'fused', 'chunked'], 'bfloat16'),
                       _entry('embedded_gaussian', ['fused', 'chunked', 'naive']),
                       _entry('dot_product', ['naive', 'reassociated', 'chunked'])]}
  groups, n_q, n_k = 8, 3136, 784
  budget = 4 * groups * n_q * n_k
  resolve = lambda pairwise, budget, dtype=None: attention.resolve_implementation(
      'auto', pairwise, groups, n_q, n_k, 256, budget, dtype=dtype, table=table)
  assert resolve('embedded_gaussian', budget) == 'fused'  # The fastest measured, where it fits.
  assert resolve('embedded_gaussian', budget - 1) == 'chunked'  # fused holds the affinity: over budget.
  # bf16 ranks cuDNN first, which the CPU refuses; naive is next and fits.
  assert resolve('embedded_gaussian', budget, jnp.bfloat16) == 'naive'
  assert resolve('dot_product', budget) == 'naive'
  assert resolve('dot_product', budget - 1) == 'reassociated'
  # No measured case for this pairwise function or dtype: the size rule, as without a table.
  for pairwise, dtype in (('gaussian', None), ('dot_product', jnp.bfloat16)):
    assert resolve(pairwise, 10 * budget, dtype) == attention.resolve_implementation(
        'auto', pairwise, groups, n_q, n_k, 256, 10 * budget, table={})


def test_auto_reads_the_nearest_measured_case():
  small = _entry('embedded_gaussian', ['naive', 'chunked'], groups=8, n_query=784, n_key=196, inter=512)
  large = _entry('embedded_gaussian', ['chunked', 'naive'], groups=8, n_query=12544, n_key=3136, inter=256)
  table = {'entries': [small, large]}
  resolve = lambda n_q, n_k, inter: attention.resolve_implementation('auto', 'embedded_gaussian', 8, n_q, n_k, inter,
                                                                     2**40, table=table)
  assert resolve(784, 196, 512) == 'naive'
  assert resolve(6272, 1568, 256) == 'chunked'  # 8×28×28: nearer the 16-frame case than res4.
  assert resolve(1568, 392, 512) == 'naive'


@pytest.mark.parametrize('dtype,head_dim,backend,refused', [
    ('bfloat16', 256, 'gpu', None), ('float16', 64, 'gpu', None), ('float32', 256, 'gpu', 'float32'),
    ('bfloat16', 512, 'gpu', '512'), ('bfloat16', 100, 'gpu', '100'), ('bfloat16', 256, 'cpu', 'cpu')])
def test_cudnn_refusal_rules(dtype, head_dim, backend, refused):
  reason = attention_auto.cudnn_refusal(jnp.dtype(dtype), head_dim, backend)
  assert (reason is None) == (refused is None)
  assert refused is None or refused in reason


@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16])
def test_cudnn_on_this_backend_falls_back_to_the_exact_result_with_one_log_line(dtype, caplog):
  x = jax.random.normal(jax.random.key(0), (2, 2, 6, 6, 16), jnp.float32)
  make = lambda impl: NonLocalBlock(pairwise='embedded_gaussian', subsample=(1, 2, 2), implementation=impl,
                                    bn_scale_init=0.5, dtype=dtype)
  variables = make('naive').init(jax.random.key(1), x, False)
  expected = make('naive').apply(variables, x, False)
  attention._logged.clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING, logger=attention.__name__):
    got = make('cudnn').apply(variables, x, False)
    jax.jit(lambda v, x: make('cudnn').apply(v, x, False))(variables, x)  # Traced again: no second line.
  np.testing.assert_array_equal(np.asarray(got, np.float32), np.asarray(expected, np.float32))
  lines = [r.getMessage() for r in caplog.records]
  assert len(lines) == 1 and "implementation='cudnn' cannot run here" in lines[0] and "'naive' instead" in lines[0]


def test_cudnn_refused_while_tracing_computes_chunked(caplog):
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((2, 7, 4), (2, 5, 4), (2, 5, 6)))
  attention._logged.clear()  # pylint: disable=protected-access
  with caplog.at_level(logging.WARNING, logger=attention.__name__):
    got = attention.nonlocal_attention('embedded_gaussian', q, k, v, implementation='cudnn', logit_scale=0.5)
  expected = attention.nonlocal_attention('embedded_gaussian', q, k, v, implementation='naive', logit_scale=0.5)
  np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
  assert [r.getMessage().startswith('cuDNN refused') for r in caplog.records] == [True]
  with pytest.raises(ValueError, match="implementation='cudnn' supports the softmax pairwise functions"):
    attention.resolve_implementation('cudnn', 'dot_product', 1, 10, 10, 4, 2**20)


def _largest(fn, *args):
  """The element count of the largest value in the jaxpr of ``fn`` (sub-jaxprs included)."""
  def walk(jaxpr):
    for eqn in jaxpr.eqns:
      for var in eqn.outvars:
        yield int(np.prod(getattr(var.aval, 'shape', ())))
      for value in eqn.params.values():
        sub = getattr(value, 'jaxpr', value)
        if hasattr(sub, 'eqns'):
          yield from walk(sub)
  return max(walk(jax.make_jaxpr(fn)(*args).jaxpr))


def test_the_block_reads_the_device_table(monkeypatch):
  # 128 queries, 32 keys, C' = 2 (2 frames × 8×8, subsampled 2×2): the size rule reassociates the dot product,
  # never forming the (128, 32) affinity; a device table that measured 'naive' faster there makes the block form it.
  x = jax.random.normal(jax.random.key(0), (1, 2, 8, 8, 4), jnp.float32)
  block = NonLocalBlock(pairwise='dot_product', subsample=(1, 2, 2), implementation='auto', sow_attention=False)
  variables = block.init(jax.random.key(1), x, False)
  # A new function for each trace: jax caches the trace of one function object, and with it the choice made.
  apply = lambda: lambda v, x: block.apply(v, x, False)
  assert attention.resolve_implementation('auto', 'dot_product', 1, 128, 32, 2, 2**40, table={}) == 'reassociated'
  affinity = 128 * 32
  assert _largest(apply(), variables, x) < affinity
  table = {'entries': [_entry('dot_product', ['naive', 'reassociated'], groups=1, n_query=128, n_key=32, inter=2)]}
  monkeypatch.setattr(attention_auto, 'current_table', lambda: table)
  assert _largest(apply(), variables, x) >= affinity


class _Elsewhere:
  """A device of another machine, as a topology describes it (only what 'auto' reads): no memory statistics
  unless ``bytes_limit`` is given (as an addressable accelerator reports them)."""

  def __init__(self, platform, device_kind, bytes_limit=None):
    self.platform, self.device_kind, self._bytes_limit = platform, device_kind, bytes_limit

  def memory_stats(self):
    if self._bytes_limit is None:
      raise RuntimeError('MemoryStats is only supported for addressable PjRt devices.')
    return {'bytes_limit': self._bytes_limit, 'bytes_in_use': 0}


def test_affinity_budget_follows_the_device():
  assert attention_auto.affinity_budget() == 32 * 2**20  # This CPU: the size rule's threshold, unchanged.
  h200 = _Elsewhere('cuda', 'NVIDIA H200')
  with attention_auto.compiling_for(h200):
    assert attention_auto.affinity_budget() == 32 * 2**20  # Memory neither stated nor reported: the CPU's.
  # The H200 table's res3 case at 8 clips (8 × 3136 queries × 784 keys, float32: 75 MiB) ranks fused first and
  # cuDNN (refused here) second: with JAX's 105 GiB of an H200 the fused path fits; with 32 MiB it went chunked.
  resolve = lambda: attention.resolve_implementation('auto', 'embedded_gaussian', 8, 3136, 784, 256,
                                                     attention_auto.affinity_budget(), dtype=jnp.bfloat16)
  with attention_auto.compiling_for(h200, memory_bytes=105 * 2**30):
    assert attention_auto.affinity_budget() == 105 * 2**30 // 128 and resolve() == 'fused'
  with attention_auto.compiling_for(h200):
    assert resolve() == 'chunked'
  # A device's own statistics, where it reports them; a stated memory wins over them.
  with attention_auto.compiling_for(_Elsewhere('tpu', 'TPU v4', bytes_limit=32 * 2**30)):
    assert attention_auto.affinity_budget() == 2**28
  with attention_auto.compiling_for(_Elsewhere('tpu', 'TPU v4', bytes_limit=32 * 2**30), memory_bytes=2**30):
    assert attention_auto.affinity_budget() == 2**23


def test_the_block_holds_the_affinity_the_device_can_afford():
  # 128 queries × 32 keys (2 frames × 8×8, keys subsampled 2×2): a float32 affinity of 16 KiB. On a device whose
  # 1/128 share holds it the size rule forms it whole; on one with a byte less, the block computes it in chunks of
  # 32 queries (no device table for these made-up GPUs).
  x = jax.random.normal(jax.random.key(0), (1, 2, 8, 8, 4), jnp.float32)
  block = NonLocalBlock(subsample=(1, 2, 2), implementation='auto', chunk_size=32, sow_attention=False)
  variables = block.init(jax.random.key(1), x, False)
  affinity = 128 * 32
  largest = {}
  for name, limit in (('holds', 128 * 4 * affinity), ('short', 128 * 4 * affinity - 128)):
    with attention_auto.compiling_for(_Elsewhere('cuda', f'Made-up GPU {name}', bytes_limit=limit)):
      largest[name] = _largest(lambda v, x: block.apply(v, x, False), variables, x)
  assert largest['holds'] >= affinity > largest['short']


def test_auto_follows_the_device_compiled_for():
  from nonlocal_jax.models import blocks  # pylint: disable=g-import-not-at-top
  assert blocks.resolve_conv_implementation('auto', 'c2d') == 'folded'  # This CPU, no table.
  with attention_auto.compiling_for(_Elsewhere('tpu', 'TPU v5 lite')):
    assert attention_auto.target_backend() == 'tpu' and attention_auto.current_slug() == 'tpu-v5-lite'
    assert blocks.resolve_conv_implementation('auto', 'c2d') == 'native'  # No table there: not the CPU's rule.
    assert 'this backend is tpu' in attention_auto.cudnn_refusal(jnp.bfloat16, 256)
    assert tree_reductions.leaves_per_reduction() == 1
  with attention_auto.compiling_for(_Elsewhere('cuda', 'NVIDIA H200')):
    # The committed H200 table is the one read; cuDNN's attention cannot be traced for a GPU this host lacks.
    assert attention_auto.current_table() == attention_auto.load_table(attention_auto.table_path('nvidia-h200'))
    assert 'compiled here for a GPU elsewhere' in attention_auto.cudnn_refusal(jnp.bfloat16, 256)
    assert tree_reductions.leaves_per_reduction() == tree_reductions.LEAVES_PER_REDUCTION['gpu'] > 1
    # At 8×28×28 the table ranks cuDNN first, then fused.
    assert attention.resolve_implementation('auto', 'embedded_gaussian', 8, 6272, 1568, 256, 2**40,
                                            dtype=jnp.bfloat16) == 'fused'
  assert attention_auto.target_device() is jax.devices()[0] and attention_auto.current_slug() == 'cpu'
