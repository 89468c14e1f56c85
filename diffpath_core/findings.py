"""The book's opening findings, written from the result tables of a build (never typed by hand).

Each sentence reads a CSV that a results notebook wrote, and says only what its numbers and intervals
support: a method "beats" another only when the paired interval of the difference excludes zero.
"""
from __future__ import annotations

from pathlib import Path

from .datasets import dataset_title
from .methods import BASELINES, VARIANTS


def _read(path: Path):
    import pandas as pd

    return pd.read_csv(path) if path.exists() else None


def _interval(low: float, high: float) -> str:
    return f"{low:.3f}–{high:.3f}"


def main_findings(results: Path) -> list[str]:
    """Sentences on the main table: the averages with intervals, the paired comparisons, where all fail."""
    import pandas as pd

    auroc = _read(results / "main_table_auroc.csv")
    intervals = _read(results / "main_table_auroc_interval.csv")
    compared = _read(results / "main_comparisons.csv")
    if auroc is None or intervals is None:
        return []
    auroc, intervals = auroc.set_index(auroc.columns[0]), intervals.set_index(intervals.columns[0])
    pairs = [p for p in auroc.index if p != "average"]
    average = auroc.loc["average"].sort_values(ascending=False)
    ranked = ", ".join(f"{m} {v:.3f} ({intervals.loc['average', m]})" for m, v in average.items())
    out = [f"**Main table** ({len(pairs)} ID → OOD pairs; mean AUROC, highest first): {ranked}."]
    if compared is not None:
        said = []
        for r in compared.itertuples():
            if r.verdict == "no difference resolved":
                said.append(f"{r.a} and {r.b} are not told apart ({r.a} − {r.b} = {r.difference:+.3f}, "
                            f"interval {r.low:+.3f} to {r.high:+.3f})")
            else:
                winner = r.a if r.low > 0 else r.b
                said.append(f"{winner} is ahead of {r.b if winner == r.a else r.a} by {abs(r.difference):.3f} "
                            f"({r.a} − {r.b} from {r.low:+.3f} to {r.high:+.3f})")
        out.append("Paired over the same pairs and images, with pairs and images resampled: " + "; ".join(said) + ".")
    methods = [m for m in auroc.columns if m not in BASELINES]
    hard = [p for p in pairs if auroc.loc[p, methods].max() < 0.8]
    if hard:
        out.append("**Where every method fails** (no method of the paper or this project reaches AUROC 0.8): "
                   + "; ".join(f"{p}, best {auroc.loc[p, methods].idxmax()} {auroc.loc[p, methods].max():.3f}"
                               for p in hard) + ".")
    explained = [p for p in pairs if "Border mean" in auroc.columns
                 and auroc.loc[p, "Border mean"] >= auroc.loc[p, methods].max()]
    if explained:
        out.append("**Where a one-number baseline does as well** (the mean of the image border, no model at all, "
                   "at least as high as every trajectory method): " + ", ".join(explained)
                   + ". A high AUROC there shows a difference of framing, not of content.")
    solved = [p for p in pairs if pd.notna(auroc.loc[p, methods]).all() and auroc.loc[p, methods].min() >= 0.99]
    if solved:
        out.append(f"{len(solved)} of {len(pairs)} pairs are solved (AUROC ≥ 0.99) by every method; they do not "
                   "separate the methods.")
    return out


def one_class_findings(results: Path, reference: Path) -> list[str]:
    """Sentences on the one-class protocol beside the published numbers."""
    summary = _read(results / "one_class_summary.csv")
    published = _read(reference / "one_class_published.csv")
    compared = _read(results / "one_class_comparisons.csv")
    if summary is None:
        return []
    out = []
    for (dataset, base, setting), frame in summary.groupby(["dataset", "base_model", "setting"], sort=False):
        trajectory = frame[~frame["method"].isin(BASELINES)]
        best = trajectory.loc[trajectory["mean_auroc"].idxmax()]
        pixel = frame[frame["method"] == "Pixel PCA"]
        text = (f"**One class normal, {dataset_title(dataset)}, {setting}** (base model {base}): best trajectory method "
                f"{best['method']} {best['mean_auroc']:.3f} ({_interval(best['mean_low'], best['mean_high'])})")
        if len(pixel):
            p = pixel.iloc[0]
            pair = None if compared is None else compared[
                (compared["dataset"] == dataset) & (compared["base_model"] == base) & (compared["setting"] == setting)
                & (compared["a"] == best["method"]) & (compared["b"] == "Pixel PCA")]
            if pair is not None and len(pair):  # the paired comparison on the same test draws
                c = pair.iloc[0]
                verdict = "above" if c["low"] > 0 else "below" if c["high"] < 0 else "not told apart from"
                paired = f", paired difference {c['difference']:+.3f} ({c['low']:+.3f} to {c['high']:+.3f})"
            else:
                verdict = ("above" if best["mean_low"] > p["mean_high"] else "below" if best["mean_high"] < p["mean_low"]
                           else "not separable from")
                paired = ""
            text += (f", {verdict} a density on raw pixels after PCA, "
                     f"{p['mean_auroc']:.3f} ({_interval(p['mean_low'], p['mean_high'])}){paired}")
        if published is not None:
            theirs = published[(published["dataset"] == dataset) & (published["trained_on"] == "normal class only")]
            if len(theirs):
                low, high = theirs["mean_auroc_percent"].min() / 100, theirs["mean_auroc_percent"].max() / 100
                gap = best["mean_auroc"] - low
                text += (f"; published methods trained on the normal class report {low:.3f}–{high:.3f} (their own "
                         f"protocols, full training classes), {abs(gap):.3f} {'above' if gap > 0 else 'below'} the "
                         f"lowest of them")
        out.append(text + ".")
    if out:
        out.append("No diffusion-trajectory method has published this protocol, so these rows have no published "
                   "counterpart of their own.")
    return out


def whose(method: str) -> str:
    """The group a method belongs to in the book's figures: the papers', this project's, or a baseline."""
    return "this project's" if method in VARIANTS else "baselines" if method in BASELINES else "the papers' methods"


def overview(results: str | Path):
    """Every method's mean AUROC with its 95 % interval in every protocol this build ran, one row each (columns
    protocol, method, group, mean, low, high, n): the main table's average over its pairs and each one-class
    setting's mean over its ten tasks. ``None`` before the results notebooks have run."""
    import pandas as pd

    results = Path(results)
    rows = []
    auroc = _read(results / "main_table_auroc.csv")
    intervals = _read(results / "main_table_auroc_interval.csv")
    if auroc is not None and intervals is not None:
        auroc, intervals = auroc.set_index(auroc.columns[0]), intervals.set_index(intervals.columns[0])
        n_pairs = len(auroc.index) - 1
        for method in auroc.columns:
            low, high = (float(v) for v in intervals.loc["average", method].split("–"))
            rows.append({"protocol": f"ID → OOD, mean of {n_pairs} pairs", "method": method, "group": whose(method),
                         "mean": float(auroc.loc["average", method]), "low": low, "high": high, "n": n_pairs})
    summary = _read(results / "one_class_summary.csv")
    if summary is not None:
        for (dataset, base, setting), frame in summary.groupby(["dataset", "base_model", "setting"], sort=False):
            for r in frame.itertuples():
                rows.append({"protocol": f"one class, {dataset_title(dataset)}, {setting}", "method": r.method,
                             "group": whose(r.method), "mean": r.mean_auroc, "low": r.mean_low, "high": r.mean_high,
                             "n": r.tasks})
    if not rows:
        return None
    frame = pd.DataFrame(rows)
    order = {g: i for i, g in enumerate(("the papers' methods", "this project's", "baselines"))}
    methods = sorted(dict.fromkeys(frame["method"]), key=lambda m: order[whose(m)])  # stable within a group
    frame["rank"] = frame["method"].map({m: i for i, m in enumerate(methods)})
    return frame.sort_values(["rank"], kind="stable").drop(columns="rank").reset_index(drop=True)


def findings(results: str | Path, reference: str | Path) -> str:
    """The opening findings as Markdown bullets (or a line saying the results notebooks have not run)."""
    results, reference = Path(results), Path(reference)
    lines = main_findings(results) + one_class_findings(results, reference)
    if not lines:
        return ("*No results yet: run the results notebooks (`make book`) and this page reads what they wrote.*")
    return "\n".join(f"- {line}" for line in lines)
