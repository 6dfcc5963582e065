"""k-anonymisation: the guarantee on random tables, utility on Adult, the metric conventions."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analytics.cli import main
from analytics.hierarchy import Hierarchy, parse_hierarchy, read_hierarchy
from analytics.kanon import AnonymizeError, anonymize, quality

ADULT_QI = ["sex", "age", "race", "marital-status", "education", "native-country", "workclass",
            "occupation"]  # fmt: skip


def assert_k_anonymous(
    original: pd.DataFrame,
    out: pd.DataFrame,
    qi: list[str],
    hierarchies: dict[str, Hierarchy],
    numeric: list[str],
    k: int,
) -> int:
    """Independent check: classes >= k, values generalise the original; returns suppressed."""
    assert len(out) == len(original)
    suppressed = (out[qi].astype(str) == "*").all(axis=1)
    for column in original.columns:
        if column not in qi:
            assert out[column].tolist() == original[column].tolist()
    for column in qi:
        for before, after in zip(
            original.loc[~suppressed, column], out.loc[~suppressed, column], strict=True
        ):
            if column in numeric:
                if str(after).startswith("["):
                    lo, hi = (float(x) for x in str(after).strip("[]").split(","))
                    assert lo <= float(before) <= hi
                else:
                    assert float(after) == float(before)
            else:
                assert after in hierarchies[column].ancestors(str(before))
    sizes = out.loc[~suppressed, qi].astype(str).value_counts()
    assert sizes.empty or sizes.min() >= k
    return int(suppressed.sum())


@st.composite
def tables(draw: st.DrawFn) -> tuple[pd.DataFrame, dict[str, Hierarchy], int, float]:
    """A random table with two categorical QIs on random hierarchies, one numeric QI."""
    hierarchies = {}
    columns: dict[str, list] = {}
    n = draw(st.integers(min_value=1, max_value=60))
    for name in ("a", "b"):
        leaves = draw(st.integers(min_value=1, max_value=9))
        lines = []
        for leaf in range(leaves):
            depth = draw(st.integers(min_value=0, max_value=2))
            parents = [f"{name}{leaf % (3 - d)}-{d}" for d in range(depth)]
            lines.append([f"{name}{leaf}", *parents, "*"])
        hierarchies[name] = parse_hierarchy(lines)
        columns[name] = draw(
            st.lists(st.sampled_from([line[0] for line in lines]), min_size=n, max_size=n)
        )
    columns["x"] = draw(st.lists(st.integers(0, 40), min_size=n, max_size=n))
    columns["payload"] = list(range(n))
    k = draw(st.integers(min_value=2, max_value=6))
    budget = draw(st.sampled_from([0.0, 0.05, 0.2]))
    return pd.DataFrame(columns), hierarchies, k, budget


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(tables())
def test_every_output_is_k_anonymous(case: tuple) -> None:
    df, hierarchies, k, budget = case
    if len(df) < k:
        with pytest.raises(AnonymizeError):
            anonymize(df, ["a", "b", "x"], hierarchies, ["x"], k, budget)
        return
    result = anonymize(df, ["a", "b", "x"], hierarchies, ["x"], k, budget)
    suppressed = assert_k_anonymous(df, result.table, ["a", "b", "x"], hierarchies, ["x"], k)
    assert suppressed <= budget * len(df)
    assert result.metrics["suppressed"] == suppressed
    assert 0.0 <= result.metrics["ncp"] <= 1.0


def test_adult_beats_strict_mondrian(shared_data) -> None:
    adult = shared_data / "adult"
    df = pd.read_csv(adult / "adult.csv", sep=";", dtype=str, keep_default_na=False)
    hierarchies = {
        c: read_hierarchy(adult / "hierarchies" / f"{c}.csv") for c in ADULT_QI if c != "age"
    }
    result = anonymize(df, ADULT_QI, hierarchies, ["age"], 5, 0.01)
    suppressed = assert_k_anonymous(df, result.table, ADULT_QI, hierarchies, ["age"], 5)
    assert suppressed <= 0.01 * len(df)
    # strict Mondrian reaches 0.099 on this table (data README); the target is 0.065
    assert result.metrics["ncp"] <= 0.065


def test_metrics_follow_the_stated_conventions() -> None:
    h = {"c": parse_hierarchy([["x", "g", "*"], ["y", "g", "*"], ["z", "*"]])}
    original = pd.DataFrame({"c": ["x", "y", "z", "x", "y"], "n": ["1", "3", "5", "1", "2"]})
    out = pd.DataFrame({"c": ["g", "g", "*", "g", "g"], "n": ["[1,3]", "[1,3]", "*", "1", "2"]})
    m = quality(out, original, ["c", "n"], h, {"n"}, 2)
    # rows: (0.5 + 0.5)/2 twice, suppressed 1, (0.5 + 0)/2 twice -> (0.5+0.5+1+0.25+0.25)/5
    assert m["ncp"] == pytest.approx(0.5)
    # classes {(g,[1,3]): 2, (g,1): 1, (g,2): 1}; one suppressed row counts n = 5
    assert m["dm"] == 4 + 1 + 1 + 5
    assert m["classes"] == 3
    assert m["cavg"] == pytest.approx((4 / 3) / 2)
    assert m["suppressed"] == 1


def test_a_value_outside_the_hierarchy_is_refused() -> None:
    h = {"c": parse_hierarchy([["x", "*"], ["y", "*"]])}
    df = pd.DataFrame({"c": ["x", "y", "w"], "n": [1, 2, 3]})
    with pytest.raises(AnonymizeError, match="not in its hierarchy"):
        anonymize(df, ["c"], h, [], 2)


def test_identical_rows_stay_ungeneralised() -> None:
    h = {"c": parse_hierarchy([["x", "*"], ["y", "*"]])}
    df = pd.DataFrame({"c": ["x"] * 3 + ["y"] * 3, "n": [7] * 3 + [9] * 3})
    result = anonymize(df, ["c", "n"], h, ["n"], 3)
    assert result.table["c"].tolist() == df["c"].tolist()
    assert result.table["n"].tolist() == ["[7,7]"] * 3 + ["[9,9]"] * 3
    assert result.metrics["ncp"] == 0.0
    assert np.isclose(result.metrics["cavg"], 1.0)


def test_cli_keeps_separator_header_order_and_other_columns(tmp_path, capsys) -> None:
    hdir = tmp_path / "h"
    hdir.mkdir()
    (hdir / "job.csv").write_text("nurse;care;*\ndoctor;care;*\npilot;transport;*\n")
    rows = ["id;job;age;note"] + [
        f"{i};{['nurse', 'doctor', 'pilot'][i % 3]};{20 + (i * 7) % 30};n{i}" for i in range(20)
    ]
    src = tmp_path / "t.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "o.csv"
    argv = ["anonymize", "--input", str(src), "--sep", ";", "--qi", "job,age", "--hierarchies",
            str(hdir), "--numeric", "age", "--k", "4", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"ncp", "dm", "cavg", "suppressed", "classes", "seconds"} <= set(report)
    lines = out.read_text().splitlines()
    assert lines[0] == "id;job;age;note"
    cells = [line.split(";") for line in lines[1:]]
    assert [c[0] for c in cells] == [str(i) for i in range(20)]
    assert [c[3] for c in cells] == [f"n{i}" for i in range(20)]
    table = pd.DataFrame(cells, columns=["id", "job", "age", "note"])
    assert table.groupby(["job", "age"]).size().min() >= 4


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (["--k", "1"], "--k"),
        (["--qi", "job,age,nope"], "nope"),
        (["--numeric", "note"], "note"),
        (["--input", "/nonexistent/t.csv"], "no such file"),
        (["--k", "many"], "invalid int"),
    ],
)
def test_cli_bad_input_is_one_stderr_line(tmp_path, capsys, change, needle) -> None:
    hdir = tmp_path / "h"
    hdir.mkdir()
    (hdir / "job.csv").write_text("nurse;*\npilot;*\n")
    src = tmp_path / "t.csv"
    src.write_text("job;age;note\n" + "nurse;30;x\npilot;40;y\n" * 5)
    args = {"--input": str(src), "--sep": ";", "--qi": "job,age", "--hierarchies": str(hdir),
            "--numeric": "age", "--k": "2", "--out": str(tmp_path / "o.csv")}  # fmt: skip
    args.update(dict(zip(change[::2], change[1::2], strict=True)))
    argv = ["anonymize", *[x for pair in args.items() for x in pair]]
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse's own refusals exit the same way
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and needle in err


def test_huge_hierarchy_falls_back_to_cuts_and_stays_k_anonymous() -> None:
    # 2100 leaves make pairwise LCA tables too large, so cuts replace k-member clustering
    lines = [[f"v{i}", f"g{i // 50}", f"h{i // 700}", "*"] for i in range(2100)]
    h = {"c": parse_hierarchy(lines)}
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"c": [f"v{i}" for i in rng.integers(0, 2100, 400)],
                       "n": rng.integers(0, 90, 400)})  # fmt: skip
    result = anonymize(df, ["c", "n"], h, ["n"], 4)
    assert assert_k_anonymous(df, result.table, ["c", "n"], h, ["n"], 4) == 0
    assert result.metrics["ncp"] < 0.5


@pytest.mark.parametrize(("qi", "numeric"), [(["n"], ["n"]), (["c"], []), (["c", "n"], ["n"])])
def test_only_numeric_or_only_categorical_quasi_identifiers(qi, numeric) -> None:
    h = {"c": parse_hierarchy([[f"v{i}", f"g{i % 3}", "*"] for i in range(9)])}
    rng = np.random.default_rng(4)
    df = pd.DataFrame({"c": [f"v{i}" for i in rng.integers(0, 9, 60)],
                       "n": rng.integers(0, 50, 60), "keep": range(60)})  # fmt: skip
    result = anonymize(df, qi, h, numeric, 5, 0.05)
    assert assert_k_anonymous(df, result.table, qi, h, numeric, 5) <= 3


def test_cli_comma_table_reads_semicolon_hierarchies(tmp_path, capsys) -> None:
    hdir = tmp_path / "h"
    hdir.mkdir()
    (hdir / "job.csv").write_text("nurse;care;*\ndoctor;care;*\n")
    src = tmp_path / "t.csv"
    src.write_text("job,x\n" + "nurse,1\ndoctor,2\n" * 3)
    out = tmp_path / "o.csv"
    argv = ["anonymize", "--input", str(src), "--sep", ",", "--qi", "job", "--hierarchies",
            str(hdir), "--k", "3", "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    assert out.read_text().splitlines()[0] == "job,x"
    assert json.loads(capsys.readouterr().out)["classes"] == 2
