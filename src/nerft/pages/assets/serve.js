// nerft serve's page: a client of the server's own API (GET /v1/info, POST /v1/ner), like any other. The key,
// when the server wants one, is typed here and sent as a bearer token; the page itself carries no data.
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const {el} = NerftMarks;
  const MAX_DOCUMENTS = 1000; // a dropped file: the first ones only (the CLI is for corpora)
  const state = {info: null, names: new Map(), colour: NerftMarks.colourClasses([]), docs: [], responses: [],
    hidden: new Set(), busy: false};

  function headers(json) {
    const h = json ? {"Content-Type": "application/json"} : {};
    const key = $("api-key").value.trim();
    if (key) h.Authorization = "Bearer " + key;
    return h;
  }
  function status(text, isError) {
    $("status").textContent = text;
    $("status").classList.toggle("error", !!isError);
  }
  async function detail(response) {
    try {
      const body = await response.json();
      return typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (e) {
      return response.statusText;
    }
  }

  async function loadInfo() {
    const response = await fetch("v1/info", {headers: headers(false)});
    if (response.status === 401) {
      $("key-row").hidden = false;
      $("model-info").textContent = "this server needs an API key: type it below";
      if ($("api-key").value) status("the API key was not accepted", true);
      return;
    }
    if (!response.ok) { $("model-info").textContent = "no model description: " + await detail(response); return; }
    state.info = await response.json();
    state.names = new Map(state.info.labels.map((l) => [l.code, l.name]));
    state.colour = NerftMarks.colourClasses(state.info.labels.map((l) => l.code));
    showInfo(state.info);
    status("");
  }

  function showInfo(info) {
    $("model-name").textContent = "· " + info.model;
    const sub = $("model-info");
    sub.replaceChildren();
    const parts = [];
    if (info.task) parts.push(["task", info.task]);
    if (info.base) parts.push(["base", info.base]);
    if (info.adapter) parts.push(["adapter", info.adapter]);
    parts.push(["labels", info.labels.map((l) => l.name === l.code ? l.code : `${l.name} (${l.code})`).join(", ")]);
    for (const [key, value] of Object.entries(info.scores || {})) parts.push([key, value.toFixed(1)]);
    if (info.decoding) parts.push(["decoding", info.decoding]);
    parts.forEach(([key, value], k) => {
      if (k) sub.append(" · ");
      sub.append(key + " ", el("b", "", value));
    });
  }

  function readDocuments(name, text) {
    const lines = text.split(/\r?\n/);
    const docs = [];
    if (name.toLowerCase().endsWith(".jsonl")) {
      lines.forEach((line, k) => {
        if (!line.trim()) return;
        let row;
        try { row = JSON.parse(line); } catch (e) { throw new Error(`${name}, line ${k + 1}: not JSON`); }
        if (!row || typeof row.text !== "string") throw new Error(`${name}, line ${k + 1}: no "text" field`);
        docs.push({id: row.id !== undefined ? String(row.id) : String(k + 1), text: row.text});
      });
    } else {
      lines.forEach((line, k) => { if (line.trim()) docs.push({id: String(k + 1), text: line}); });
    }
    return docs;
  }

  async function analyse(docs) {
    if (state.busy || !docs.length) return;
    if (!state.info) await loadInfo();
    if (!state.info) return;
    state.busy = true;
    $("analyse").disabled = true;
    const started = performance.now();
    const per = state.info.limits.max_texts;
    const kept = docs.slice(0, MAX_DOCUMENTS);
    const found = [], responses = [];
    try {
      for (let k = 0; k < kept.length; k += per) {
        const batch = kept.slice(k, k + per);
        status(`asking the model… ${k} of ${kept.length} texts done`);
        const response = await fetch("v1/ner", {method: "POST", headers: headers(true),
          body: JSON.stringify({texts: batch.map((d) => d.text)})});
        if (!response.ok) {
          if (response.status === 401) $("key-row").hidden = false;
          throw new Error(`the server answered ${response.status}: ${await detail(response)}`);
        }
        const body = await response.json();
        responses.push(body);
        body.results.forEach((r, i) => found.push({...batch[i], entities: r.entities}));
      }
    } catch (e) {
      status(e.message, true);
      return;
    } finally {
      state.busy = false;
      $("analyse").disabled = false;
    }
    state.docs = found;
    state.responses = responses;
    const n = found.reduce((sum, d) => sum + d.entities.length, 0);
    const cut = docs.length > kept.length ? ` (the first ${kept.length} of ${docs.length})` : "";
    status(`${n} entities in ${found.length} text${found.length === 1 ? "" : "s"}${cut}, ` +
      `${((performance.now() - started) / 1000).toFixed(2)} s`);
    $("json").textContent = JSON.stringify(responses.length === 1 ? responses[0] : responses, null, 2);
    $("view").hidden = false;
    render();
  }

  const minScore = () => Number($("min-score").value);
  const passes = (e) => e.score === null || e.score === undefined || e.score >= minScore();
  const nameOf = (code) => state.names.get(code) || code;

  function about(e) {
    const score = typeof e.score === "number" ? `score ${e.score.toFixed(3)}` : "no score";
    return `${nameOf(e.label)} (${e.label})\n${score} · [${e.start}, ${e.end})`;
  }

  function renderLegend() {
    const counts = new Map();
    for (const d of state.docs) for (const e of d.entities) if (passes(e)) counts.set(e.label, (counts.get(e.label) || 0) + 1);
    const codes = state.info.labels.map((l) => l.code);
    for (const d of state.docs) for (const e of d.entities) if (!codes.includes(e.label)) codes.push(e.label);
    const legend = $("legend");
    legend.replaceChildren();
    for (const code of codes) {
      const chip = NerftMarks.filterChip("label", code, !state.hidden.has(code), (on) => {
        if (on) state.hidden.delete(code); else state.hidden.add(code);
        render();
      }, el("span", "swatch " + state.colour(code)), el("span", "", nameOf(code)),
        el("span", "n", String(counts.get(code) || 0)));
      chip.title = code;
      legend.append(chip);
    }
  }

  function render() {
    renderLegend();
    $("min-score-value").textContent = minScore().toFixed(2);
    const results = $("results");
    results.replaceChildren();
    let shown = 0, total = 0;
    state.docs.forEach((d, k) => {
      const kept = d.entities.filter((e) => passes(e) && !state.hidden.has(e.label));
      total += d.entities.length;
      shown += kept.length;
      const box = el("div", "result");
      box.dataset.index = String(k);
      if (state.docs.length > 1) box.append(el("div", "id", "id " + NerftMarks.shown(d.id)));
      const text = el("div", "doc");
      NerftMarks.render(text, d.text, kept, {colour: state.colour, name: nameOf, about});
      box.append(text);
      const lost = kept.filter((e) => !Number.isInteger(e.start));
      if (lost.length) box.append(el("div", "lost", "not found in the text: " + lost.map((e) => `${e.text} (${nameOf(e.label)})`).join(", ")));
      results.append(box);
    });
    $("shown-count").textContent = `${shown} of ${total} entities shown`;
  }

  $("analyse").addEventListener("click", () => {
    const text = $("text").value;
    if (!text.trim()) { status("type or paste a text first", true); return; }
    analyse([{id: "1", text}]);
  });
  $("text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) $("analyse").click();
  });
  $("key-row").addEventListener("submit", (ev) => { ev.preventDefault(); loadInfo(); });
  $("min-score").addEventListener("input", render);
  $("toggle-json").addEventListener("click", () => {
    const pre = $("json");
    pre.hidden = !pre.hidden;
    $("toggle-json").setAttribute("aria-expanded", String(!pre.hidden));
  });

  async function openFile(file) {
    try {
      const docs = readDocuments(file.name, await file.text());
      if (!docs.length) throw new Error(`${file.name} holds no text`);
      await analyse(docs);
    } catch (e) {
      status(e.message, true);
    }
  }
  $("file").addEventListener("change", () => { if ($("file").files[0]) openFile($("file").files[0]); });
  const card = $("input-card");
  card.addEventListener("dragover", (ev) => { ev.preventDefault(); card.classList.add("drop"); });
  card.addEventListener("dragleave", () => card.classList.remove("drop"));
  card.addEventListener("drop", (ev) => {
    ev.preventDefault();
    card.classList.remove("drop");
    if (ev.dataTransfer.files[0]) openFile(ev.dataTransfer.files[0]);
  });

  NerftMarks.hoverTips($("results"));
  loadInfo().catch((e) => status("could not reach the server: " + e.message, true));
})();
