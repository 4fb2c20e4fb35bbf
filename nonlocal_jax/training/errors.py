"""The errors of training that end a run with one sentence for people (main.py prints them without a traceback)."""


class ConfigError(ValueError):
  """The config, the workdir or its checkpoints cannot work; the message says what to change."""
