"""Files under var/ that only the account running the orchestrator may read.

var/ holds the SQLite database, the embedded Redis (its password, URL and log) and whatever else the
processes of one machine share: the directory is 0700 and each file 0600, whatever the umask, and an
existing var/ from an older version is tightened on the next start. No Django import: settings.py
uses it before the apps load.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create the directory (and parents) and make it 0700; a directory of someone else is left alone."""
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    with contextlib.suppress(PermissionError):
        path.chmod(DIR_MODE)
    return path


def private_file(path: Path) -> Path:
    """Make the file exist with mode 0600 (SQLite gives its -wal and -shm files the database's mode);
    a file in a directory that does not exist is left to whoever reports that."""
    if not path.parent.is_dir():
        return path
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, FILE_MODE))
    with contextlib.suppress(PermissionError):
        path.chmod(FILE_MODE)
    return path


def write_private(path: Path, text: str) -> None:
    """Replace the file's content atomically; the new file is 0600 before a byte is written."""
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, FILE_MODE)
    os.fchmod(descriptor, FILE_MODE)  # a stale partial file keeps its old mode otherwise
    with os.fdopen(descriptor, "w") as handle:
        handle.write(text)
    partial.replace(path)
