"""Command line of nonlocal_jax: flags only; the work is done by importable library functions.

    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/nl            # trains; rerun to resume
    python main.py --config=configs/kinetics_nl.py --workdir=/tmp/nl --mode=eval  # multi-view test
    python main.py --config=configs/synthetic_nl.py --workdir=/tmp/s --config.train.num_steps=100
    python main.py --zoo=i3d_nonlocal_32x2 --workdir=/tmp/zoo --mode=eval   # an official model (nonlocal_jax.zoo)

Any config field can be overridden with --config.<field>=<value>; a problem with the config, the data or the
workdir ends the run at start-up with one sentence saying what to change. The console shows progress, start-up
facts, checkpoints and the result; the libraries' logs go to <workdir>/logs/main.log (only their errors show;
absl's --verbosity=-1 shows their warnings too, 0 their INFO lines, 1 DEBUG).
"""

import os

from absl import app
from absl import flags
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Path to a config file, optionally with an argument '
                                '(configs/kinetics_nl.py:arch=i3d).', lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints, metrics and the saved config.')
flags.DEFINE_enum('mode', 'train', ['train', 'eval'], 'train (resumes if the workdir has a checkpoint) or eval.')
flags.DEFINE_string('zoo', None, 'With --mode=eval: test the official model NAME (nonlocal_jax.zoo), written into '
                    '--workdir first; --config defaults to its own.')


def main(argv):
  """Dispatches on --mode; expected failures end with their message, not a traceback."""
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}. Use --config, --workdir and --mode.')
  if FLAGS.zoo and FLAGS.mode != 'eval':
    raise app.UsageError('--zoo=NAME goes with --mode=eval; to fine-tune from an official model, pass '
                         '--config.train.init_checkpoint=zoo:NAME.')
  if FLAGS.config is None and not FLAGS.zoo:
    raise app.UsageError('Pass --config=configs/<name>.py (for example configs/synthetic_nl.py).')
  # absl's app makes 0 (INFO) its default; here the libraries' warnings (TFDS and TensorFlow deprecations on
  # every run) stay in the log file too, and only their errors show, unless --verbosity is given.
  verbosity = FLAGS.verbosity if FLAGS['verbosity'].present else -2
  # TensorFlow's and XLA's C++ logs cannot be sent to the log file: below --verbosity=0 only their errors show.
  if verbosity < 0:
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  # Imported once the flags are parsed: the line above must be set before TensorFlow and JAX load.
  from nonlocal_jax import console  # pylint: disable=g-import-not-at-top
  console.setup(verbosity)
  with console.native_stderr_to_log('Importing TensorFlow and JAX'):
    from nonlocal_jax import training  # pylint: disable=g-import-not-at-top
    from nonlocal_jax import convert, zoo  # pylint: disable=g-import-not-at-top
    from nonlocal_jax.training import metric_writer  # pylint: disable=g-import-not-at-top
    metric_writer.clu_writers()  # TensorFlow, where it is installed: its native start-up lines go to the log.
  try:
    if FLAGS.mode == 'train':
      training.train_and_evaluate(FLAGS.config, FLAGS.workdir)
    else:
      config = FLAGS.config
      if FLAGS.zoo:
        config = config or zoo.config_of(zoo.get(FLAGS.zoo))
        convert.pretrained_to_workdir(FLAGS.zoo, config, FLAGS.workdir, evaluate=True)
      training.evaluate_checkpoint(config, FLAGS.workdir)
  except (training.ConfigError, training.NonFiniteLossError, zoo.ZooError, convert.ConversionError) as e:
    raise SystemExit(f'Error: {e}') from None


def parse_flags(argv):
  """absl's parsing, with a bad --config override (unknown field, wrong type) or a config file's own argument error
  (configs/kinetics_nl.py:depth=152) reported in one sentence."""
  try:
    return FLAGS(argv)
  except flags.Error as e:
    # ml_collections re-raises a config file's ValueError with its traceback as text, and absl wraps that: the
    # file's own sentence is the innermost exception of the chain.
    chain = [e]
    while chain[-1].__context__ is not None:
      chain.append(chain[-1].__context__)
    wrapped = len(chain) > 2 and str(chain[1]).startswith('Error whilst parsing config file')
    raise SystemExit(f'Error: {chain[-1] if wrapped and isinstance(chain[-1], ValueError) else e}') from None
  except (AttributeError, KeyError, TypeError, ValueError) as e:
    # Imported on this error path only: JAX must not load before main() has set TF_CPP_MIN_LOG_LEVEL.
    from nonlocal_jax.models import renamed_field  # pylint: disable=g-import-not-at-top
    for arg in argv:
      field = arg.split('=', 1)[0].removeprefix('--config.model.')
      if arg.startswith('--config.model.') and renamed_field(field):
        raise SystemExit(f'Error: --config.model.{field} is now --config.model.{renamed_field(field)} (the block '
                         'options live in config.model.nonlocal_block).') from None
    detail = ' '.join(str(e).replace('\\n', ' ').replace('\\', '').replace("'", '').split())
    raise SystemExit(f'Error: a --config override is invalid ({detail}): fix the field name or value.') from None


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
