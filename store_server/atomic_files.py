"""Output files written whole or not at all, several at once: what the command lines' --out and
--report go through, so a failed run never leaves half a file or one output without another."""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO

Writer = Callable[[IO[str]], None]

# Random temporary names collide only with leftovers of a killed run; a few draws get past them.
_ATTEMPTS = 100


def write_all(outputs: Mapping[Path, Writer]) -> None:
    """Write each path with its writer, all or none; raises the OSError that stopped it."""
    staged: list[tuple[Path, Path]] = []  # (temporary file, the file it is to replace)
    streams: list[tuple[Path | int, Writer]] = []
    try:
        for out, write in outputs.items():
            fd = _own_descriptor(out)
            if fd is not None:
                streams.append((fd, write))
                continue
            target, mode = _target(out)
            if target is None:
                streams.append((out, write))
                continue
            fd, tmp = _create_beside(target, mode)
            staged.append((tmp, target))
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as handle:
                write(handle)
        # What goes to a pipe or a terminal cannot be taken back: it goes once every file is
        # complete on disk (where a full disk or a missing directory shows), and before any is
        # placed, so a reader that left still means no file is replaced.
        for out, write in streams:
            if isinstance(out, int):
                # Whatever this process printed there first goes first; a duplicate keeps the
                # descriptor's offset and append mode (`>> log`), where reopening with "w"
                # would truncate what the shell's redirection had written.
                sys.stdout.flush()
                sys.stderr.flush()
                with os.fdopen(os.dup(out), "w", newline="", encoding="utf-8") as handle:
                    write(handle)
                continue
            with open(out, "w", newline="", encoding="utf-8") as handle:
                write(handle)
        _place(staged)
    except BaseException:
        for tmp, _target_path in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        raise


def _own_descriptor(out: Path) -> int | None:
    """This process's stdout or stderr if out is it (/dev/stdout, /proc/self/fd/1, a link to
    one, or the very file a shell redirected it to), else None."""
    try:
        st = os.stat(out)
    except OSError:
        return None
    for fd in (1, 2):
        try:
            own = os.fstat(fd)
        except OSError:
            continue  # closed
        # Replaced by a renamed file, a redirected stdout would go on writing to the old one,
        # unlinked: all else the command and the shell write there would be lost.
        if (st.st_dev, st.st_ino) == (own.st_dev, own.st_ino):
            return fd
    return None


def _target(out: Path) -> tuple[Path | None, int | None]:
    """The regular file to replace for out and the mode to give it; None for one written as is."""
    try:
        st = os.stat(out)
    except FileNotFoundError:
        st = None
    if st is not None and stat.S_ISDIR(st.st_mode):
        # refused before anything is written, not found out when renaming over it
        raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
    if st is not None and not stat.S_ISREG(st.st_mode):
        # /dev/stdout, a pipe, /dev/null: renaming over one would replace the device, not feed it
        return None, None
    # Through a symbolic link the file it points to is replaced and the link stays; an existing
    # file keeps its permissions, as a plain open() leaves them (a report chmod 600 stays so).
    return Path(os.path.realpath(out)), None if st is None else stat.S_IMODE(st.st_mode) & 0o777


def _create_beside(target: Path, mode: int | None) -> tuple[int, Path]:
    """A new, unique temporary file in target's directory (so renaming it is atomic), open."""
    for _ in range(_ATTEMPTS):
        # Dot-prefixed: a glob of the outputs does not pick it up half written.
        tmp = target.with_name(f".{target.name}.{secrets.token_hex(4)}.tmp")
        try:
            # 0o666 through the umask (and any default ACL), as open() creates, not mkstemp's 0600;
            # O_EXCL also refuses a link planted under the name.
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        if mode is not None:
            try:
                os.fchmod(fd, mode)
            except OSError:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        return fd, tmp
    raise FileExistsError(errno.EEXIST, "no unused temporary name", str(target.parent))


def _place(staged: list[tuple[Path, Path]]) -> None:
    """Rename each temporary file over its target; if one fails, put back what the others held."""
    placed: list[tuple[Path, Path | None]] = []  # (target, a second name for what it held)
    try:
        for i, (tmp, target) in enumerate(staged):
            # Nothing can fail after the last rename, so only the earlier files need keeping.
            aside = _keep_aside(target) if i < len(staged) - 1 else None
            try:
                os.replace(tmp, target)
            except BaseException:
                if aside is not None:
                    with contextlib.suppress(OSError):
                        os.unlink(aside)
                raise
            placed.append((target, aside))
    except BaseException:
        for target, aside in reversed(placed):
            with contextlib.suppress(OSError):
                if aside is not None:
                    os.replace(aside, target)
                else:  # it did not exist before (or could not be kept): none means none
                    os.unlink(target)
        raise
    for _target_path, aside in placed:
        if aside is not None:
            with contextlib.suppress(OSError):
                os.unlink(aside)


def _keep_aside(target: Path) -> Path | None:
    """A hard link to the file target is now, so it can be put back; None if there is none."""
    for _ in range(_ATTEMPTS):
        aside = target.with_name(f".{target.name}.{secrets.token_hex(4)}.old")
        try:
            os.link(target, aside)
        except FileExistsError:
            continue
        except OSError:
            # no such file yet, or a file system (or protected_hardlinks) that refuses links:
            # a failure then removes the new file rather than restoring the old one
            return None
        return aside
    return None
