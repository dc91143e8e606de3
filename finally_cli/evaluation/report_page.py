"""The listening report's page: inline CSS and script (no network), filled by html_report."""

from __future__ import annotations

import json
from html import escape

CSS = """
:root { color-scheme: light; font: 14px/1.45 system-ui, sans-serif; color: #1b1b1f; }
body { margin: 0 auto; padding: 0 24px 48px; max-width: 1600px; background: #fafafa; }
h1 { font-size: 22px; margin: 20px 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; }
.meta, .note { color: #555; } .note { font-size: 13px; }
table { border-collapse: collapse; background: #fff; margin: 8px 0; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: right; white-space: nowrap; }
th:first-child, td:first-child, tbody th { text-align: left; }
caption { text-align: left; font-weight: 600; padding: 4px 0; }
table.sortable thead th { cursor: pointer; user-select: none; background: #f0f0f4; }
table.sortable thead th[aria-sort="ascending"]::after { content: " ▲"; }
table.sortable thead th[aria-sort="descending"]::after { content: " ▼"; }
td.best { font-weight: 700; } small { color: #666; } .delta { color: #345; }
.charts { display: flex; flex-wrap: wrap; gap: 16px; }
svg.chart { background: #fff; border: 1px solid #ddd; }
svg .grid { stroke: #e5e5e5; } svg .tick { font-size: 11px; fill: #444; }
svg .chart-title { font-size: 13px; font-weight: 600; fill: #222; }
.controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0;
  position: sticky; top: 0; background: #fafafa; padding: 6px 0; z-index: 1; }
.file { background: #fff; border: 1px solid #ddd; border-radius: 6px; padding: 10px 12px;
  margin: 12px 0; }
.file h3 { margin: 0 0 6px; font-size: 15px; word-break: break-all; }
.badge { font-size: 12px; background: #eef; border-radius: 4px; padding: 1px 6px;
  margin-left: 6px; font-weight: 400; }
.media { display: flex; flex-wrap: wrap; gap: 10px; padding: 6px 0; }
figure { margin: 0; flex: 0 0 auto; width: 300px; }
figcaption { font-weight: 600; font-size: 13px; margin-bottom: 2px; }
.spec { position: relative; width: 300px; height: 160px; background: #000; }
.spec img { width: 300px; height: 160px; display: block; image-rendering: auto; }
.spec span { position: absolute; left: 2px; font-size: 9px; color: #fff;
  text-shadow: 0 0 2px #000; transform: translateY(50%); }
audio { width: 300px; height: 32px; margin-top: 4px; }
.pager { display: flex; gap: 8px; align-items: center; margin: 12px 0; }
"""

SCRIPT = r"""
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const el = (tag, props, ...children) => {
    const node = document.createElement(tag);
    Object.entries(props || {}).forEach(([k, v]) => {
      if (k === "class") node.className = v; else if (k in node) node[k] = v;
      else node.setAttribute(k, v);
    });
    children.forEach((c) => node.append(c));
    return node;
  };
  const fmt = (v) => (v === null || v === undefined ? "n/a" : v.toFixed(3));
  const compare = (a, b) => {
    const na = a === null || Number.isNaN(a), nb = b === null || Number.isNaN(b);
    if (na || nb) return na === nb ? 0 : na ? 1 : -1;
    return a - b;
  };

  // Summary tables: click (or Enter on) a header to sort the systems by that column.
  document.querySelectorAll("table.sortable").forEach((table) => {
    Array.from(table.tHead.rows[0].cells).forEach((th, index) => {
      th.tabIndex = 0;
      const sort = () => {
        const descending = th.getAttribute("aria-sort") !== "descending";
        Array.from(th.parentNode.cells).forEach((c) => c.removeAttribute("aria-sort"));
        th.setAttribute("aria-sort", descending ? "descending" : "ascending");
        const rows = Array.from(table.tBodies[0].rows);
        const value = (row) => row.cells[index].dataset.value;
        rows.sort((a, b) => {
          if (th.dataset.type !== "num") {
            const order = value(a).localeCompare(value(b));
            return descending ? -order : order;
          }
          const x = value(a) === "" ? null : parseFloat(value(a));
          const y = value(b) === "" ? null : parseFloat(value(b));
          if (x === null || y === null) return compare(x, y);
          return descending ? y - x : x - y;
        });
        rows.forEach((row) => table.tBodies[0].append(row));
      };
      th.addEventListener("click", sort);
      th.addEventListener("keydown", (e) => { if (e.key === "Enter") sort(); });
    });
  });

  // Files: sort by any metric of any system (or its change against the first system),
  // filter by condition, page through.
  const state = { metric: "file", system: data.systems[0], delta: false, descending: false,
                  condition: "", page: 0, size: 10 };
  const select = (name, options, value) => {
    const node = el("select", { name: name });
    options.forEach(([v, text]) => node.append(el("option", { value: v }, text)));
    node.value = value;
    node.addEventListener("change", () => {
      state[name] = name === "size" ? parseInt(node.value, 10) : node.value;
      if (name === "descending") state.descending = node.value === "true";
      state.page = 0;
      render();
    });
    return node;
  };
  const deltaBox = el("input", { type: "checkbox", name: "delta" });
  deltaBox.addEventListener("change", () => { state.delta = deltaBox.checked; render(); });
  const controls = document.getElementById("controls");
  controls.append(
    el("label", {}, "sort by ",
       select("metric", [["file", "file name"]].concat(data.columns.map((c) => [c.key, c.label])),
              state.metric)),
    el("label", {}, "of ", select("system", data.systems.map((s) => [s, s]), state.system)),
    el("label", {}, deltaBox, " change vs " + data.systems[0]),
    select("descending", [["false", "ascending"], ["true", "descending"]], "false"),
  );
  if (data.conditions.length) {
    controls.append(el("label", {}, "condition ",
      select("condition", [["", "all"]].concat(data.conditions.map((c) => [c, c])), "")));
  }
  controls.append(el("label", {}, "per page ",
    select("size", [["5", "5"], ["10", "10"], ["25", "25"], ["50", "50"]], "10")));

  const score = (file) => {
    if (state.metric === "file") return null;
    const own = (file.scores[state.system] || {})[state.metric];
    if (own === null || own === undefined) return null;
    if (!state.delta) return own;
    const base = (file.scores[data.systems[0]] || {})[state.metric];
    return base === null || base === undefined ? null : own - base;
  };
  const card = (file) => {
    const head = el("h3", {}, file.key);
    if (file.condition) head.append(el("span", { class: "badge" }, file.condition));
    const table = el("table", { class: "scores" });
    table.append(el("tr", {}, el("th", {}, "system"),
                    ...data.columns.map((c) => el("th", {}, c.label))));
    data.systems.forEach((system) => {
      const row = el("tr", {}, el("th", { scope: "row" }, system));
      const scores = file.scores[system] || {};
      data.columns.forEach((c) => row.append(el("td", {}, fmt(scores[c.key]))));
      table.append(row);
    });
    const section = el("section", { class: "file" }, head, table);
    if (file.notes.length) section.append(el("p", { class: "note" }, file.notes.join("; ")));
    if (!file.media) {
      section.append(el("p", { class: "note" }, data.media_note));
      return section;
    }
    const strip = el("div", { class: "media" });
    file.media.forEach((m) => {
      const spec = el("div", { class: "spec" },
        el("img", { src: m.image, alt: "spectrogram of " + m.source + ", " + file.key,
                    loading: "lazy", width: 300, height: 160 }));
      data.ticks.forEach(([text, fraction]) =>
        spec.append(el("span", { style: "bottom:" + (100 * fraction).toFixed(1) + "%" }, text)));
      strip.append(el("figure", {}, el("figcaption", {}, m.source), spec,
                      el("audio", { controls: true, preload: "metadata", src: m.audio })));
    });
    section.append(strip);
    return section;
  };
  const list = document.getElementById("files");
  const pager = document.getElementById("pager");
  function render() {
    let files = data.files.filter((f) => !state.condition || f.condition === state.condition);
    if (state.metric === "file") {
      files = files.slice().sort((a, b) => a.key.localeCompare(b.key));
      if (state.descending) files.reverse();
    } else {
      files = files.slice().sort((a, b) => {
        const x = score(a), y = score(b);
        if (x === null || y === null) return compare(x, y);
        return state.descending ? y - x : x - y;
      });
    }
    const pages = Math.max(1, Math.ceil(files.length / state.size));
    state.page = Math.min(state.page, pages - 1);
    list.replaceChildren(...files.slice(state.page * state.size, (state.page + 1) * state.size)
      .map(card));
    const button = (text, page) => {
      const b = el("button", { type: "button", disabled: page < 0 || page >= pages }, text);
      b.addEventListener("click", () => { state.page = page; render(); list.scrollIntoView(); });
      return b;
    };
    pager.replaceChildren(button("← previous", state.page - 1),
      el("span", {}, `page ${state.page + 1} of ${pages} (${files.length} files)`),
      button("next →", state.page + 1));
  }
  render();
})();
"""


def page(
    title: str, intro: str, summary_html: str, charts_title: str, charts_html: str, data: dict
) -> str:
    """The whole HTML document (sections are trusted HTML made by report_charts)."""
    # "</" cannot end the JSON's script element early once written as "<\/".
    payload = json.dumps(data, ensure_ascii=False, allow_nan=False).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title>
<style>{CSS}</style>
</head>
<body>
<h1>{escape(title)}</h1>
{intro}
<h2>Summary</h2>
{summary_html}
<h2>{escape(charts_title)}</h2>
<div class="charts">{charts_html}</div>
<h2>Files</h2>
<p class="note">Spectrograms: 0–24 kHz on a mel scale, 80 dB range, the same level scale for
every system of a file. Outputs are shown at their own sample rate (an empty top band means the
system outputs 16 kHz audio).</p>
<div id="controls" class="controls"></div>
<div id="files"></div>
<div id="pager" class="pager"></div>
<script type="application/json" id="report-data">{payload}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
