"""The report's plots as inline SVG (matplotlib): availability bars, a month-long state strip, purity.

Text is drawn as paths (``svg.fonttype = path``), so a plot looks the same in any browser or PDF without
fonts installed and the HTML stays one self-contained file.
"""

from __future__ import annotations

import io
from typing import TYPE_CHECKING, Final

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.colors import ListedColormap
from matplotlib.patches import Patch

from store.schema import ACCOUNTED, STATES, State

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from report.figures import Report
    from report.i18n import Text

__all__ = ["COLOURS", "SHOWN_STATES", "availability_bars", "purity_boxes", "state_strip"]

COLOURS: Final = {
    State.IN_SPEC: "#2e7d32",
    State.UNDERPERFORMING: "#f9a825",
    State.POWER_FAILURE: "#c62828",
    State.NO_DATA: "#546e7a",
    State.OFF: "#b0bec5",
    State.NEVER_CONNECTED: "#f2f2f2",  # not yet connected: drawn like time before commissioning
    "": "#f2f2f2",
}
# States a reader sees in the legend and the tables (never-connected time is shown as not booked).
SHOWN_STATES: Final = (*ACCOUNTED, State.OFF)
_WIDTH: Final = 7.2  # inches: an A4 page's text width

plt.rcParams.update(
    {
        "svg.fonttype": "path",
        "font.size": 8,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "svg.hashsalt": "oxyfleet",  # stable ids: the same report renders to the same bytes
    }
)


def _svg(fig: Figure) -> str:
    out = io.StringIO()
    fig.savefig(out, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    text = out.getvalue()
    text = text[text.index("<svg") :]
    # The RDF metadata block only names vocabularies by URL; dropping it keeps the page free of links.
    start, end = text.find("<metadata>"), text.find("</metadata>")
    return text[:start] + text[end + len("</metadata>") :] if start >= 0 < end else text


def _shown(report: Report) -> list[str]:
    return [r.unit.unit_id for r in report.units if r.unit.unit_id in report.strips]


def availability_bars(report: Report, t: Text) -> str:
    """One bar per unit, worst at the top, red under the target line."""
    rows = [r for r in report.units if r.unit.unit_id in report.strips]
    fig, ax = plt.subplots(figsize=(_WIDTH, 0.6 + 0.22 * max(len(rows), 1)))
    values = [r.availability_pct or 0.0 for r in rows]
    colours = [
        COLOURS[State.IN_SPEC] if v >= report.target_pct else COLOURS[State.POWER_FAILURE] for v in values
    ]
    ax.barh(range(len(rows)), values, color=colours, height=0.7)
    ax.set_yticks(range(len(rows)), [r.unit.unit_id for r in rows])
    ax.invert_yaxis()
    ax.axvline(report.target_pct, color="#1a237e", linestyle="--", linewidth=1.2)
    ax.text(
        report.target_pct, -0.8, f"{t('target')} {t.pct(report.target_pct, 0)}", color="#1a237e", ha="right"
    )
    for i, v in enumerate(values):
        ax.text(min(v, 100) + 0.5, i, t.pct(v), va="center", fontsize=7)
    ax.set_xlim(0, 108)
    ax.set_xlabel(f"{t('availability')} (%)")
    return _svg(fig)


def state_strip(report: Report, t: Text) -> str:
    """Each unit's hours coloured by their dominant state, the whole month left to right."""
    shown = _shown(report)
    codes = {s: i for i, s in enumerate(["", *STATES])}
    grid = [[codes[s] for s in report.strips[uid]] for uid in shown] or [[0]]
    fig, ax = plt.subplots(figsize=(_WIDTH, 0.9 + 0.2 * max(len(shown), 1)))
    cmap = ListedColormap([COLOURS[s] for s in ["", *STATES]])
    ax.imshow(grid, aspect="auto", interpolation="nearest", cmap=cmap, vmin=0, vmax=len(codes) - 1)
    ax.set_yticks(range(len(shown)), shown)
    days = report.period.hours // 24
    ax.set_xticks([d * 24 for d in range(days)], [str(d + 1) if d % 2 == 0 else "" for d in range(days)])
    ax.set_xlabel(f"{t('plot.day')} ({t.zone_name})")
    handles = [Patch(color=COLOURS[s], label=t(f"state.{s}")) for s in SHOWN_STATES]
    handles.append(Patch(facecolor=COLOURS[""], edgecolor="#999999", label=t("plot.not_booked")))
    ax.legend(
        handles=handles,
        loc="upper center",
        bbox_to_anchor=(0.5, -0.35 if len(shown) < 6 else -0.12),
        ncol=3,
        frameon=False,
    )
    return _svg(fig)


def purity_boxes(report: Report, t: Text) -> str:
    """Purity distribution per unit (10-minute means) against the 82 % critical and 90 % low lines."""
    shown = [uid for uid in _shown(report) if report.purity.get(uid)]
    fig, ax = plt.subplots(figsize=(_WIDTH, 0.8 + 0.22 * max(len(shown), 1)))
    if shown:
        ax.boxplot(
            [report.purity[uid] for uid in shown],
            orientation="horizontal",
            whis=(1, 99),
            showfliers=False,
            patch_artist=True,
            boxprops={"facecolor": "#bbdefb", "edgecolor": "#0d47a1"},
            medianprops={"color": "#0d47a1"},
        )
        ax.set_yticks(range(1, len(shown) + 1), shown)
        ax.invert_yaxis()
    ax.axvline(82, color=COLOURS[State.POWER_FAILURE], linewidth=1.2, label=t("plot.critical"))
    ax.axvline(90, color=COLOURS[State.UNDERPERFORMING], linewidth=1.2, linestyle="--", label=t("plot.low"))
    ax.set_xlim(60, 100)
    ax.set_xlabel(t("plot.purity_axis"))
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, frameon=False)
    return _svg(fig)
