"""``report.html``: one self-contained page (inline CSS, PNGs as data URIs, no network)."""

from __future__ import annotations

import base64
import html
import json
import math

import numpy as np

from daefr.image_io import tensor_to_rgb
from daefr.runtime.report import plots
from daefr.runtime.report.build import ReportData

DIFF_GAIN = 10  # the difference images are |backend - eager| amplified this much
GRID_FACES = 3

STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.pass { color: #0a0; font-weight: bold; } .fail { color: #c00; font-weight: bold; }
.skipped { color: #888; } .warn { background: #fff4d6; border: 1px solid #e0b84c; padding: 0.8em; }
img { max-width: 100%; }
"""

# Marks the page once every picture has decoded, so a headless browser can check it.
CHECK_SCRIPT = """
window.addEventListener('load', () => {
  const imgs = Array.from(document.images);
  const ok = imgs.filter(i => i.complete && i.naturalWidth > 0).length;
  document.body.setAttribute('data-images-ok', ok + '/' + imgs.length);
});
"""


def _img(png: bytes, alt: str) -> str:
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return html.escape(value)
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.{digits}g}"
    return html.escape(str(value))


def _verdict(ok: bool) -> str:
    return '<span class="pass">PASS</span>' if ok else '<span class="fail">FAIL</span>'


def _variant_table(rows: list[dict]) -> str:
    head = (
        "<tr><th>variant</th><th>codes equal</th><th>worst face</th><th>PSNR dB</th><th>SSIM</th>"
        "<th>max |err|</th><th>p99 |err|</th><th>p50 ms</th><th>p95 ms</th><th>p99 ms</th>"
        "<th>best faces/s</th><th>peak MiB</th><th>build s</th><th>size MiB</th><th>fp16 bars</th><th>NR-IQA</th></tr>"
    )
    body = []
    for row in rows:
        if row["status"] != "ran":
            body.append(
                f'<tr class="skipped"><td>{_fmt(row["name"])}</td><td colspan="15">skipped: {_fmt(row["reason"])}</td></tr>'
            )
            continue
        acc, lat = row["accuracy"], row["latency_ms"]
        bars = row.get("quality_bars")
        bar_text = (
            "n/a"
            if bars is None
            else f"{_verdict(bars['code_agreement_pass'])} codes, {_verdict(bars['psnr_pass'])} PSNR"
        )
        best = max(row["throughput_faces_per_s"].values())
        cells = [
            f'{100 * acc["code_agreement"]:.2f} %', f'{100 * acc["min_face_code_agreement"]:.2f} %',
            _fmt(_num(acc["psnr_db"])), f'{acc["ssim"]:.5f}', _fmt(acc["max_abs_error"]), _fmt(acc["p99_abs_error"]),
            _fmt(lat["p50"]), _fmt(lat["p95"]), _fmt(lat["p99"]), _fmt(best), _fmt(row["peak_memory_mb"]),
            _fmt(row["build_seconds"]), _fmt(row["artifact_mb"]), bar_text,
            "n/a" if row.get("nr_iqa") is None else _fmt(row["nr_iqa"]["mean"]),
        ]  # fmt: skip
        body.append(f"<tr><td>{_fmt(row['name'])}</td>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return f"<table>{head}{''.join(body)}</table>"


def _quality_section(s: dict) -> str:
    """The IQPFR condition: the S the variants ran at and, with a scorer, the sweep of S."""
    q = s.get("quality_condition")
    if q is None:
        return ""
    lo, hi = q["trained_range"]
    text = (
        f"<h2>Quality condition (IQPFR)</h2><p>The variants ran at S = {_fmt(q['condition'])} "
        f"(trained for {_fmt(lo)} .. {_fmt(hi)}); NR-IQA: {_fmt(s.get('nr_iqa_scorer'))}.</p>"
    )
    if not q.get("sweep"):
        return text + "<p>No NR-IQA scorer: no sweep of S.</p>"
    head = "<tr><th>S</th><th>mean score</th><th>min</th><th>max</th><th>codes changed vs first S</th></tr>"
    body = "".join(
        f"<tr><td>{_fmt(r['quality'])}</td><td>{_fmt(r['mean'])}</td><td>{_fmt(r['min'])}</td>"
        f"<td>{_fmt(r['max'])}</td><td>{100 * r['codes_changed']:.1f} %</td></tr>"
        for r in q["sweep"]
    )
    return f"{text}<table>{head}{body}</table>"


def _num(value: float | str) -> float:
    return float(value) if isinstance(value, str) else value


def _throughput_table(rows: list[dict]) -> str:
    ran = [r for r in rows if r["status"] == "ran"]
    batches = sorted({int(b) for r in ran for b in r["throughput_faces_per_s"]})
    head = "<tr><th>faces/s at batch</th>" + "".join(f"<th>{b}</th>" for b in batches) + "</tr>"
    body = "".join(
        f"<tr><td>{_fmt(r['name'])}</td>"
        + "".join(f"<td>{_fmt(r['throughput_faces_per_s'].get(str(b)))}</td>" for b in batches)
        + "</tr>"
        for r in ran
    )
    return f"<table>{head}{body}</table>"


def _graph_table(rows: list[dict]) -> str:
    ran = [r for r in rows if r["status"] == "ran" and r.get("graph_error")]
    graphs = list(ran[0]["graph_error"]) if ran else []
    head = "<tr><th>error each graph adds</th>" + "".join(f"<th>{g}</th>" for g in graphs) + "</tr>"
    body = "".join(
        f"<tr><td>{_fmt(r['name'])}</td>"
        + "".join(f"<td>{_fmt(r['graph_error'][g])}</td>" for g in graphs)
        + "</tr>"
        for r in ran
    )
    note = (
        "<p>Each graph gets eager fp32's inputs, so a number is the error that graph itself adds: relative "
        "error (max |diff| / max |eager|) for features and images, the share of differing codes for the transformer.</p>"
    )
    return f"<table>{head}{body}</table>{note}"


def _grid(data: ReportData) -> bytes:
    others = [name for name in data.outputs if name != data.summary["reference"]]
    reference = data.outputs[data.summary["reference"]]
    rows = []
    for i, face in enumerate(data.faces[:GRID_FACES]):
        eager = tensor_to_rgb(reference[i])
        cols: list[tuple[str, np.ndarray]] = [("input (degraded)", face.degraded), ("eager fp32", eager)]
        for name in others:
            out = data.outputs[name][i]
            diff = (out - reference[i]).abs().mul(DIFF_GAIN * 127.5).clamp(0, 255).byte()
            cols.append((name, tensor_to_rgb(out)))
            cols.append((f"|diff| x{DIFF_GAIN}", diff.permute(1, 2, 0).numpy()))
        rows.append((face.name, cols))
    return plots.comparison_grid(rows)


def render(data: ReportData) -> str:
    s = data.summary
    rows = s["variants"]
    ran = [r for r in rows if r["status"] == "ran"]
    points = [
        (r["name"], max(r["throughput_faces_per_s"].values()), _num(r["accuracy"]["psnr_db"])) for r in ran
    ]
    graph_times = {r["name"]: r["graph_ms"] for r in ran if r.get("graph_ms")}
    weights = s["weights"]
    warning = ""
    if weights.get("kind") == "random":
        warning = (
            '<p class="warn"><b>Random weights.</b> No trained checkpoint was given, so the network was filled with '
            "seeded random weights. Speed numbers are real; accuracy numbers measure numerical agreement of the "
            "backends on a network that restores nothing, and random weights give smaller code margins than "
            "trained ones, so code agreement here is a pessimistic bound. The fp16 quality bars are meant for real weights.</p>"
        )
    env = html.escape(json.dumps(s["environment"], indent=1))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(s["title"])}</title><style>{STYLE}</style></head>
<body>
<h1>{html.escape(s["title"])}</h1>
<p>Preset <b>{_fmt(s["preset"])}</b> ({s["resolution"]}x{s["resolution"]}), {len(s["faces"])} degraded faces,
reference <b>{_fmt(s["reference"])}</b>, weights: {_fmt(weights.get("source"))}, git {_fmt(s["git_revision"])}.</p>
{warning}
<h2>Accuracy and speed</h2>
{_variant_table(rows)}
<p>fp16 bars: code agreement &ge; {100 * s["quality_bars"]["code_agreement_min"]:.1f} %, PSNR vs eager fp32 &ge; {s["quality_bars"]["psnr_min_db"]:.0f} dB.</p>
{_img(plots.accuracy_vs_speed(points), "accuracy against speed")}
{_quality_section(s)}
<h2>Throughput</h2>
{_throughput_table(rows)}
<h2>Where error enters</h2>
{_graph_table(rows)}
<h2>Where time goes</h2>
{_img(plots.time_per_graph(graph_times), "time per graph") if graph_times else "<p>No per-graph timings.</p>"}
<h2>Faces</h2>
{_img(_grid(data), "input, eager and backend outputs with amplified differences")}
<h2>Environment</h2>
<pre>{env}</pre>
<script>{CHECK_SCRIPT}</script>
</body></html>
"""
