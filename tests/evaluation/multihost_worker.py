"""One process of a real two-process evaluation (CPU collectives over localhost); run by test_gather.py.

    python -m tests.evaluation.multihost_worker PROCESS_ID PORT OUT_DIR
"""

import os
import sys


def main(process_id, port, out_dir):
  """Evaluates this process's share of the known case with the default gather, saves the result in out_dir."""
  os.environ['JAX_PLATFORMS'] = 'cpu'
  os.environ['XLA_FLAGS'] = '--xla_force_host_platform_device_count=2'
  import jax  # pylint: disable=g-import-not-at-top
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  jax.distributed.initialize(f'localhost:{port}', num_processes=2, process_id=process_id)
  from nonlocal_jax import evaluation as ev  # pylint: disable=g-import-not-at-top
  from tests.evaluation import cases  # pylint: disable=g-import-not-at-top
  assert jax.process_count() == 2 and jax.local_device_count() == 2
  views = cases.PROCESS_VIEWS[process_id]
  batches = cases.make_batches(views, batch_size=4, devices=2, pad_batches=process_id)
  result = ev.evaluate(cases.fake_predict(), batches, num_classes=cases.NUM_CLASSES,
                       class_names=[f'class {i}' for i in range(cases.NUM_CLASSES)])
  ev.save_results(result, out_dir, prefix=f'process{process_id}')


if __name__ == '__main__':
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
