"""The DPO commands on hostile files: an --out that is an input, a write cut short, weights and
ages that are not finite, a BOM, a missing directory, a separator pandas cannot use."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

from analytics.cli import main
from analytics.segments import describe_report
from tests.helpers import run_python

HIERARCHY = "75101;75;*\n75102;75;*\n92012;92;*\n"


def subscribers(path: Path, weights: list[str], area: str = "75101") -> Path:
    """A subscribers CSV: one row per weight, all in one area."""
    lines = ["subscriber,area,drama"] + [f"s{i},{area},{w}" for i, w in enumerate(weights)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def table(path: Path, ages: list[str]) -> Path:
    """A ;-separated table with sex and age, plus an ID column the command must keep."""
    rows = ["ID;sex;age"] + [f"{i};{'Male' if i % 2 else 'Female'};{a}" for i, a in enumerate(ages)]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    """A valid subscribers file, its hierarchy, a table and the table's hierarchy directory."""
    hierarchy = tmp_path / "h.csv"
    hierarchy.write_text(HIERARCHY, encoding="utf-8")
    hdir = tmp_path / "hier"
    hdir.mkdir()
    (hdir / "sex.csv").write_text("Male;*\nFemale;*\n", encoding="utf-8")
    return {
        "subscribers": subscribers(tmp_path / "s.csv", ["0.2"] * 6),
        "hierarchy": hierarchy,
        "table": table(tmp_path / "t.csv", [str(20 + i % 30) for i in range(40)]),
        "hdir": hdir,
    }


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The single stderr line of a refused command (and nothing on stdout)."""
    out, err = capsys.readouterr()
    assert out == "" and len(err.splitlines()) == 1, err
    return err


def taste(files: dict[str, Path], out: Path | str) -> list[str]:
    """The taste-report argv on the fixture files."""
    return ["taste-report", "--subscribers", str(files["subscribers"]),
            "--hierarchy", str(files["hierarchy"]), "--k", "5", "--out", str(out)]  # fmt: skip


def anon(files: dict[str, Path], out: Path | str, table_path: Path | None = None) -> list[str]:
    """The anonymize argv on the fixture table (or another one)."""
    return ["anonymize", "--input", str(table_path or files["table"]), "--sep", ";",
            "--qi", "sex,age", "--numeric", "age", "--hierarchies", str(files["hdir"]),
            "--k", "5", "--out", str(out)]  # fmt: skip


def test_out_equal_to_an_input_is_refused_and_the_input_kept(files, tmp_path, capsys):
    before = {name: path.read_bytes() for name, path in files.items() if path.is_file()}
    link = tmp_path / "link.csv"
    link.symlink_to(files["subscribers"])
    hard = tmp_path / "hard.csv"
    os.link(files["hierarchy"], hard)
    for argv in (
        taste(files, files["subscribers"]),
        taste(files, tmp_path / "hier" / ".." / "h.csv"),  # the hierarchy, by another path
        taste(files, link),  # the subscribers, through a symbolic link
        taste(files, hard),  # the hierarchy, through a hard link
        anon(files, files["table"]),
        anon(files, files["hdir"] / "sex.csv"),  # a hierarchy file is an input too
    ):
        assert main(argv) == 2
        assert "is also an input" in one_error_line(capsys)
    after = {name: path.read_bytes() for name, path in files.items() if path.is_file()}
    assert after == before


def test_a_write_cut_short_leaves_the_previous_output_and_no_partial_file(files, tmp_path):
    big = table(tmp_path / "big.csv", [str(20 + i % 50) for i in range(3000)])
    out = tmp_path / "o.csv"
    out.write_text("previous report\n", encoding="utf-8")
    # the command runs with files capped at 8 KiB (a full disk, as far as it can tell): the
    # cap is set in a small launcher, since preexec_fn is unsafe in a test run with threads
    launcher = (
        "import os, resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (8192, 8192)); "
        "os.execv(sys.executable, [sys.executable, '-m', 'analytics', *sys.argv[1:]])"
    )
    done = run_python("-c", launcher, *anon(files, out, big), cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert len(done.stderr.splitlines()) == 1 and "cannot write" in done.stderr
    assert out.read_text(encoding="utf-8") == "previous report\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["big.csv", "h.csv", "hier", "o.csv",
                                                          "s.csv", "t.csv"]  # fmt: skip


def test_a_successful_write_replaces_the_file_a_link_points_to(files, tmp_path, capsys):
    real = tmp_path / "real.csv"
    real.write_text("old\n", encoding="utf-8")
    link = tmp_path / "latest.csv"
    link.symlink_to(real)
    assert main(taste(files, link)) == 0
    capsys.readouterr()
    assert link.is_symlink() and real.read_text(encoding="utf-8").startswith("area,subscribers")
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize(
    ("weights", "words"),
    [
        (["inf"] + ["0.1"] * 5, "not finite"),
        (["1e400"] + ["0.1"] * 5, "not finite"),
        (["-inf"] + ["0.1"] * 5, "not finite"),
        (["1e308"] * 6, "overflow"),
    ],
)
def test_weights_that_are_not_finite_or_overflow_are_refused(files, tmp_path, capsys,
                                                            weights, words):  # fmt: skip
    subscribers(files["subscribers"], weights)
    out = tmp_path / "r.csv"
    assert main(taste(files, out)) == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


@pytest.mark.parametrize(
    ("ages", "words"),
    [
        (["inf"] + ["30"] * 9, "not a finite number"),
        (["1e400"] + ["30"] * 9, "not a finite number"),
        (["1e308", "-1e308"] + ["30"] * 8, "overflows"),
    ],
)
def test_ages_that_are_not_finite_or_overflow_are_refused(files, tmp_path, capsys, ages, words):
    out = tmp_path / "o.csv"
    assert main(anon(files, out, table(tmp_path / "bad.csv", ages))) == 2
    assert words in one_error_line(capsys)
    assert not out.exists()


def test_a_large_but_finite_age_still_gives_finite_figures(files, tmp_path, capsys):
    out = tmp_path / "o.csv"
    assert main(anon(files, out, table(tmp_path / "big.csv", ["1e308"] + ["30"] * 9))) == 0
    printed = capsys.readouterr().out
    assert "NaN" not in printed and json.loads(printed)["ncp"] >= 0


def test_a_hierarchy_with_a_byte_order_mark_is_read(files, tmp_path, capsys):
    files["hierarchy"].write_bytes(b"\xef\xbb\xbf" + HIERARCHY.encode())
    out = tmp_path / "r.csv"
    assert main(taste(files, out)) == 0
    capsys.readouterr()
    assert pd.read_csv(out, dtype={"area": str})["area"].tolist() == ["75101"]


def test_an_output_in_a_missing_directory_says_so(files, tmp_path, capsys):
    out = tmp_path / "nowhere" / "r.csv"
    assert main(taste(files, out)) == 2
    err = one_error_line(capsys)
    assert f"directory {out.parent} does not exist" in err and "None" not in err
    assert main(anon(files, out)) == 2
    assert "does not exist" in one_error_line(capsys)


@pytest.mark.parametrize("sep", [";;", "ab", '"', ""])
def test_a_separator_that_is_not_one_character_is_one_line(files, tmp_path, sep):
    argv = anon(files, tmp_path / "o.csv")
    argv[argv.index("--sep") + 1] = sep
    # a real process: pandas' ParserWarning would go to its stderr, not to pytest's recorder
    done = run_python("-m", "analytics", *argv, cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.splitlines() == [
        f"analytics anonymize: error: --sep must be one character, not a quote or a line break: "
        f"{sep!r}"
    ]


def test_top_genres_leave_out_genres_nobody_in_the_row_likes() -> None:
    report = pd.DataFrame(
        {"area": ["a", "b"], "subscribers": [5, 9], "drama": [0.0, 0.0],
         "comedy": [1.0, 0.0], "jazz": [0.0, 0.0]}
    )  # fmt: skip
    out = describe_report(report, n_top=3, n_segments=1)
    assert out["top_genres"].tolist() == ["comedy", ""]


def test_a_hierarchy_label_over_the_csv_field_limit_is_one_line(files, tmp_path, capsys):
    # The csv module's 128 KiB field limit was a _csv.Error traceback, for both commands.
    big = "x" * (200 * 1024) + ";*\n"
    files["hierarchy"].write_text(HIERARCHY + big, encoding="utf-8")
    (files["hdir"] / "sex.csv").write_text("Male;*\nFemale;*\n" + big, encoding="utf-8")
    out = tmp_path / "o.csv"
    for argv in (taste(files, out), anon(files, out)):
        assert main(argv) == 2
        assert "field larger than field limit" in one_error_line(capsys)
        assert not out.exists()


def test_a_column_named_twice_is_refused(files, tmp_path, capsys):
    # pandas renamed the copy (sex -> sex.1): a header unlike the input's, a copy left as is.
    dup = tmp_path / "dup.csv"
    dup.write_text("ID;sex;sex;age\n" + "".join(f"{i};Male;Male;30\n" for i in range(10)))
    out = tmp_path / "o.csv"
    assert main(anon(files, out, dup)) == 2
    assert "column 'sex' appears twice in the header" in one_error_line(capsys)
    files["subscribers"].write_text(
        "subscriber,area,drama,drama\n" + "".join(f"s{i},75101,0.1,0.2\n" for i in range(6))
    )
    assert main(taste(files, out)) == 2
    assert "column 'drama' appears twice in the header" in one_error_line(capsys)
    assert not out.exists()


def test_a_genre_named_like_a_report_column_is_refused(files, tmp_path, capsys):
    # A genre `subscribers` overwrote the row's count with the genre's mean.
    files["subscribers"].write_text(
        "subscriber,area,subscribers\n" + "".join(f"s{i},75101,0.1\n" for i in range(6))
    )
    out = tmp_path / "r.csv"
    assert main(taste(files, out)) == 2
    assert "genre column 'subscribers' is a column the report uses" in one_error_line(capsys)
    assert not out.exists()
