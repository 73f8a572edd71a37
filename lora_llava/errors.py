"""Errors a user can act on: bad config, bad data, a missing file, a refused push.

The entry points print these as one line and exit non-zero, without a traceback; anything else is a bug and
keeps its traceback. Messages say what was wrong, where (key, file, line, sample id) and what to do.
"""


class UserError(Exception):
    """An expected failure caused by input or environment, not by a bug in lora_llava."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(UserError, ValueError):
    """Input data that cannot be used; the message names the file, line or sample id."""
