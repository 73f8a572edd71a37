"""Errors a user can act on: bad config, bad data, a missing file, a refused push.

The entry points print these as one line and exit non-zero, without a traceback; anything else is a bug and
keeps its traceback. Messages say what was wrong, where (key, file, line, sample id) and what to do.
`LORA_LLAVA_DEBUG=1` shows the full traceback of an expected error too.
"""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from contextlib import contextmanager

DEBUG_ENV = "LORA_LLAVA_DEBUG"
EXIT_CODE = 2  # like argparse for a usage error; 1 stays a crash, 130/143 an interrupted run


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
class MissingPathError(UserError, FileNotFoundError):
    """A file or folder named by the config (adapter=, data.path, train.resume, ...) that is not there."""


@contextmanager
def cannot_load(error: type[UserError], what: str, hint: str):
    """An OSError while loading `what` (no network, not on the Hub nor in the cache, no such folder: how
    transformers, datasets and huggingface_hub report these) becomes `error`, one line with `hint`."""
    try:
        yield
    except UserError:
        raise
    except OSError as err:
        raise error(f"{what}: cannot load it ({one_line(str(err))[:400]}). {hint}") from err


def debugging() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


def one_line(message: str) -> str:
    """A message on one line: continuation lines joined with '; ', blank ones dropped."""
    return "; ".join(part.strip() for part in str(message).splitlines() if part.strip())


def exit_with(prog: str, message: str) -> None:
    """Print `prog: error: message` (one line) and a pointer to the debug switch on stderr; exit non-zero."""
    print(f"{prog}: error: {one_line(message)} (full traceback: {DEBUG_ENV}=1)", file=sys.stderr)
    raise SystemExit(EXIT_CODE)


def run_entry(prog: str, main: Callable[[], None], expected: tuple[type[BaseException], ...] = (),
              describe: Callable[[BaseException], str] = str) -> None:
    """Run an entry point: expected errors (UserError and `expected`) end in one line, unless debugging."""
    try:
        main()
    except (UserError, *expected) as err:
        if debugging():
            raise
        exit_with(prog, describe(err))
