"""Figures of the book. Every function returns a matplotlib Figure with labelled axes; ``save`` writes PNG + SVG."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def _plt():
    import matplotlib

    if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save(fig, results_dir, name: str) -> None:
    """Write ``name``.png and ``name``.svg into ``results_dir`` (the citable copies of a figure).

    Returns nothing, so a notebook cell ending with it shows the figure, not paths of the machine.
    """
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / f"{name}.png", dpi=130, bbox_inches="tight")
    fig.savefig(out / f"{name}.svg", bbox_inches="tight")


def _show(ax, img: torch.Tensor, **kw):
    img = img.detach().cpu()
    if img.shape[0] == 1:
        ax.imshow(img[0].numpy(), cmap=kw.pop("cmap", "gray"), **({"vmin": -1, "vmax": 1} | kw))
    else:
        ax.imshow(((img.permute(1, 2, 0) + 1) / 2).clamp(0, 1).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def image_grid(rows: dict[str, torch.Tensor], ncols: int = 10, title: str | None = None):
    """One row of ``ncols`` images per entry; the row label is the entry's name."""
    plt = _plt()
    fig, axes = plt.subplots(len(rows), ncols, figsize=(1.1 * ncols, 1.2 * len(rows)), squeeze=False)
    for r, (label, imgs) in enumerate(rows.items()):
        for c in range(ncols):
            ax = axes[r, c]
            if c < len(imgs):
                _show(ax, imgs[c])
            else:
                ax.axis("off")
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


def loss_curve(steps, losses, window: int = 50, title: str = "Training loss"):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.2))
    losses = np.asarray(losses, dtype=float)
    ax.plot(steps, losses, lw=0.5, alpha=0.35, label="per step")
    if len(losses) >= window:
        smooth = np.convolve(losses, np.ones(window) / window, mode="valid")
        ax.plot(np.asarray(steps)[window - 1:], smooth, lw=1.5, label=f"mean of {window} steps")
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("ε-prediction MSE (log scale)")
    ax.set_title(title)
    ax.legend()
    return fig


def trajectory_panels(traj, index: int, d_maps: torch.Tensor, err_maps: torch.Tensor, title: str):
    """For one image: states x_k, denoised x̂0_k, SSIM dissimilarity D_k and score error r_k² per step."""
    plt = _plt()
    k = traj.schedule.k
    rows = [("state $x_k$", traj.x[index], {}), ("denoised $\\hat x_0$", traj.x0_hat[index], {}),
            ("$D_k=(1-\\mathrm{SSIM})/2$", d_maps[index], {"cmap": "magma", "vmin": 0, "vmax": 0.5}),
            ("score error $r_k^2$", err_maps[index], {"cmap": "viridis", "vmin": 0,
                                                      "vmax": float(err_maps[index].quantile(0.99)) + 1e-9})]
    fig, axes = plt.subplots(len(rows), k, figsize=(1.15 * k, 1.3 * len(rows)), squeeze=False)
    for r, (label, imgs, kw) in enumerate(rows):
        for j in range(k):
            _show(axes[r, j], imgs[j][:1] if imgs[j].shape[0] > 1 and kw else imgs[j], **kw)
            if r == 0:
                axes[r, j].set_title(f"t={traj.schedule.indices[j]}", fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    fig.suptitle(title)
    return fig


def norm_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], ylabel: str, title: str):
    """Median and interquartile band of a per-step quantity (N, steps), one line per dataset; x is the timestep."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for label, (t, values) in curves.items():
        q25, q50, q75 = np.percentile(values, [25, 50, 75], axis=0)
        ax.plot(t, q50, marker="o", ms=3, label=label)
        ax.fill_between(t, q25, q75, alpha=0.2)
    ax.set_xlabel("training timestep t of the step")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def feature_scatter(embedded: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str):
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    for label, pts in embedded.items():
        ax.scatter(pts[:, 0], pts[:, 1], s=5, alpha=0.5, label=label)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(markerscale=3, fontsize=8)
    return fig


def score_histograms(scores: dict[str, tuple[np.ndarray, np.ndarray]], id_label: str, title: str):
    """Histograms of ID-test and OOD-test log-likelihoods, one panel per method (seaborn)."""
    import pandas as pd
    import seaborn as sns

    plt = _plt()
    fig, axes = plt.subplots(1, len(scores), figsize=(4.2 * len(scores), 3.2), squeeze=False)
    for ax, (method, (s_id, s_ood)) in zip(axes[0], scores.items()):
        lo = np.percentile(np.r_[s_id, s_ood], 1)
        df = pd.DataFrame({"log-likelihood": np.r_[s_id, s_ood].clip(lo),
                           "set": [f"{id_label} (ID)"] * len(s_id) + ["OOD"] * len(s_ood)})
        sns.histplot(df, x="log-likelihood", hue="set", stat="density", common_norm=False, bins=40,
                     element="step", ax=ax)
        ax.set_title(method)
        ax.set_ylabel("density")
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def roc_curves(curves: dict[str, tuple[np.ndarray, np.ndarray]], title: str):
    """ROC curves (ID positive, higher score = ID), AUROC in the legend."""
    from sklearn.metrics import roc_curve

    from .metrics import auroc

    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    for label, (s_id, s_ood) in curves.items():
        y = np.r_[np.ones(len(s_id)), np.zeros(len(s_ood))]
        fpr, tpr, _ = roc_curve(y, np.r_[s_id, s_ood])
        ax.plot(fpr, tpr, label=f"{label} (AUROC {auroc(s_id, s_ood):.3f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set_xlabel("false positive rate (OOD accepted)")
    ax.set_ylabel("true positive rate (ID accepted)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="lower right")
    return fig


def heatmap(table, title: str, fmt: str = ".3f", cmap: str = "viridis", vmin=None, vmax=None):
    """A seaborn heatmap of a pandas DataFrame (rows × columns), values annotated, sized to read at page width.

    Column labels are wrapped and kept horizontal; put the longer list of names on the rows.
    """
    import textwrap

    import seaborn as sns

    plt = _plt()
    n_rows, n_cols = table.shape
    fig, ax = plt.subplots(figsize=(2.8 + 1.25 * n_cols, 1.2 + 0.42 * n_rows))
    sns.heatmap(table.astype(float), annot=True, fmt=fmt, cmap=cmap, vmin=vmin, vmax=vmax, ax=ax,
                annot_kws={"size": 10}, linewidths=0.5, cbar_kws={"label": "AUROC", "shrink": 0.8})
    ax.set_xticklabels([textwrap.fill(str(c), 12) for c in table.columns], rotation=0, fontsize=9)
    ax.set_yticklabels([str(r) for r in table.index], rotation=0, fontsize=10)
    ax.xaxis.tick_top()
    ax.set_title(title, pad=12 + 11 * max(len(textwrap.fill(str(c), 12).splitlines()) for c in table.columns))
    ax.set_xlabel(table.columns.name or "")
    ax.set_ylabel(table.index.name or "")
    fig.tight_layout()
    return fig


def lines(table, xlabel: str, ylabel: str, title: str):
    """One line per column of a DataFrame against its index (e.g. AUROC per method against K)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    for column in table.columns:
        ax.plot(table.index, table[column], marker="o", label=str(column))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return fig


def _image_for_display(image: torch.Tensor | None, source_file=None) -> np.ndarray:
    """An (H, W) or (H, W, 3) array in [0, 1]: the file as decoded, or a model-range (C, H, W) image."""
    if source_file is not None:
        from .datasets import decode_image

        return decode_image(source_file)
    img = ((image.detach().cpu().float() + 1) / 2).clamp(0, 1)
    return img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()


def overlay_figure(image, anomaly_map: np.ndarray, source_file=None, mask=None, title: str | None = None):
    """Input, anomaly map over it, and (if given) the defect mask: one figure with a labelled colour bar."""
    plt = _plt()
    picture = _image_for_display(image, source_file)
    panels = 3 if mask is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(2.6 * panels + 0.6, 2.8))
    grey = dict(cmap="gray", vmin=0, vmax=1) if picture.ndim == 2 else {}
    axes[0].imshow(picture, **grey)
    axes[0].set_title("input", fontsize=9)
    axes[1].imshow(picture, **grey)
    shown = axes[1].imshow(anomaly_map, cmap="inferno", alpha=0.6,
                           extent=(-0.5, picture.shape[1] - 0.5, picture.shape[0] - 0.5, -0.5))
    axes[1].set_title("anomaly map", fontsize=9)
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="anomaly (higher = more)")
    if mask is not None:
        axes[2].imshow(np.asarray(mask), cmap="gray", vmin=0, vmax=1)
        axes[2].set_title("defect mask", fontsize=9)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


def save_overlay(image, anomaly_map: np.ndarray, path, source_file=None, mask=None, title: str | None = None) -> None:
    """:func:`overlay_figure` written to ``path`` (PNG) and closed."""
    plt = _plt()
    fig = overlay_figure(image, anomaly_map, source_file, mask, title)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def defect_grid(rows: dict[str, tuple], title: str | None = None):
    """For each defect kind (a row label): (images, masks, maps), shown as input / mask / map for a few examples."""
    plt = _plt()
    n = min(len(v[0]) for v in rows.values())
    fig, axes = plt.subplots(len(rows), 3 * n, figsize=(1.15 * 3 * n, 1.25 * len(rows)), squeeze=False)
    for r, (label, (images, masks, maps)) in enumerate(rows.items()):
        for i in range(n):
            _show(axes[r, 3 * i], images[i])
            axes[r, 3 * i + 1].imshow(np.asarray(masks[i]), cmap="gray", vmin=0, vmax=1)
            axes[r, 3 * i + 2].imshow(np.asarray(maps[i]), cmap="inferno")
            for j, name in enumerate(("input", "mask", "map")):
                ax = axes[r, 3 * i + j]
                ax.set_xticks([])
                ax.set_yticks([])
                if r == 0:
                    ax.set_title(name, fontsize=8)
        axes[r, 0].set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title)
    return fig


GROUP_STYLE = {"the papers' methods": ("#1f77b4", "o"), "this project's": ("#d62728", "D"),
               "baselines": ("#7f7f7f", "s")}


def method_overview(frame, title: str):
    """Mean AUROC with its 95 % interval per method (rows) and protocol (one panel each), coloured by whose method
    it is. ``frame`` has columns protocol, method, group (a key of :data:`GROUP_STYLE`), mean, low, high."""
    plt = _plt()
    protocols = list(dict.fromkeys(frame["protocol"]))
    methods = list(dict.fromkeys(frame["method"]))[::-1]  # the first method at the top
    fig, axes = plt.subplots(1, len(protocols), figsize=(2.6 * len(protocols) + 1.6, 0.34 * len(methods) + 1.4),
                             sharey=True, squeeze=False)
    for ax, protocol in zip(axes[0], protocols):
        rows = frame[frame["protocol"] == protocol]
        for r in rows.itertuples():
            colour, marker = GROUP_STYLE[r.group]
            y = methods.index(r.method)
            ax.errorbar(r.mean, y, xerr=[[r.mean - r.low], [r.high - r.mean]], fmt=marker, color=colour,
                        ecolor=colour, capsize=2, markersize=5)
        ax.set_title(protocol, fontsize=9)
        ax.set_xlabel("mean AUROC (95 % interval)")
        ax.grid(axis="x", alpha=0.3)
        ax.axvline(0.5, color="#bbbbbb", linewidth=0.8, linestyle=":")
    axes[0, 0].set_yticks(range(len(methods)), methods)
    handles = [plt.Line2D([], [], color=c, marker=m, linestyle="", label=g) for g, (c, m) in GROUP_STYLE.items()]
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, bbox_to_anchor=(0.5, -0.02))
    fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    return fig
