"""The layout of `dermsweep runs`: which columns to show and how to fit them into the terminal's width.

Cells are never cut to a few characters: every column keeps its full width, and the columns that matter least are
left out (and named) when they do not fit. The run id stays whole when it fits, else it is cut to the shortest
prefix (8 characters at least) that no other run shown shares.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..tracking import run_format as rf
from .console import printable

GAP = 2  # spaces between columns
MIN_ID = 8
MAX_CELL = 24  # parameter values longer than this are cut (with "…"); --json has them whole

# Lower = kept longer when the width runs out.
KEEP_ALWAYS, OBJECTIVE, CONTEXT, PARAM, DETAIL = 0, 1, 2, 3, 4

ABBREVIATIONS = {"balanced_accuracy": "bal_acc", "accuracy": "acc", "top2_accuracy": "top2_acc"}


@dataclass
class Column:
    header: str
    cells: list[str]
    priority: int
    right: bool = False  # numbers align right

    @property
    def width(self) -> int:
        return max([len(self.header), *(len(c) for c in self.cells)])

    def cell(self, i: int) -> str:
        text = self.cells[i] if i < len(self.cells) else ""
        return text.rjust(self.width) if self.right else text.ljust(self.width)

    def head(self) -> str:
        return self.header.rjust(self.width) if self.right else self.header.ljust(self.width)


def metric_label(name: str) -> str:
    """final_val/balanced_accuracy -> val bal_acc; test/macro_f1 -> test macro_f1 (the title names it in full)."""
    key = rf.canonical(name)
    section, _, base = key.partition("/")
    section = {"final_val": "val"}.get(section, section)
    return f"{section} {ABBREVIATIONS.get(base, base)}" if base else key


def short_ids(run_ids: Sequence[str]) -> list[str]:
    """Each id cut to the shortest prefix (at least MIN_ID characters) that no other id in the list starts with."""
    n = MIN_ID
    while n < max((len(r) for r in run_ids), default=0) and len({r[:n] for r in run_ids}) < len(set(run_ids)):
        n += 1
    return [r[:n] for r in run_ids]


def total_width(columns: Sequence[Column]) -> int:
    return sum(c.width for c in columns) + GAP * max(len(columns) - 1, 0)


def fit(columns: list[Column], width: int, id_column: Column | None = None) -> tuple[list[Column], list[str]]:
    """The columns to show within `width` characters (in their order) and the headers of those left out.

    First the run ids are shortened (to the shortest unique prefix), then the least important columns are dropped,
    last ones first within a priority; KEEP_ALWAYS columns stay even if the line then runs over."""
    if total_width(columns) > width and id_column is not None:
        id_column.cells = short_ids(id_column.cells)
    kept = list(columns)
    dropped: list[str] = []
    for _, victim in sorted(enumerate(columns), key=lambda ic: (-ic[1].priority, -ic[0])):
        if total_width(kept) <= width or victim.priority == KEEP_ALWAYS:
            break
        kept.remove(victim)
        dropped.append(victim.header)
    return kept, list(reversed(dropped))


def render(columns: Sequence[Column]) -> list[str]:
    """Header, a rule, then one line per row; every cell passed through the printable filter."""
    rows = max((len(c.cells) for c in columns), default=0)
    gap = " " * GAP
    lines = [gap.join(c.head() for c in columns).rstrip(), gap.join("-" * c.width for c in columns)]
    lines += [gap.join(c.cell(i) for c in columns).rstrip() for i in range(rows)]
    return [printable(line) for line in lines]


def short_value(value: str | None) -> str:
    """Parameter values for a table: floats to 4 significant digits, long strings cut."""
    if value is None:
        return "-"
    try:
        f = float(value)
        if "." in value or "e" in value.lower():
            return f"{f:.4g}"
    except (TypeError, ValueError):
        pass
    value = printable(value)
    return value if len(value) <= MAX_CELL else value[: MAX_CELL - 1] + "…"


def param_labels(keys: Sequence[str]) -> dict[str, str]:
    """Short column headers for param keys: a group's chosen option by the group's name (augment.name -> augment),
    others by their last part where that is unambiguous (model.alpha -> alpha), else by their last two parts."""
    labels = {k: k.removesuffix(".name") if k.endswith(".name") else k.rpartition(".")[2] for k in keys}
    taken = list(labels.values())
    return {k: ".".join(k.split(".")[-2:]) if taken.count(label) > 1 else label for k, label in labels.items()}


def shown_params(keys: Sequence[str], rows: Sequence[dict[str, str]]) -> list[str]:
    """Of `keys` (params that differ somewhere), those that differ among `rows` and are not implied by a group's
    chosen option: with augment.name differing, augment.zoom is left out where each option has one zoom."""
    differ = [k for k in keys if len({r[k] for r in rows if k in r}) > 1]  # (a run without the key: not a value)
    out = []
    for key in differ:
        group, _, leaf = key.rpartition(".")
        name_key = f"{group}.name"
        if group and leaf != "name" and name_key in differ:
            by_option: dict[str | None, set[str | None]] = {}
            for r in rows:
                by_option.setdefault(r.get(name_key), set()).add(r.get(key))
            if all(len(values) == 1 for values in by_option.values()):
                continue
        out.append(key)
    return out
