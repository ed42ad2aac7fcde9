/* hwnas charts: draws each <div class="hwnas-figure"> from the JSON in its
   <script type="application/json"> child. Inlined into the HTML pages that nas.results._plots and
   nas.results._report write, so they open offline; no library, no network. */
(function () {
  "use strict";
  const SVG = "http://www.w3.org/2000/svg";
  const COLOR = { front: "#1f77b4", other: "#a8a8a8", base: "#d62728", line: "#1f77b4" };
  const FILTERS = [["all", "all trials"], ["budget", "within budget"], ["front", "Pareto front"]];
  const ORDER = { infeasible: 0, dominated: 1, front: 2 };

  function svg(parent, tag, attrs, text) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v !== null && v !== undefined) e.setAttribute(k, v);
    }
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function html(parent, tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    if (parent) parent.appendChild(e);
    return e;
  }

  function num(v) {
    return typeof v === "number" && isFinite(v);
  }

  function fmt(v) {
    if (!num(v)) return "–";
    const a = Math.abs(v);
    if (a >= 1000) return v.toFixed(0);
    if (a >= 100) return v.toFixed(1);
    return String(Number(v.toPrecision(4)));
  }

  function niceTicks(lo, hi) {
    if (!(num(lo) && num(hi)) || hi <= lo) return [lo];
    const raw = (hi - lo) / 5;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) {
      out.push(Number(v.toPrecision(12)));
    }
    return out;
  }

  function extent(values) {
    const finite = values.filter(num);
    if (!finite.length) return [0, 1];
    const lo = Math.min(...finite), hi = Math.max(...finite);
    const pad = (hi - lo) * 0.06 || Math.abs(hi) * 0.05 || 1;
    return [lo - pad, hi + pad];
  }

  // --- tooltip: one floating box shared by all figures ----------------------------------

  let tipBox = null;

  function showTip(evt, fill) {
    if (!tipBox) tipBox = html(document.body, "div", "hwnas-tip");
    tipBox.textContent = "";
    fill(tipBox);
    tipBox.style.display = "block";
    moveTip(evt);
  }

  function moveTip(evt) {
    if (!tipBox) return;
    const w = tipBox.offsetWidth, h = tipBox.offsetHeight;
    const x = evt.clientX + 14 + w > window.innerWidth ? evt.clientX - w - 14 : evt.clientX + 14;
    const y = evt.clientY + 14 + h > window.innerHeight ? evt.clientY - h - 14 : evt.clientY + 14;
    tipBox.style.left = Math.max(0, x) + "px";
    tipBox.style.top = Math.max(0, y) + "px";
  }

  function hideTip() {
    if (tipBox) tipBox.style.display = "none";
  }

  function hoverable(node, fill, onEnter, onLeave) {
    node.addEventListener("mouseenter", (e) => { showTip(e, fill); if (onEnter) onEnter(); });
    node.addEventListener("mousemove", moveTip);
    node.addEventListener("mouseleave", () => { hideTip(); if (onLeave) onLeave(); });
  }

  // --- axes ---------------------------------------------------------------------------------

  // A plot area: data domain [x0, x1] x [y0, y1] drawn into the pixel box of `svgNode`.
  function frame(node, box, dom, labels) {
    const sx = (v) => box.left + ((v - dom.x[0]) / (dom.x[1] - dom.x[0])) * box.w;
    const sy = (v) => box.top + box.h - ((v - dom.y[0]) / (dom.y[1] - dom.y[0])) * box.h;
    svg(node, "rect", {
      class: "plot-area", x: box.left, y: box.top, width: box.w, height: box.h,
      fill: "#fff", stroke: "#888",
    });
    for (const t of niceTicks(dom.x[0], dom.x[1])) {
      svg(node, "line", { x1: sx(t), x2: sx(t), y1: box.top + box.h, y2: box.top + box.h + 4,
        stroke: "#555" });
      svg(node, "text", { x: sx(t), y: box.top + box.h + 16, "font-size": 11,
        "text-anchor": "middle" }, fmt(t));
    }
    for (const t of niceTicks(dom.y[0], dom.y[1])) {
      svg(node, "line", { x1: box.left, x2: box.left + box.w, y1: sy(t), y2: sy(t),
        stroke: "#eee" });
      svg(node, "text", { x: box.left - 6, y: sy(t) + 4, "font-size": 11,
        "text-anchor": "end" }, fmt(t));
    }
    const midY = box.top + box.h / 2;
    svg(node, "text", { x: box.left + box.w / 2, y: box.top + box.h + 36, "font-size": 12,
      "text-anchor": "middle" }, labels.x);
    svg(node, "text", { x: 14, y: midY, "font-size": 12, "text-anchor": "middle",
      transform: `rotate(-90 14 ${midY})` }, labels.y);
    return { sx, sy };
  }

  let counter = 0;
  const uid = (prefix) => `hwnas-${prefix}-${++counter}`;

  function clipped(node, box) {
    const id = uid("clip");
    const clip = svg(svg(node, "defs"), "clipPath", { id });
    svg(clip, "rect", { x: box.left, y: box.top, width: box.w, height: box.h });
    return svg(node, "g", { "clip-path": `url(#${id})` });
  }

  // Drag a box to zoom into it; double-click to zoom back out.
  function zoomable(node, box, dom, redraw) {
    const area = node.querySelector("rect.plot-area");
    let start = null, band = null;
    const at = (e) => {
      const r = node.getBoundingClientRect();
      return [e.clientX - r.left, e.clientY - r.top];
    };
    area.addEventListener("mousedown", (e) => {
      start = at(e);
      band = svg(node, "rect", { class: "zoom-band", x: start[0], y: start[1], width: 0,
        height: 0 });
      e.preventDefault();
    });
    node.addEventListener("mousemove", (e) => {
      if (!start) return;
      const [x, y] = at(e);
      band.setAttribute("x", Math.min(x, start[0]));
      band.setAttribute("y", Math.min(y, start[1]));
      band.setAttribute("width", Math.abs(x - start[0]));
      band.setAttribute("height", Math.abs(y - start[1]));
    });
    window.addEventListener("mouseup", (e) => {
      if (!start) return;
      const [x, y] = at(e);
      const s = start;
      start = null;
      band.remove();
      if (Math.abs(x - s[0]) < 6 || Math.abs(y - s[1]) < 6) return;
      const fx = (p) => dom.x[0] + ((p - box.left) / box.w) * (dom.x[1] - dom.x[0]);
      const fy = (p) => dom.y[0] + ((box.top + box.h - p) / box.h) * (dom.y[1] - dom.y[0]);
      redraw({ x: [fx(Math.min(x, s[0])), fx(Math.max(x, s[0]))],
        y: [fy(Math.max(y, s[1])), fy(Math.min(y, s[1]))] });
    });
    node.addEventListener("dblclick", () => redraw(null));
  }

  // --- the Pareto front: one panel per pair of objectives -----------------------------

  function trialTip(spec, t) {
    return (box) => {
      const what = { front: "Pareto front", dominated: "dominated", infeasible: "misses the budget" };
      html(box, "b", "", `trial ${t.number}`);
      html(box, "span", "", ` · ${what[t.cls]}`);
      if (t.summary) html(box, "div", "summary", t.summary);
      const table = html(box, "table");
      const head = html(table, "tr");
      for (const h of ["", "predicted", "measured"]) html(head, "th", "", h);
      for (const name of spec.rows) {
        const p = t.predicted[name], m = t.measured[name];
        if (!num(p) && !num(m)) continue;
        const tr = html(table, "tr");
        html(tr, "td", "", spec.labels[name]);
        if (name === "accuracy") {
          const cell = html(tr, "td", "", fmt(num(p) ? p : m));
          cell.colSpan = 2;
        } else {
          html(tr, "td", t.source === "measured" ? "" : "used", fmt(p));
          html(tr, "td", t.source === "measured" ? "used" : "", fmt(m));
        }
      }
      html(box, "div", "note", `costs used by the search: ${t.source}`);
      for (const v of t.violations) html(box, "div", "violation", `over budget: ${v}`);
    };
  }

  function drawFront(root, spec) {
    const state = { filter: "all" };
    const controls = html(root, "div", "controls");
    const name = uid("filter");
    for (const [value, label] of FILTERS) {
      const lab = html(controls, "label");
      const input = html(lab, "input");
      Object.assign(input, { type: "radio", name, value, checked: value === "all" });
      input.addEventListener("change", () => { state.filter = value; apply(); });
      lab.append(" " + label);
    }
    const ringLab = html(controls, "label");
    const ring = html(ringLab, "input");
    Object.assign(ring, { type: "checkbox", checked: false, className: "rings" });
    ring.addEventListener("change", () => root.classList.toggle("all-rings", ring.checked));
    ringLab.append(" predicted ↔ measured on every trial");
    const count = html(controls, "span", "count");
    html(controls, "span", "hint", "hover a point · drag to zoom · double-click to reset");
    const panels = html(root, "div", "panels");
    const shown = (t) =>
      state.filter === "all" ||
      (state.filter === "budget" ? t.cls !== "infeasible" : t.cls === "front");
    const highlight = (n, on) => {
      for (const g of root.querySelectorAll(`g.trial[data-trial="${n}"]`)) {
        g.classList.toggle("hl", on);
      }
    };
    const draws = spec.pairs.map((pair) => {
      const holder = html(panels, "div", "panel-box");
      const draw = (dom) => {
        holder.textContent = "";
        drawPanel(holder, spec, pair, spec.trials.filter(shown), dom, draw, highlight);
      };
      return draw;
    });
    // A filter redraws every panel, scaled to the trials it shows.
    function apply() {
      for (const draw of draws) draw(null);
      const n = spec.trials.filter(shown).length;
      count.textContent = `${n} of ${spec.trials.length} trials shown`;
    }
    apply();
  }

  function drawPanel(holder, spec, [x, y], shownTrials, zoom, redraw, highlight) {
    const W = 420, H = 320;
    const box = { left: 62, top: 14, w: W - 62 - 14, h: H - 14 - 46 };
    const node = svg(holder, "svg", { class: "panel", width: W, height: H,
      viewBox: `0 0 ${W} ${H}`, role: "img",
      "aria-label": `${spec.labels[y]} against ${spec.labels[x]}` });
    const all = (k) => shownTrials.flatMap((t) => [t.values[k], t.other[k]])
      .concat([spec.base[k], spec.limits[k] && spec.limits[k].value]);
    const dom = zoom || { x: extent(all(x)), y: extent(all(y)) };
    const { sx, sy } = frame(node, box, dom, { x: spec.labels[x], y: spec.labels[y] });
    const plot = clipped(node, box);
    for (const [k, vertical] of [[x, true], [y, false]]) {
      const lim = spec.limits[k];
      if (!lim) continue;
      const p = vertical ? sx(lim.value) : sy(lim.value);
      const line = svg(plot, "line", { class: "budget", x1: vertical ? p : box.left,
        x2: vertical ? p : box.left + box.w, y1: vertical ? box.top : p,
        y2: vertical ? box.top + box.h : p, stroke: COLOR.base, "stroke-dasharray": "5 4" });
      svg(line, "title", {}, `budget: ${k} ${lim.op} ${fmt(lim.value)}`);
    }
    const trials = shownTrials.slice().sort((a, b) => ORDER[a.cls] - ORDER[b.cls]);
    for (const t of trials) {
      const vx = t.values[x], vy = t.values[y];
      if (!num(vx) || !num(vy)) continue;
      const g = svg(plot, "g", { class: `trial ${t.cls}`, "data-trial": t.number });
      const color = t.cls === "front" ? COLOR.front : COLOR.other;
      const ox = num(t.other[x]) ? t.other[x] : vx, oy = num(t.other[y]) ? t.other[y] : vy;
      if (ox !== vx || oy !== vy) {
        svg(g, "line", { class: "ring", x1: sx(vx), y1: sy(vy), x2: sx(ox), y2: sy(oy),
          stroke: color, opacity: 0.6 });
        svg(g, "circle", { class: "ring", cx: sx(ox), cy: sy(oy), r: 5, fill: "none",
          stroke: color });
      }
      const filled = t.cls === "infeasible" ? "none" : color;
      svg(g, "circle", { class: "mark", cx: sx(vx), cy: sy(vy), r: t.cls === "front" ? 5 : 4,
        fill: filled, stroke: t.cls === "front" ? "#fff" : color });
      if (t.cls === "front") {
        svg(g, "text", { x: sx(vx) + 7, y: sy(vy) - 6, "font-size": 10, fill: "#333" },
          String(t.number));
      }
      hoverable(g, trialTip(spec, t), () => highlight(t.number, true),
        () => highlight(t.number, false));
    }
    if (num(spec.base[x]) && num(spec.base[y])) {
      const cx = sx(spec.base[x]), cy = sy(spec.base[y]), d = 7;
      const base = svg(plot, "path", { class: "base", fill: COLOR.base,
        d: `M${cx},${cy - d} L${cx + d},${cy} L${cx},${cy + d} L${cx - d},${cy} Z` });
      hoverable(base, (box) => {
        html(box, "b", "", "base model");
        for (const k of spec.rows) {
          if (num(spec.base[k])) html(box, "div", "", `${spec.labels[k]}: ${fmt(spec.base[k])}`);
        }
      });
    }
    zoomable(node, box, dom, redraw);
  }

  // --- line charts (hypervolume, predictor error) ----------------------------------------

  function drawLine(root, spec) {
    const W = 640, H = 280;
    const box = { left: 62, top: 30, w: W - 62 - 16, h: H - 30 - 46 };
    const node = svg(root, "svg", { class: "line", width: W, height: H,
      viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": spec.title });
    svg(node, "text", { x: box.left, y: 18, "font-size": 13, "font-weight": "bold" },
      spec.title);
    const pts = spec.series.flatMap((s) => s.points);
    if (!pts.length) return;
    const xs = pts.map((p) => p[0]).concat((spec.vlines || []).map((v) => v.x));
    const ys = pts.map((p) => p[1]).concat((spec.hlines || []).map((h) => h.y));
    let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
    if (x1 <= x0) x1 = x0 + 1;
    const pad = (x1 - x0) * 0.03;
    const dom = { x: [x0 - pad, x1 + pad], y: [0, Math.max(...ys.filter(num), 1e-9) * 1.1] };
    const { sx, sy } = frame(node, box, dom, { x: spec.xlabel, y: spec.ylabel });
    for (const v of spec.vlines || []) {
      const l = svg(node, "line", { class: "marker", x1: sx(v.x), x2: sx(v.x), y1: box.top,
        y2: box.top + box.h, stroke: "#999", "stroke-dasharray": "2 3" });
      svg(l, "title", {}, v.label);
    }
    for (const h of spec.hlines || []) {
      svg(node, "line", { x1: box.left, x2: box.left + box.w, y1: sy(h.y), y2: sy(h.y),
        stroke: COLOR.base, "stroke-dasharray": "5 4" });
      svg(node, "text", { x: box.left + box.w - 4, y: sy(h.y) - 4, "font-size": 11,
        fill: COLOR.base, "text-anchor": "end" }, h.label);
    }
    spec.series.forEach((s, i) => {
      if (spec.series.length < 2) return;
      const y = box.top + 14 + 16 * i;
      const x = box.left + box.w - 240;
      svg(node, "circle", { cx: x, cy: y - 4, r: 3.5, fill: s.color || COLOR.line });
      svg(node, "text", { x: x + 8, y, "font-size": 11 }, s.label || "");
    });
    for (const s of spec.series.slice().reverse()) {  // the first series on top
      const color = s.color || COLOR.line;
      const d = s.points.map((p, i) => {
        const prev = i && s.step ? `L${sx(p[0])},${sy(s.points[i - 1][1])} ` : "";
        return `${prev}${i ? "L" : "M"}${sx(p[0])},${sy(p[1])}`;
      });
      svg(node, "path", { d: d.join(" "), fill: "none", stroke: color,
        "stroke-width": s.markers ? 1 : 2 });
      if (!s.markers) continue;
      for (const p of s.points) {
        const c = svg(node, "circle", { class: "point", cx: sx(p[0]), cy: sy(p[1]), r: 3.5,
          fill: color });
        hoverable(c, (b) => html(b, "div", "", p[2] || `${fmt(p[0])}: ${fmt(p[1])}`));
      }
    }
  }

  const DRAW = { front: drawFront, line: drawLine };

  for (const root of document.querySelectorAll("div.hwnas-figure")) {
    const data = root.querySelector('script[type="application/json"]');
    const spec = JSON.parse(data.textContent);
    DRAW[spec.type](root, spec);
  }
})();
