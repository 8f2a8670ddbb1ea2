// nerft evaluate's report: the documents with an error, a page at a time, filtered by error kind, label and a
// search, with counts that follow the other filters. Data: the JSON block #nerft-data (see pages/report.py).
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const {el} = NerftMarks;
  const data = JSON.parse($("nerft-data").textContent);
  const PER_PAGE = 25;
  const names = new Map(data.labels);
  const colour = NerftMarks.colourClasses(data.labels.map(([code]) => code));
  const nameOf = (code) => names.get(code) || code;
  const kinds = Object.keys(data.kinds);
  const state = {kinds: new Set(kinds), label: "", search: "", page: 0};

  // each error once: its kind and the labels it involves
  for (const d of data.docs) {
    d.errs = d.errors.map(([kind, gi, pi]) => {
      const g = gi >= 0 ? d.gold[gi] : null, p = pi >= 0 ? d.pred[pi] : null;
      return {kind, g, p, labels: [g && g[2], p && p[2]].filter(Boolean)};
    });
    d.haystack = (d.id + "\n" + d.text).toLowerCase();
  }

  const labelOk = (e) => !state.label || e.labels.includes(state.label);
  const shown = (e) => state.kinds.has(e.kind) && labelOk(e);
  const searched = (d) => !state.search || d.haystack.includes(state.search);

  function errorLabel(e, d) {
    if (!d.chars) d.chars = Array.from(d.text); // offsets are code points
    const piece = (s) => s[0] === null ? s[4] : d.chars.slice(s[0], s[1]).join("");
    const k = data.kinds[e.kind];
    if (e.kind === "missed") return `${k}: “${piece(e.g)}” ${nameOf(e.g[2])}`;
    if (e.kind === "spurious") return `${k}: “${piece(e.p)}” ${nameOf(e.p[2])}` + (e.p[0] === null ? " (not in the text)" : "");
    if (e.kind === "wrong_label") return `${k}: “${piece(e.g)}” ${nameOf(e.g[2])} → ${nameOf(e.p[2])}`;
    return `${k}: “${piece(e.g)}” ${nameOf(e.g[2])} → “${piece(e.p)}” ${nameOf(e.p[2])}`;
  }

  function renderFilters() {
    const byKind = new Map(kinds.map((k) => [k, 0]));
    const byLabel = new Map();
    for (const d of data.docs) {
      if (!searched(d)) continue;
      for (const e of d.errs) {
        if (labelOk(e)) byKind.set(e.kind, byKind.get(e.kind) + 1);
        if (state.kinds.has(e.kind)) for (const l of new Set(e.labels)) byLabel.set(l, (byLabel.get(l) || 0) + 1);
      }
    }
    const box = $("kind-filter");
    box.replaceChildren();
    for (const kind of kinds) {
      box.append(NerftMarks.filterChip("kind", kind, state.kinds.has(kind), (on) => {
        if (on) state.kinds.add(kind); else state.kinds.delete(kind);
        state.page = 0;
        render();
      }, el("span", "", data.kinds[kind]), el("span", "n", String(byKind.get(kind)))));
    }
    const select = $("label-filter");
    const codes = [...data.labels.map(([c]) => c), ...[...byLabel.keys()].filter((c) => !names.has(c)).sort()];
    select.replaceChildren(el("option", "", "all labels"));
    select.firstChild.value = "";
    for (const code of codes) {
      const option = el("option", "", `${nameOf(code)} (${byLabel.get(code) || 0})`);
      option.value = code;
      select.append(option);
    }
    select.value = state.label;
  }

  function layer(title, d, spans, flagged) {
    const row = el("div", "layer");
    const text = el("div", "doc");
    const objects = spans.map((s) => ({start: s[0], end: s[1], label: s[2], score: s[3], ref: s}));
    NerftMarks.render(text, d.text, objects, {colour, name: nameOf, flag: (o) => flagged.has(o.ref),
      about: (o) => `${title}: ${nameOf(o.label)} (${o.label}) [${o.start}, ${o.end})` +
        (typeof o.score === "number" ? ` score ${o.score.toFixed(3)}` : "")});
    row.append(el("span", "", title), text);
    row.dataset.layer = title;
    return row;
  }

  function renderDoc(d) {
    const box = el("div", "err-doc");
    box.dataset.id = d.id;
    box.append(el("div", "id", "id " + NerftMarks.shown(d.id)));
    const errs = el("div", "errs");
    const flagged = new Set();
    for (const e of d.errs) {
      const on = shown(e);
      const tag = el("span", `err ${e.kind}${on ? "" : " dim"}`, errorLabel(e, d));
      tag.dataset.kind = e.kind;
      errs.append(tag);
      if (on) { if (e.g) flagged.add(e.g); if (e.p) flagged.add(e.p); }
    }
    box.append(errs, layer("gold", d, d.gold, flagged), layer("predicted", d, d.pred.filter((s) => s[0] !== null), flagged));
    return box;
  }

  function render() {
    renderFilters();
    const matching = data.docs.filter((d) => searched(d) && d.errs.some(shown));
    const pages = Math.max(1, Math.ceil(matching.length / PER_PAGE));
    state.page = Math.min(state.page, pages - 1);
    const first = state.page * PER_PAGE;
    const list = $("docs");
    list.replaceChildren(...matching.slice(first, first + PER_PAGE).map(renderDoc));
    $("doc-count").textContent = matching.length
      ? `documents ${first + 1}–${Math.min(first + PER_PAGE, matching.length)} of ${matching.length}`
      : "no document matches";
    $("page").textContent = `page ${state.page + 1} of ${pages}`;
    $("prev").disabled = state.page === 0;
    $("next").disabled = state.page >= pages - 1;
  }

  $("label-filter").addEventListener("change", () => { state.label = $("label-filter").value; state.page = 0; render(); });
  let typing = null;
  $("search").addEventListener("input", () => {
    clearTimeout(typing);
    typing = setTimeout(() => { state.search = $("search").value.trim().toLowerCase(); state.page = 0; render(); }, 150);
  });
  $("prev").addEventListener("click", () => { state.page -= 1; render(); window.scrollTo(0, $("errors").offsetTop); });
  $("next").addEventListener("click", () => { state.page += 1; render(); window.scrollTo(0, $("errors").offsetTop); });
  NerftMarks.hoverTips($("docs"));
  render();
})();
