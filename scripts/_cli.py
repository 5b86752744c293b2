"""Checks the command-line scripts run before importing anything heavy (importing ilat_ext loads
Lightning, which takes seconds): a missing file or run answers at once."""
import os
import sys
from typing import Iterable, Optional, Tuple


def report_missing(args, files: Iterable[Tuple[str, str]] = (), runs: Iterable[str] = ()) -> Optional[int]:
    """Print "error: --FLAG WHAT not found: PATH" for the first given path that does not exist and
    return 2 (the scripts' exit code for bad input); None when all are there.
    files: (flag, what) pairs naming regular files; runs: flags naming run folders or checkpoints."""
    checks = [(flag, what, os.path.isfile) for flag, what in files] + [(flag, "run", os.path.exists) for flag in runs]
    for flag, what, exists in checks:
        path = getattr(args, flag)
        if path is not None and not exists(path):
            print(f"error: --{flag} {what} not found: {path!r}", file=sys.stderr)
            return 2
    return None
