"""The results report's pages: the results table as Markdown (results.md) and as HTML (results.html), the
grounding heat maps in one page (heatmaps.html) and each job's runtime and memory (benchmarks.html).

The HTML pages are self-contained (inline style, no scripts, no links) so Snakemake's report shows them as
they are. Cells read `value [lo, hi]` where there is a bootstrap interval, "–" where not run and "n/a"
where not applicable; the table's paired differences follow it.
"""
from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Sequence

import pandas as pd

from simcrop.evaluate.bootstrap import format_interval
from simcrop.evaluate.results_collect import BENCHMARK_COLUMNS, IN_RUN, finite_number

DECIMALS = 3
MISSING, NOT_APPLICABLE = "–", "n/a"
PAGE_STYLE = ("body{font-family:system-ui,sans-serif;margin:1.5em;color:#111}"
              "table{border-collapse:collapse;font-size:14px}"
              "th,td{border:1px solid #ccc;padding:4px 8px;text-align:right;white-space:nowrap}"
              "th{white-space:normal;vertical-align:bottom;min-width:4.5em}"
              "th:first-child,td:first-child,th.text,td.text{text-align:left}thead th{background:#eee}"
              "p{max-width:60em}img{max-width:100%}figure{margin:0 0 1.5em}")


def _cell(value: float, not_applicable: bool, interval: dict | None = None, control: bool = False) -> str:
    if not_applicable:
        return NOT_APPLICABLE
    if math.isnan(value):
        return "" if control else MISSING
    if interval is not None and finite_number(interval.get("value")) is not None:
        return format_interval({**interval, "value": value}, DECIMALS)
    return f"{value:.{DECIMALS}f}"


def _row_cells(frame: pd.DataFrame, name: str, row) -> list[str]:
    na = frame.attrs.get("not_applicable", {}).get(name, ())
    ci = frame.attrs.get("intervals", {}).get(name, {})
    control = name in frame.attrs.get("controls", {})
    return [_cell(row[col], col in na, ci.get(col), control) for col in frame.columns]


def _legend(frame: pd.DataFrame) -> str:
    text = f"{MISSING}: not run; {NOT_APPLICABLE}: not applicable to the objective (no text side, or no lesion masks)."
    if frame.attrs.get("intervals"):
        text += " [lo, hi]: 95 % bootstrap interval over test patients."
    if frame.attrs.get("controls"):
        text += (" Controls (grounding only, same test sentences and K): location prior = the top-K patches of the"
                 " region the sentence's words name (side, lobe, organ) on the anatomy maps, no image content;"
                 " content-shuffled = the model on another patient's patch features, positions kept."
                 " Grounding counts as image-based only where it beats the location prior.")
    return text


def _difference_lines(frame: pd.DataFrame) -> list[str]:
    rows, notes = frame.attrs.get("differences", []), frame.attrs.get("difference_notes", [])
    if not rows and not notes:
        return []
    pairs: dict[tuple, list[str]] = {}
    for r in rows:
        pairs.setdefault((r["a"], r["b"]), []).append(f"{r['column']} {format_interval(r, DECIMALS)}")
    lines = [f"{a} − {b}: " + ", ".join(parts) for (a, b), parts in pairs.items()]
    return lines + notes


def markdown_report(frame: pd.DataFrame, images: Sequence[tuple[str, str]], title: str = "") -> str:
    """The results table, a line of chance levels, then the images as (caption, relative link)."""
    lines = [f"# {title}", ""] if title else []
    if len(frame.columns):
        lines += ["| objective | " + " | ".join(frame.columns) + " |",
                  "|:---|" + "---:|" * len(frame.columns)]
        for name, row in frame.iterrows():
            lines.append(f"| {name} | " + " | ".join(_row_cells(frame, name, row)) + " |")
        lines += ["", _legend(frame)]
    else:
        lines.append("No downstream evaluation results found.")
    chance = frame.attrs.get("chance", {})
    if chance:
        levels = ", ".join(f"{col} {value:.{DECIMALS}f}" for col, value in chance.items())
        lines += ["", f"Chance levels: {levels}."]
    diffs = _difference_lines(frame)
    if diffs:
        lines += ["", "Differences (paired, same test sentences or volumes; 95 % patient-level bootstrap "
                  "interval):", ""]
        lines += [f"- {line}" for line in diffs]
    for caption, link in images:
        lines += ["", f"![{caption}]({link})"]
    return "\n".join(lines) + "\n"


def _html_page(title: str, body: list[str]) -> str:
    """A self-contained HTML page (inline style, no scripts, no links): Snakemake's report shows it as is."""
    head = (f'<!DOCTYPE html>\n<html lang="en">\n<head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{PAGE_STYLE}</style></head>\n<body>\n")
    return head + (f"<h1>{html.escape(title)}</h1>\n" if title else "") + "\n".join(body) + "\n</body>\n</html>\n"


def _html_table(header: Sequence[str], rows: Sequence[Sequence[str]], text_columns: int = 1) -> str:
    """A table of already formatted cells; the first `text_columns` columns are left-aligned."""
    def cells(tag, values):
        return "".join(f'<{tag}{" class=text" if i < text_columns else ""}>{html.escape(str(v))}</{tag}>'
                       for i, v in enumerate(values))
    lines = ["<table>", f"<thead><tr>{cells('th', header)}</tr></thead>", "<tbody>"]
    lines += [f"<tr>{cells('td', row)}</tr>" for row in rows]
    return "\n".join(lines + ["</tbody>", "</table>"])


def html_report(frame: pd.DataFrame, title: str = "") -> str:
    """The results table of `markdown_report` (same cells, legend and chance levels) as an HTML page."""
    body = []
    if len(frame.columns):
        rows = [[name] + _row_cells(frame, name, row) for name, row in frame.iterrows()]
        body += [_html_table(["objective", *frame.columns], rows), f"<p>{html.escape(_legend(frame))}</p>"]
    else:
        body.append("<p>No downstream evaluation results found.</p>")
    chance = frame.attrs.get("chance", {})
    if chance:
        levels = ", ".join(f"{col} {value:.{DECIMALS}f}" for col, value in chance.items())
        body.append(f"<p>Chance levels: {html.escape(levels)}.</p>")
    diffs = _difference_lines(frame)
    if diffs:
        body += ["<h2>Differences</h2>",
                 "<p>Paired, same test sentences or volumes; 95 % patient-level bootstrap interval.</p>",
                 "<ul>" + "".join(f"<li>{html.escape(line)}</li>" for line in diffs) + "</ul>"]
    return _html_page(title or "Results", body)


def heatmaps_report(pngs: Sequence[Path], title: str = "Grounding heat maps") -> str:
    """The heat map copies embedded (data URIs) in one page: their number varies, a page's name does not."""
    body = [f'<figure><img alt="grounding heat map {k}" src="data:image/png;base64,'
            f'{base64.b64encode(Path(png).read_bytes()).decode()}"><figcaption>{k}: {html.escape(Path(png).name)}'
            f"</figcaption></figure>" for k, png in enumerate(pngs, start=1)]
    return _html_page(title, body or ["<p>No grounding heat maps: no objective with a text side ran the "
                                      "grounding task, or it drew none.</p>"])


def benchmarks_report(table: pd.DataFrame, title: str = "") -> str:
    """Per-rule totals, then one row per job: wall time, peak memory, CPU time, I/O."""
    def fmt(value, decimals):
        if decimals is None:
            return MISSING if pd.isna(value) else str(value)
        number = finite_number(value)
        return MISSING if number is None else f"{number:,.{decimals}f}"

    title = title or "Runtime and memory per job"
    if not len(table):
        return _html_page(title, [f"<p>No benchmark files found under {IN_RUN.benchmarks}/.</p>"])
    shown = [c for c in BENCHMARK_COLUMNS if c in table]
    numeric = table.reindex(columns=["s", "max_rss"]).apply(pd.to_numeric, errors="coerce")
    summary = [[rule, str(len(jobs)), fmt(jobs["s"].sum(min_count=1), 1), fmt(jobs["s"].max(), 1),
                fmt(jobs["max_rss"].max(), 0)]
               for rule, jobs in numeric.groupby(table["rule"], sort=True)]
    rows = [[row["rule"], row["job"], *(fmt(row[c], BENCHMARK_COLUMNS[c][1]) for c in shown)]
            for _, row in table.sort_values(["rule", "job"], kind="stable").iterrows()]
    body = ["<h2>Per rule</h2>",
            _html_table(["rule", "jobs", "total wall time (s)", "longest job (s)", "peak RSS (MiB)"], summary),
            "<h2>Per job</h2>",
            _html_table(["rule", "job", *(BENCHMARK_COLUMNS[c][0] for c in shown)], rows, text_columns=2),
            "<p>Measured by Snakemake's <code>benchmark:</code> directive (psutil, sampled while the job ran; "
            "RSS: resident memory of the job's processes).</p>"]
    return _html_page(title, body)
