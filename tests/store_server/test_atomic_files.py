"""Outputs written whole or not at all: several files, links, streams, permissions, failures."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from store_server import atomic_files
from store_server.atomic_files import write_all

REPO = Path(__file__).resolve().parents[2]


def _text(text: str) -> atomic_files.Writer:
    return lambda handle: handle.write(text)  # type: ignore[return-value]


def _leftovers(*dirs: Path) -> list[str]:
    return sorted(p.name for d in dirs for p in d.iterdir() if p.name.startswith("."))


@pytest.fixture
def umask() -> Iterator[None]:
    before = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(before)


@pytest.fixture
def no_rename(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test, before any harm, if something is renamed over (a device, a pipe)."""

    def refuse(src: object, dst: object) -> None:
        raise AssertionError(f"renamed {src} over {dst}")

    monkeypatch.setattr(os, "replace", refuse)
    monkeypatch.setattr(os, "rename", refuse)


def test_every_output_is_written_with_no_temporary_file_left(tmp_path: Path) -> None:
    a, b = tmp_path / "a.csv", tmp_path / "b.json"
    b.write_text("old", encoding="utf-8")
    write_all({a: _text("é;1\r\n"), b: _text("{}")})
    # utf-8, and no newline translation: a CSV writer's \r\n stays as written
    assert a.read_bytes() == "é;1\r\n".encode() and b.read_text(encoding="utf-8") == "{}"
    assert _leftovers(tmp_path) == []


@pytest.mark.parametrize(
    ("second", "error"),
    [("missing/r.json", FileNotFoundError), ("a_directory", IsADirectoryError)],
)
def test_none_is_written_when_the_second_cannot_be(
    tmp_path: Path, second: str, error: type[OSError]
) -> None:
    (tmp_path / "a_directory").mkdir()
    kept = tmp_path / "kept.csv"
    kept.write_text("previous\n", encoding="utf-8")
    for first in (tmp_path / "new.csv", kept):
        with pytest.raises(error):
            write_all({first: _text("new\n"), tmp_path / second: _text("{}")})
        assert not (tmp_path / "new.csv").exists()
        assert kept.read_text(encoding="utf-8") == "previous\n"
        assert (tmp_path / "a_directory").is_dir() and _leftovers(tmp_path) == []


def test_a_failing_writer_leaves_the_existing_file_and_no_temporary_file(tmp_path: Path) -> None:
    out = tmp_path / "o.csv"
    out.write_text("previous\n", encoding="utf-8")

    def half(handle) -> None:  # type: ignore[no-untyped-def]
        handle.write("half a rep")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        write_all({out: half})

    def refuse(handle) -> None:  # type: ignore[no-untyped-def]
        raise ValueError("not finite")

    with pytest.raises(ValueError, match="not finite"):  # not an OSError: cleaned up all the same
        write_all({out: refuse})
    assert out.read_text(encoding="utf-8") == "previous\n" and _leftovers(tmp_path) == []


def test_a_later_rename_failing_puts_back_what_the_earlier_replaced(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_text("old a", encoding="utf-8")
    b.write_text("old b", encoding="utf-8")
    real = os.replace
    calls: list[object] = []

    def third_fails(src: object, dst: object) -> None:
        calls.append(dst)
        if len(calls) == 3:
            raise PermissionError(13, "Permission denied", str(dst))
        real(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", third_fails)
    with pytest.raises(PermissionError):
        write_all({a: _text("new a"), tmp_path / "new": _text("new"), c: _text("new c")})
    # a had a file: it is back; "new" had none: it is gone again; c was never reached
    assert a.read_text(encoding="utf-8") == "old a" and not (tmp_path / "new").exists()
    assert not c.exists() and b.read_text(encoding="utf-8") == "old b"
    assert _leftovers(tmp_path) == []


def test_permissions_follow_the_umask_and_an_existing_file_keeps_its_own(
    tmp_path: Path, umask: None
) -> None:
    new, private = tmp_path / "new.csv", tmp_path / "private.csv"
    private.write_text("old", encoding="utf-8")
    private.chmod(0o600)
    write_all({new: _text("x"), private: _text("y")})
    assert stat.S_IMODE(new.stat().st_mode) == 0o644  # as open() creates: not mkstemp's 0600
    assert stat.S_IMODE(private.stat().st_mode) == 0o600  # replaced, not made readable to all
    os.umask(0o077)
    write_all({tmp_path / "tight.csv": _text("z")})
    assert stat.S_IMODE((tmp_path / "tight.csv").stat().st_mode) == 0o600


def test_through_a_symbolic_link_the_file_it_points_to_is_replaced(tmp_path: Path) -> None:
    (tmp_path / "reports").mkdir()
    real = tmp_path / "reports" / "2026-W47.csv"
    real.write_text("old", encoding="utf-8")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    dangling = tmp_path / "next.csv"
    dangling.symlink_to(tmp_path / "reports" / "2026-W48.csv")
    write_all({link: _text("new"), dangling: _text("next")})
    assert link.is_symlink() and real.read_text(encoding="utf-8") == "new"
    assert dangling.is_symlink() and dangling.read_text(encoding="utf-8") == "next"
    assert _leftovers(tmp_path, tmp_path / "reports") == []


def test_a_pipe_is_written_as_is_after_the_files_are_complete(
    tmp_path: Path, no_rename: None
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    # a reader already there, so opening the pipe for writing does not wait for one
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    try:
        write_all({fifo: _text("streamed\n")})
        assert os.read(reader, 100) == b"streamed\n"
    finally:
        os.close(reader)
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and _leftovers(tmp_path) == []


def test_a_device_is_written_as_is_and_one_that_fails_places_no_file(
    tmp_path: Path, no_rename: None
) -> None:
    # no_rename: a regression must not rename over /dev/null (these tests may run as root)
    null = tmp_path / "null"
    null.symlink_to(os.devnull)
    write_all({Path(os.devnull): _text("gone"), null: _text("gone too")})
    assert null.is_symlink() and stat.S_ISCHR(Path(os.devnull).stat().st_mode)
    if not Path("/dev/full").exists():
        pytest.skip("no /dev/full to fail a write on")
    out = tmp_path / "o.csv"
    out.write_text("previous\n", encoding="utf-8")
    with pytest.raises(OSError, match="No space left"):
        write_all({out: _text("new\n"), Path("/dev/full"): _text("x" * 100_000)})
    assert out.read_text(encoding="utf-8") == "previous\n" and _leftovers(tmp_path) == []


def test_stdout_redirected_to_a_file_is_written_through_not_replaced(tmp_path: Path) -> None:
    # `cmd --out /dev/stdout >> log`: renamed over, the log would lose what it held and what
    # the command printed after (still written to the old, unlinked file).
    log = tmp_path / "log.txt"
    log.write_text("earlier\n", encoding="utf-8")
    code = (
        "from pathlib import Path\n"
        "from store_server.atomic_files import write_all\n"
        "print('before')\n"
        "write_all({Path('/dev/stdout'): lambda h: h.write('csv\\n')})\n"
        "print('after')\n"
    )
    with log.open("a", encoding="utf-8") as out:
        subprocess.run([sys.executable, "-c", code], stdout=out, cwd=REPO, check=True, timeout=60)
    assert log.read_text(encoding="utf-8") == "earlier\nbefore\ncsv\nafter\n"
    assert _leftovers(tmp_path) == []
