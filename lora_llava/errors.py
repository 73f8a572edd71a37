"""Errors a user can act on: bad config, bad data, a missing file, a refused push.

The entry points print these as one line and exit non-zero, without a traceback; anything else is a bug and
keeps its traceback. Messages say what was wrong, where (key, file, line, sample id) and what to do.
"""

import errno
from contextlib import contextmanager


class UserError(Exception):
    """An expected failure caused by input or environment, not by a bug in lora_llava."""


class ConfigError(UserError, ValueError):
    """A config value that cannot work; the message names the key."""


class DataError(UserError, ValueError):
    """Input data that cannot be used; the message names the file, line or sample id."""


class DiskFullError(UserError):
    """No space left on the device while writing; the message names what was being written and where."""


@contextmanager
def disk_full_message(what: str, where, cleanup=None):
    """Turn ENOSPC raised in the block into a DiskFullError saying so; `cleanup` (a half-written folder) is
    removed first to give the space back."""
    try:
        yield
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        import shutil

        if cleanup is not None:
            shutil.rmtree(cleanup, ignore_errors=True)
        try:
            free = f"{shutil.disk_usage(where).free / 2**30:.1f} GiB free now"
        except OSError:
            free = "free space unknown"
        raise DiskFullError(f"the disk is full (no space left on device) while {what} in {where} "
                            f"({free}): free some space or use a directory on a larger disk, then run again "
                            "(add train.resume=auto to continue from the last complete checkpoint)") from None
