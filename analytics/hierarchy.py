"""Generalisation hierarchies in the ARX format: one line per leaf, leaf first, up to `*`."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

ROOT = "*"


class HierarchyError(ValueError):
    """A hierarchy file or table that cannot be used as given."""


@dataclass(frozen=True)
class Hierarchy:
    """Leaf value -> its labels from the leaf itself up to `*` (lines may differ in depth)."""

    lines: dict[str, tuple[str, ...]]

    @property
    def leaves(self) -> list[str]:
        """Leaf values in file order."""
        return list(self.lines)

    def ancestors(self, leaf: str) -> tuple[str, ...]:
        """The labels a leaf may be generalised to, most specific first (the leaf included)."""
        return self.lines[leaf]


def parse_hierarchy(rows: list[list[str]], source: str = "hierarchy") -> Hierarchy:
    """Build a hierarchy from already split lines, checking the shape ARX files promise."""
    lines: dict[str, tuple[str, ...]] = {}
    for number, raw in enumerate(rows, start=1):
        labels = tuple(cell.strip() for cell in raw)
        # trailing empty cells appear when a tool pads short lines with separators
        while labels and labels[-1] == "":
            labels = labels[:-1]
        if not labels:
            continue
        if "" in labels:
            raise HierarchyError(f"{source}: line {number} has an empty label")
        if labels[-1] != ROOT:
            labels = (*labels, ROOT)
        if labels[0] in lines:
            raise HierarchyError(f"{source}: leaf {labels[0]!r} appears on two lines")
        if len(set(labels)) != len(labels):
            raise HierarchyError(f"{source}: line {number} repeats a label")
        lines[labels[0]] = labels
    if not lines:
        raise HierarchyError(f"{source}: no lines")
    return Hierarchy(lines)


def read_hierarchy(path: Path, sep: str = ";") -> Hierarchy:
    """Read one ARX hierarchy file."""
    try:
        # utf-8-sig: spreadsheet exports start with a BOM that would otherwise glue onto the
        # first leaf and make it unknown
        with path.open(newline="", encoding="utf-8-sig") as handle:
            rows = list(csv.reader(handle, delimiter=sep))
    except OSError as exc:
        raise HierarchyError(f"cannot read hierarchy {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise HierarchyError(f"cannot read hierarchy {path}: not UTF-8 text") from exc
    except csv.Error as exc:  # e.g. a label over the csv module's 128 KiB field limit
        raise HierarchyError(f"cannot read hierarchy {path}: {exc}") from exc
    return parse_hierarchy(rows, source=str(path))
