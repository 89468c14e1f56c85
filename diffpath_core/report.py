"""Tables as the book shows them: written to CSV, read back from it, styled for reading.

A results page shows numbers read back from the CSV written beside it, so the page and the file cannot
disagree. Styling marks the best value of each row in bold, sets the average row apart and links each
method name to its section of the Method page.
"""
from __future__ import annotations

import os
from pathlib import Path

# Section labels of book/method.md, e.g. "(method-diffpathv2)=" before its heading.
METHOD_SECTIONS = {
    "DiffPath-1D": "method-diffpath",
    "DiffPath-6D": "method-diffpath",
    "DiffPathV2": "method-diffpathv2",
    "DiffPathV2-PS": "method-variants",
    "SpatialPath": "method-spatial",
    "Reconstruction": "method-baselines",
    "Border mean": "method-baselines",
}
METHOD_PAGE = "../method.html"  # from book/generated/<page>.html


def pair_label(id_title: str, ood_title: str) -> str:
    return f"{id_title} → {ood_title}"


def pivot_metric(rows, metric: str, methods, pair_title) -> "pd.DataFrame":
    """pairs × methods table of one metric from evaluation rows, with an ``average`` row."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    frame["pair"] = [pair_title(a, b) for a, b in zip(frame["id"], frame["ood"])]
    table = frame.pivot(index="pair", columns="method", values=metric)
    table = table.reindex(index=list(dict.fromkeys(frame["pair"])), columns=[m for m in methods if m in table])
    table.loc["average"] = table.mean()
    table.index.name, table.columns.name = "ID → OOD", None
    return table


def interval_table(result, methods, pair_title) -> "pd.DataFrame":
    """pairs × methods table of AUROC intervals ("low–high" strings) from an evaluation result, with the average
    row's interval (each test set resampled once per draw for every pair that shares it, pairs fixed)."""
    import pandas as pd

    cells = {}
    for r in result.rows:
        cells.setdefault(pair_title(r["id"], r["ood"]), {})[r["method"]] = f"{r['auroc_low']:.3f}–{r['auroc_high']:.3f}"
    table = pd.DataFrame.from_dict(cells, orient="index")
    table = table.reindex(columns=[m for m in methods if m in table])
    average = {m: result.mean_auroc(m) for m in table.columns}
    table.loc["average"] = [f"{average[m]['low']:.3f}–{average[m]['high']:.3f}" for m in table.columns]
    table.index.name, table.columns.name = "ID → OOD", None
    return table


def write_and_read(table, path: str | os.PathLike, digits: int = 3) -> "pd.DataFrame":
    """Round, write ``table`` to CSV (atomically) and return what the CSV holds: the numbers a page shows."""
    import pandas as pd

    from .store import atomic_write_bytes

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, table.round(digits).to_csv().encode("utf-8"))
    return pd.read_csv(path, index_col=0)


TABLE_STYLES = [  # scoped to the table by the Styler: the same look in the book and in JupyterLab
    {"selector": "", "props": "font-size: 0.88em; border-collapse: collapse; margin-bottom: 1em"},
    {"selector": "th.row_heading, th.index_name, th.blank", "props": "white-space: nowrap; text-align: left"},
    {"selector": "th.col_heading", "props": "text-align: right; vertical-align: bottom; max-width: 9em; "
                                            "overflow-wrap: normal; word-break: normal"},
    {"selector": "td", "props": "text-align: right; padding: 2px 8px; font-variant-numeric: tabular-nums"},
    {"selector": "th", "props": "padding: 2px 8px"},
    {"selector": "caption", "props": "caption-side: bottom; font-size: 0.9em; color: #555; text-align: left"},
    {"selector": "span.ci", "props": "font-size: 0.78em; color: #666; white-space: nowrap"},
]


def styled_with_intervals(values, intervals, caption: str | None = None, link_methods: bool = True,
                          higher_is_better: bool = True, digits: int = 3):
    """:func:`styled` with each cell's interval in small type under its value (``intervals`` holds "low–high"
    strings of the same shape); the best value of each row in bold."""
    shown = values.copy().astype(object)
    for row in values.index:
        for col in values.columns:
            v, ci = values.loc[row, col], intervals.loc[row, col] if col in intervals else ""
            shown.loc[row, col] = (f'{v:.{digits}f}<br><span class="ci">{ci}</span>' if ci == ci and ci
                                   else f"{v:.{digits}f}")
    style = styled(shown, higher_is_better, digits, link_methods, caption, best=None)
    numbers = values.astype(float)

    def bold(row):
        target = numbers.loc[row.name].max() if higher_is_better else numbers.loc[row.name].min()
        return ["font-weight: bold" if abs(numbers.loc[row.name, c] - target) < 10 ** -(digits + 1) else ""
                for c in values.columns]

    return style.apply(bold, axis=1)


def styled(table, higher_is_better=True, digits: int = 3, link_methods: bool = True, caption: str | None = None,
           best: str | None = "row"):
    """A pandas Styler: the best value per row (or per column) in bold, average row shaded, method names linked.

    ``best`` "row" compares the methods of each pair; "column" compares the rows of each column (ablation
    summaries), with ``higher_is_better`` a bool or a {column: bool} mapping (then only the columns it names are
    marked); None marks nothing.
    """
    import numpy as np
    from pandas.api.types import is_numeric_dtype

    def better(values, high):
        target = np.nanmax(values) if high else np.nanmin(values)
        return ["font-weight: bold" if np.isclose(v, target, rtol=0, atol=10 ** -(digits + 1)) else ""
                for v in values]

    shown = table.copy()
    if link_methods:
        shown.columns = [f'<a href="{METHOD_PAGE}#{METHOD_SECTIONS[c]}">{c}</a>' if c in METHOD_SECTIONS else c
                         for c in shown.columns]
    numeric = [c for c in shown.columns if is_numeric_dtype(shown[c])]
    style = shown.style.format(f"{{:.{digits}f}}", na_rep="–", subset=numeric)
    if best == "row":
        style = style.apply(lambda row: better(row.astype(float), higher_is_better), axis=1, subset=numeric)
    elif best == "column":
        def per_column(col):  # with a mapping, only the columns it names are marked
            if isinstance(higher_is_better, dict):
                if col.name not in higher_is_better:
                    return [""] * len(col)
                return better(col.astype(float), higher_is_better[col.name])
            return better(col.astype(float), higher_is_better)
        style = style.apply(per_column, axis=0, subset=numeric)
    if "average" in shown.index:
        style = style.apply(lambda row: ["border-top: 2px solid #888; background: #f3f3f3"] * len(row),
                            axis=1, subset=(["average"], shown.columns))
    if caption:
        style = style.set_caption(caption)
    return style.set_table_styles(TABLE_STYLES).set_table_attributes('class="diffpath-results"')
