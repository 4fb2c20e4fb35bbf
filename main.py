"""Command line of nonlocal_jax: flags only; the work is done by importable library functions.

    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/nl --mode=train

Training and evaluation are not implemented yet; this entry point says so instead of failing obscurely.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file, optionally with an argument '
                                '(configs/kinetics_nl.py:arch=i3d).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the saved config.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (resumes if the workdir has a checkpoint) or eval.')


def main(argv):
  """Dispatches on --mode."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}. Use --config, --workdir and --mode.')
  raise SystemExit(f'--mode={FLAGS.mode} is not available yet: training and evaluation are still being built '
                   '(see the README, "What works today"). The non-local block can be used from '
                   'nonlocal_jax.layers today.')


if __name__ == '__main__':
  app.run(main)
