"""`snakemake --report report.html` on a tiny experiment, rendered by headless Chromium (Debian's `chromium`,
installed by .ci/run): the page shows the results table, the figures, the QC summary and each heavy job's
runtime and memory.

The report is a JavaScript app that shows one result at a time, so the rendered copy gets a small script that
clicks through it like a reader (menu -> category -> each result's view and info buttons) and writes what it
saw into the page, which `chromium --dump-dom` returns once the scripts have run.

Regenerate the README screenshot from a built report:
    python tests/workflow/test_html_report.py results/demo/report.html docs/snakemake_report.png
"""
import base64
import html
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import unquote

import pandas as pd
import pytest
import yaml

from simcrop import layout
from simcrop.evaluate.bootstrap import format_interval
from simcrop.evaluate.results_collect import read_benchmarks
from simcrop.evaluate.results_pages import benchmarks_report, heatmaps_report, html_report
from simcrop.evaluate.results_table import results_table

pytestmark = pytest.mark.slow

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
CATEGORIES = ("Data", "Pre-training", "Results", "Runtime and memory")
WINDOW = "1500,600"
SCREENSHOT_LIMIT = 400_000        # bytes: docs/snakemake_report.png stays small

# Clicks through the app the way a reader would and leaves what each view showed in <pre id="walkthrough">.
WALKTHROUGH = """
<script>
(async () => {
  const sleep = (ms) => new Promise((done) => setTimeout(done, ms));
  const seen = {menu: [], categories: {}, statistics: null, errors: [], done: false};
  const pre = document.createElement("pre");
  pre.id = "walkthrough";
  pre.style.display = "none";
  document.body.appendChild(pre);
  const note = () => { pre.textContent = JSON.stringify(seen); };
  const link = (text) => [...document.querySelectorAll("nav a")].find((a) => a.textContent.trim() === text);
  const home = () => document.querySelector("nav ol li a");          // breadcrumbs: back to the menu
  const content = () => document.querySelector("#app .grow.flex.h-screen");
  try {
    await sleep(300);
    seen.menu = [...document.querySelectorAll("nav li a span")].map((s) => s.textContent.trim());
    note();
    for (const category of CATEGORIES) {
      home().click(); await sleep(200);
      const item = link(category);
      if (!item) { seen.errors.push("no menu item " + category); continue; }
      item.click(); await sleep(300);
      const rows = [...document.querySelectorAll("nav table tbody tr")];
      const results = [];
      for (let i = 0; i < rows.length; i++) {
        const row = document.querySelectorAll("nav table tbody tr")[i];
        const label = row.querySelector("td").textContent.trim();
        const [view, info] = row.querySelectorAll("td:last-child a");
        const result = {label: label};
        if (view.hasAttribute("download")) {                       // not viewable: a download link
          result.download = view.getAttribute("download");
        } else {
          view.click(); await sleep(300);
          const img = content().querySelector("img"), frame = content().querySelector("iframe");
          if (img) {
            for (let wait = 0; wait < 50 && !(img.complete && img.naturalWidth > 0); wait++) { await sleep(100); }
            result.img = {src: img.getAttribute("src"), width: img.naturalWidth, height: img.naturalHeight};
          }
          if (frame) { result.iframe = frame.getAttribute("src"); }
        }
        info.click(); await sleep(200);
        const caption = [...document.querySelectorAll("nav .prose, nav [class*=prose]")].map((d) => d.textContent);
        result.caption = caption.join("\\n");
        results.push(result);
        seen.categories[category] = results; note();
        home().click(); await sleep(200); link(category).click(); await sleep(200);
      }
      seen.categories[category] = results;
    }
    home().click(); await sleep(200);
    link("Statistics").click(); await sleep(1000);
    seen.statistics = {charts: document.querySelectorAll("#runtimes canvas, #timeline canvas").length,
                       rules: runtimes_spec.data.values.map((job) => job.rule)};   // what the chart plots
    if (SHOW) {                                   // leave the results table on screen (README screenshot)
      home().click(); await sleep(200); link("Results").click(); await sleep(300);
      const row = [...document.querySelectorAll("nav table tbody tr")].find(
        (r) => r.querySelector("td").textContent.trim() === SHOW);
      row.querySelector("td:last-child a").click(); await sleep(500);
    }
  } catch (e) {
    seen.errors.push(String(e && e.stack || e));
  }
  seen.done = true;
  note();
})();
</script>
"""


def find_chromium() -> str | None:
    """The first Chromium that runs (Ubuntu's `chromium-browser` may be a snap stub that only fails)."""
    for path in filter(None, map(shutil.which, CHROMIUM_NAMES)):
        try:
            if subprocess.run([path, "--version"], capture_output=True, timeout=60).returncode == 0:
                return path
        except (OSError, subprocess.TimeoutExpired):
            continue
    return None


def chromium(browser, page: Path, *args, timeout=120) -> subprocess.CompletedProcess:
    """Headless Chromium on a local page; virtual time lets the app's scripts and timers run to the end."""
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--virtual-time-budget=30000", f"--window-size={WINDOW}", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=timeout, check=True)


def with_walkthrough(report: Path, out: Path, show: str | None = None) -> Path:
    script = (WALKTHROUGH.replace("CATEGORIES", json.dumps(list(CATEGORIES)))
              .replace("SHOW", json.dumps(show) if show else "null"))
    text = report.read_text(encoding="utf-8")
    at = text.rindex("</body>")
    out.write_text(text[:at] + script + text[at:], encoding="utf-8")
    return out


def walkthrough(browser, report: Path, tmp: Path) -> dict:
    dom = chromium(browser, with_walkthrough(report, tmp / "walkthrough.html"), "--dump-dom").stdout
    found = re.search(r'<pre id="walkthrough"[^>]*>(.*?)</pre>', dom, re.S)
    assert found and found.group(1), "the walkthrough script did not run:\n" + dom[-2000:]
    seen = json.loads(html.unescape(found.group(1)))
    assert seen["done"], f"the walkthrough did not finish within the virtual time budget: {seen}"
    return seen


def screenshot(browser, report: Path, png: Path) -> Path:
    """The results table as a reader sees it, cropped to the page (headless windows are taller than their
    viewport: the rest is blank)."""
    from PIL import Image         # matplotlib's dependency

    page = with_walkthrough(report, png.with_name(png.stem + ".walkthrough.html"), show="results table")
    chromium(browser, page, f"--screenshot={png.resolve()}")
    with Image.open(png) as shot:
        image = shot.convert("RGB")
    painted = image.point(lambda v: 255 - v).getbbox()          # bounding box of the non-white pixels
    if painted:
        image = image.crop((0, 0, image.width, painted[3]))
    image.save(png, optimize=True)
    return png


def data_uri_bytes(uri: str) -> bytes:
    header, payload = uri.split(",", 1)
    return base64.b64decode(payload) if header.endswith(";base64") else unquote(payload).encode()


def html_rows(html_bytes: bytes) -> list[list[str]]:
    """The cells of each table row of a page, as text."""
    return [[html.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
             for cell in re.findall(r"<t[hd][^>]*>(.*?)</t[hd]>", row, re.S)]
            for row in re.findall(r"<tr[^>]*>(.*?)</tr>", html_bytes.decode("utf-8"), re.S)]


# ---------------------------------------------------------------- the pages write_report adds

def test_results_and_benchmark_pages(tmp_path):
    frame = results_table({"objectives": {"simcrop": {"probe": {"main": {"100": {
        "kind": "multilabel", "test": {"mean_auroc": 0.8123}}}}}}})
    page = html_report(frame, "Run <x>")
    assert "<title>Run &lt;x&gt;</title>" in page and "<td>0.812</td>" in page
    assert "<th>probe main AUROC 100%</th>" in page and "<script" not in page and "http" not in page

    run = layout.Run(tmp_path)
    pretrain, probe = run.benchmark("pretrain", "simcrop"), run.benchmark("probe", "simcrop", "main", "100")
    for path in (pretrain, probe):
        path.parent.mkdir(parents=True, exist_ok=True)
    header = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"
    pretrain.write_text(header + "75.5\t0:01:15\t1061.9\t1\t2\t3\t0.5\t4\t98\t70.2\n")
    probe.write_text(header + "2\t0:00:02" + "\tNA" * 8 + "\n")
    table = read_benchmarks(tmp_path)
    assert table[["rule", "job"]].values.tolist() == [["pretrain", "simcrop"], ["probe", "simcrop/main/100"]]
    assert pd.isna(table.loc[1, "max_rss"])
    rows = html_rows(benchmarks_report(table).encode())
    assert ["pretrain", "1", "75.5", "75.5", "1,062"] in rows                      # per rule
    assert ["probe", "simcrop/main/100", "2.0", "0:00:02", *["–"] * 6] in rows     # per job; NA: not measured
    assert "No benchmark files" in benchmarks_report(read_benchmarks(tmp_path / "none"))

    png = tmp_path / "heatmap_1.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    page = heatmaps_report([png])
    assert f'src="data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}"' in page
    assert "No grounding heat maps" in heatmaps_report([])


# ---------------------------------------------------------------- the whole report

@pytest.fixture
def browser():
    path = find_chromium()
    if path is None:
        pytest.skip("headless Chromium not found (Debian: `apt-get install chromium`; .ci/run installs it)")
    return path


def test_snakemake_report_shows_results_figures_and_benchmarks(repo_root, tmp_path, tiny_config, run_tool, browser):
    # One objective with a text side, one probe fraction, one segmentation set: every marked output and every
    # benchmarked rule (preprocess, pretrain, probe, segment) at the least cost.
    tiny_config.update(experiment={"objectives": ["simcrop"], "tasks": ["probe", "grounding"],
                                   "downstream": ["luna16"]})
    tiny_config["probe"]["fractions"] = [1.0]
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_config))
    work = tmp_path / "work"
    work.mkdir()
    snakemake = [sys.executable, "-m", "snakemake", "--snakefile", str(repo_root / "workflow" / "Snakefile"),
                 "--directory", str(work), "--configfile", str(config), "--cores", "2"]
    run_tool(snakemake, repo_root)
    report = work / "report.html"
    run_tool([*snakemake, "--report", str(report)], repo_root)
    run = layout.Run(work / "results" / "tiny")
    for rule, *job in (("preprocess", layout.shard_name(0)), ("pretrain", "simcrop"),
                       ("probe", "simcrop", "main", "100"), ("probe", "simcrop", "main", "features"),
                       ("segment", "simcrop", "luna16", "100")):
        assert run.benchmark(rule, *job).exists(), (rule, job)

    seen = walkthrough(browser, report, tmp_path)
    assert not seen["errors"], seen["errors"]
    assert {"Workflow", "Statistics", *CATEGORIES} <= set(seen["menu"]), seen["menu"]
    results = {category: {r["label"]: r for r in found} for category, found in seen["categories"].items()}
    assert set(results["Results"]) == {"results table", "metric vs. training-data fraction",
                                       "grounding heat maps"}, results["Results"].keys()
    assert set(results["Pre-training"]) == {"pre-training loss curves"}
    assert set(results["Data"]) == {"montage of cases", "preprocessing QC summary"}
    assert set(results["Runtime and memory"]) == {"runtime and memory per job"}

    # The table: shown in a frame, with the same cells as results.md.
    table = results["Results"]["results table"]
    rows = {row[0]: row for row in html_rows(data_uri_bytes(table["iframe"]))}
    doc = json.loads((run.report / "results.json").read_text())
    cells, intervals = doc["rows"]["simcrop"], doc.get("intervals", {}).get("simcrop", {})
    assert {"probe main AUROC 100%", "segment luna16 Dice 100%", "grounding hit"} <= set(cells)
    assert cells["segment luna16 Dice 100%"] is not None

    def shown(column, value):                  # a value, with its patient-bootstrap interval where it has one
        if value is None:
            return "–"
        interval = intervals.get(column)
        return format_interval({**interval, "value": value}) if interval else f"{value:.3f}"

    expected = {column: shown(column, value) for column, value in cells.items()}
    assert any("[" in text for text in expected.values())              # intervals reach the page
    assert dict(zip(rows["objective"], rows["simcrop"])) == {"objective": "simcrop", **expected}
    assert "untrained encoder" in table["caption"]

    # The figures: decoded by the browser, the same bytes as the files.
    figures = {"metric vs. training-data fraction": run.report / "figures" / "fraction_curves.png",
               "pre-training loss curves": run.report / "figures" / "loss_curves.png",
               "montage of cases": run.montage}
    for label, path in figures.items():
        category = next(c for c in results if label in results[c])
        img = results[category][label]["img"]
        assert img["src"].startswith("data:image/png") and img["width"] > 100 and img["height"] > 100, label
        assert data_uri_bytes(img["src"]) == path.read_bytes(), label
    assert "line per pre-training objective" in results["Results"]["metric vs. training-data fraction"]["caption"]
    heatmaps = data_uri_bytes(results["Results"]["grounding heat maps"]["iframe"]).decode()
    embedded = [base64.b64decode(src) for src in re.findall(r'<img[^>]* src="data:image/png;base64,([^"]+)"', heatmaps)]
    assert embedded == [p.read_bytes() for p in sorted((run.report / "figures").glob("heatmap_*.png"))]
    assert embedded, "the tiny run draws at least one grounding heat map"

    # The QC summary: a download, with its numbers in the description.
    qc = results["Data"]["preprocessing QC summary"]
    assert qc["download"] == "preprocess_summary.json"
    summary = json.loads(run.preprocess_summary.read_text())
    assert f'"quarantined": {summary["quarantined"]}' in qc["caption"]

    # Runtime and memory of the heavy jobs, and Snakemake's own runtime statistics.
    bench = html_rows(data_uri_bytes(results["Runtime and memory"]["runtime and memory per job"]["iframe"]))
    header = next(row for row in bench if row[:2] == ["rule", "job"])
    jobs = {tuple(row[:2]): dict(zip(header, row)) for row in bench}
    for rule, job in (("preprocess", layout.shard_name(0)), ("pretrain", "simcrop"), ("probe", "simcrop/main/100"),
                      ("segment", "simcrop/luna16/100")):
        assert float(jobs[rule, job]["wall time (s)"]) > 0, (rule, job, bench)
    assert float(jobs["pretrain", "simcrop"]["peak RSS (MiB)"].replace(",", "")) > 50, bench
    assert seen["statistics"]["charts"] == 2 and "pretrain" in seen["statistics"]["rules"], seen["statistics"]

    png = screenshot(browser, report, tmp_path / "report.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size < SCREENSHOT_LIMIT


if __name__ == "__main__":
    # python tests/workflow/test_html_report.py <report.html> <out.png>
    found = find_chromium()
    if found is None:
        sys.exit("chromium not found")
    print(screenshot(found, Path(sys.argv[1]).resolve(), Path(sys.argv[2])))
