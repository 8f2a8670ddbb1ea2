// nerft pages: a text with its entities marked, in the browser. The same cut as nerft/pages/marks.py (a browser
// test holds the two to each other): offsets are code points (Python's characters), so a character outside the
// BMP (two UTF-16 units) counts once; a boundary never separates a character from its combining marks. Text is
// only ever set as text (textContent), never parsed as HTML.
"use strict";
const NerftMarks = (() => {
  const BINDS = /^[\p{M}\u200d\u034f\ufe00-\ufe0f\u{1f3fb}-\u{1f3ff}\u{e0100}-\u{e01ef}]$/u;
  const COLOURS = 12;

  function binds(chars, i) {
    return BINDS.test(chars[i]) || chars[i - 1] === "\u200d";
  }
  function clusterEnd(chars, i) {
    while (i > 0 && i < chars.length && binds(chars, i)) i += 1;
    return i;
  }
  function clusterStart(chars, i) {
    while (i > 0 && i < chars.length && binds(chars, i)) i -= 1;
    return i;
  }
  function placeable(span, length) {
    return Number.isInteger(span.start) && Number.isInteger(span.end) && span.start >= 0 &&
      span.start < span.end && span.end <= length;
  }

  // [{start, end, text, covering, closing}]: covering lists the spans over the piece, outermost first;
  // closing the spans that end with it, innermost first.
  function pieces(text, spans) {
    const chars = Array.from(text);
    const shown = new Map();
    spans.forEach((s, k) => {
      if (placeable(s, chars.length)) shown.set(k, [clusterStart(chars, s.start), clusterEnd(chars, s.end)]);
    });
    const cutSet = new Set([0, chars.length]);
    for (const [a, b] of shown.values()) { cutSet.add(a); cutSet.add(b); }
    const cuts = [...cutSet].sort((x, y) => x - y);
    const order = [...shown.keys()].sort((p, q) => {
      const [pa, pb] = shown.get(p), [qa, qb] = shown.get(q);
      return (qb - qa) - (pb - pa) || pa - qa || p - q;
    });
    const rank = new Map(order.map((k, r) => [k, r]));
    const starting = new Map();
    for (const [k, [a]] of shown) { if (!starting.has(a)) starting.set(a, []); starting.get(a).push(k); }
    let active = [];  // the spans over the current piece: one sweep over the cuts, not a scan per piece
    const out = [];
    for (let i = 0; i + 1 < cuts.length; i++) {
      const a = cuts[i], b = cuts[i + 1];
      active = active.filter((k) => shown.get(k)[1] > a).concat(starting.get(a) || []);
      const covering = [...active].sort((p, q) => rank.get(p) - rank.get(q));
      const closing = covering.filter((k) => shown.get(k)[1] === b).reverse();
      out.push({start: a, end: b, text: chars.slice(a, b).join(""), covering, closing});
    }
    return out;
  }

  // Bidirectional controls (U+202E and the like) in a text or an id would reverse what follows them on the page:
  // they are shown as visible marks instead (the offsets are unchanged: this is applied to each piece as shown).
  const BIDI = /[\u061C\u200E\u200F\u202A-\u202E\u2066-\u2069]/g;
  function shown(text) {
    return String(text).replace(BIDI, (c) => "\u27E8U+" + c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0") + "\u27E9");
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  // A filter chip: a <label class="chip"> holding a checkbox and `parts`, marked "off" when unchecked;
  // data-<key>=value names it for the tests and the styles; onToggle(checked) runs on each change.
  function filterChip(key, value, checked, onToggle, ...parts) {
    const chip = el("label", "chip" + (checked ? "" : " off"));
    chip.dataset[key] = value;
    const box = el("input");
    box.type = "checkbox";
    box.checked = checked;
    box.addEventListener("change", () => onToggle(box.checked));
    chip.append(box, ...parts);
    return chip;
  }

  // Fill `box` with `text`, each span a <mark> in the colour class of its label and a tag with the label's name
  // after its last piece. opts: colour(label) -> class, name(label) -> shown name, flag(span) -> outline it,
  // about(span) -> what a hover shows.
  function render(box, text, spans, opts) {
    box.replaceChildren();
    for (const piece of pieces(text, spans)) {
      if (!piece.covering.length) { box.append(shown(piece.text)); continue; }
      const inner = spans[piece.covering[piece.covering.length - 1]];
      const mark = el("mark", "ent " + opts.colour(inner.label), shown(piece.text));
      if (piece.covering.length > 1) mark.classList.add("overlap", "o" + opts.colour(spans[piece.covering[0]].label).slice(1));
      if (opts.flag && piece.covering.some((k) => opts.flag(spans[k]))) mark.classList.add("flag");
      mark.dataset.label = inner.label;
      mark.dataset.about = piece.covering.map((k) => opts.about(spans[k])).join("\n");
      box.append(mark);
      for (const k of piece.closing) box.append(el("span", "tag " + opts.colour(spans[k].label), opts.name(spans[k].label)));
    }
  }

  function colourClasses(labels) {
    const index = new Map(labels.map((label, k) => [label, k]));
    return (label) => {
      if (!index.has(label)) index.set(label, index.size);
      return "c" + (index.get(label) % COLOURS);
    };
  }

  // One floating box shows a mark's data-about while the pointer (or a tap) is on it.
  function hoverTips(root) {
    const tip = el("div");
    tip.id = "tip";
    document.body.append(tip);
    root.addEventListener("mouseover", (ev) => {
      const mark = ev.target.closest && ev.target.closest("mark[data-about]");
      if (!mark) { tip.style.display = "none"; return; }
      tip.textContent = mark.dataset.about;
      tip.style.display = "block";
      const r = mark.getBoundingClientRect();
      tip.style.left = Math.max(4, Math.min(r.left, window.innerWidth - tip.offsetWidth - 4)) + "px";
      tip.style.top = (r.bottom + 6 + tip.offsetHeight > window.innerHeight ? r.top - tip.offsetHeight - 6 : r.bottom + 6) + "px";
    });
    root.addEventListener("mouseout", (ev) => {
      if (!ev.relatedTarget || !ev.relatedTarget.closest || !ev.relatedTarget.closest("mark[data-about]")) tip.style.display = "none";
    });
  }

  return {pieces, render, colourClasses, hoverTips, el, filterChip, shown};
})();
