"use strict";
// charlm viz: draws the text from the JSON header and the deflated binary blob that
// charlm/viz/page.py wrote into this page. No network, no libraries.
(function () {
  const meta = JSON.parse(document.getElementById("charlm-meta").textContent);
  const $ = (id) => document.getElementById(id);
  const n = meta.n;
  const SURPRISAL_MAX = meta.surprisal_max;  // bits at the top of the colour scale
  const state = { mode: "surprisal", group: 0, unit: 0, caret: -1, property: null };
  let data = null;
  const spans = [];

  async function inflate(base64) {
    const text = atob(base64.trim());
    const bytes = new Uint8Array(text.length);
    for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
    const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }

  function sections(bytes) {
    // Little-endian, as page.py writes them (and as every browser's typed arrays read).
    const types = { float32: Float32Array, uint16: Uint16Array, uint32: Uint32Array, int8: Int8Array, uint8: Uint8Array };
    const out = {};
    for (const [name, [dtype, offset, count]] of Object.entries(meta.sections)) {
      out[name] = new types[dtype](bytes.buffer, bytes.byteOffset + offset, count);
    }
    return out;
  }

  // ---- colours -------------------------------------------------------------------------
  function mix(a, b, t) { return a.map((v, k) => Math.round(v + (b[k] - v) * t)); }
  const WHITE = [255, 255, 255], YELLOW = [255, 214, 110], RED = [215, 48, 39], BLUE = [33, 102, 172];
  function heat(bits) {
    const t = Math.min(Math.max(bits / SURPRISAL_MAX, 0), 1);
    const c = t < 0.5 ? mix(WHITE, YELLOW, t * 2) : mix(YELLOW, RED, (t - 0.5) * 2);
    return `rgb(${c.join(",")})`;
  }
  function diverging(v) {
    const t = Math.min(Math.abs(v), 1);
    return `rgb(${mix(WHITE, v < 0 ? RED : BLUE, t).join(",")})`;
  }

  // ---- hidden units ----------------------------------------------------------------------
  const groupOf = (layer, kind) => meta.groups.findIndex((g) => g.layer === layer && g.kind === kind);
  function unitIndex() { return meta.groups[state.group].first + state.unit; }
  function activation(u, i) { return data.act[u * n + i] * data.step[u]; }
  function colourDivisor(u) { return Math.max(1, data.step[u] * meta.levels); }  // the unit's largest |value|
  function unitName(u) {
    const g = meta.groups.find((g) => u >= g.first && u < g.first + g.units);
    return `layer ${g.layer + 1} ${meta.kind_names[g.kind]} unit ${u - g.first}`;
  }
  function shortName(u) {
    const g = meta.groups.find((g) => u >= g.first && u < g.first + g.units);
    return `layer ${g.layer + 1} ${g.kind === "cell" ? "tanh(c)" : "h"} ${u - g.first}`;
  }
  const signed = (r, digits) => (r >= 0 ? "+" : "\u2212") + Math.abs(r).toFixed(digits);

  // ---- the text --------------------------------------------------------------------------
  function render() {
    const box = $("text");
    const fragment = document.createDocumentFragment();
    let line = null, bits = 0, count = 0;
    for (let i = 0; i < n; i++) {
      if (line === null) { line = document.createElement("div"); line.className = "line"; bits = 0; count = 0; }
      const label = meta.labels[i];
      const span = document.createElement("span");
      span.className = "ch";
      span.dataset.i = i;
      if (label === "\n") { span.textContent = "\u21b5"; span.classList.add("eol"); }
      else if (label === "") { span.textContent = "\u00b7"; span.classList.add("pending"); }
      else span.textContent = label;
      spans.push(span);
      line.appendChild(span);
      if (data.predicted[i]) { bits += data.surprisal[i]; count += 1; }
      if (label === "\n" || i === n - 1) {
        const sum = document.createElement("span");
        sum.className = "linesum";
        sum.textContent = `${bits.toFixed(1)} bits`;
        sum.title = `surprisal summed over the ${count} predicted characters of this line`;
        line.prepend(sum);
        fragment.appendChild(line);
        line = null;
      }
    }
    box.appendChild(fragment);
  }

  function paint() {
    const neuron = state.mode === "neuron";
    const u = unitIndex(), divisor = colourDivisor(u);
    for (let i = 0; i < n; i++) {
      const span = spans[i];
      if (neuron) {
        const v = activation(u, i);
        span.style.backgroundColor = diverging(v / divisor);
        span.style.color = Math.abs(v / divisor) > 0.6 ? "#fff" : "";
        span.dataset.a = v.toFixed(4);
      } else {
        span.style.backgroundColor = data.predicted[i] ? heat(data.surprisal[i]) : "";
        span.style.color = data.predicted[i] && data.surprisal[i] > 0.8 * SURPRISAL_MAX ? "#fff" : "";
        delete span.dataset.a;
      }
    }
    drawLegend();
    if (state.caret >= 0) showPanel(state.caret);
  }

  function drawLegend() {
    const legend = $("legend");
    if (state.mode === "neuron") {
      const u = unitIndex(), divisor = colourDivisor(u);
      const scaled = divisor > 1 ? ` (values divided by ${divisor.toPrecision(3)}, this unit's largest |value|)` : "";
      legend.innerHTML = `<span>activation${scaled}</span><span class="scale" style="background:linear-gradient(to right, rgb(${RED}), rgb(${WHITE}), rgb(${BLUE}))"></span>` +
        `<div class="ticks"><span>\u22121</span><span>0</span><span>+1</span></div>`;
      legend.dataset.mode = "neuron";
    } else {
      const ticks = [0, 0.25, 0.5, 0.75, 1].map((t) => `<span>${(t * SURPRISAL_MAX).toFixed(0)}${t === 1 ? "+" : ""}</span>`).join("");
      legend.innerHTML = `<span>surprisal, bits (mean ${meta.bpc.toFixed(4)} bpc)</span><span class="scale" style="background:linear-gradient(to right, rgb(${WHITE}), rgb(${YELLOW}), rgb(${RED}))"></span>` +
        `<div class="ticks">${ticks}</div>`;
      legend.dataset.mode = "surprisal";
    }
  }

  // ---- the panel of guesses ------------------------------------------------------------------
  function token(label) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = label;
    return span;
  }

  function showPanel(i) {
    const panel = $("panel");
    panel.replaceChildren();
    panel.dataset.i = i;
    const title = document.createElement("h2");
    title.append(`Character ${i}: `, token(meta.guess_labels[meta.ids[i]]));
    panel.appendChild(title);
    const facts = document.createElement("p");
    if (!data.predicted[i]) {
      facts.textContent = "No guess: the model read this character first, with no text before it.";
      panel.appendChild(facts);
    } else {
      const p = data.target_prob[i];
      facts.innerHTML = `p(this character) = <b class="target-prob">${(p * 100).toFixed(2)}%</b>, surprisal <b class="surprisal">${data.surprisal[i].toFixed(3)}</b> bits`;
      panel.appendChild(facts);
      const table = document.createElement("table");
      let listed = false;
      for (let k = 0; k < meta.k; k++) {
        const id = data.top_ids[i * meta.k + k], prob = data.top_probs[i * meta.k + k];
        const row = table.insertRow();
        row.className = "guess" + (id === meta.ids[i] ? " right" : "");
        listed = listed || id === meta.ids[i];
        row.dataset.rank = k + 1;
        row.dataset.id = id;
        row.insertCell().textContent = `${k + 1}.`;
        row.insertCell().appendChild(token(meta.guess_labels[id]));
        const cell = row.insertCell();
        cell.className = "prob";
        cell.textContent = `${(prob * 100).toFixed(2)}%`;
        const bar = row.insertCell();
        bar.className = "bar";
        bar.appendChild(document.createElement("span")).style.width = `${(prob * 100).toFixed(1)}%`;
      }
      panel.appendChild(table);
      if (!listed) {
        const note = document.createElement("p");
        note.className = "hint";
        note.textContent = "The right character is not among the top guesses.";
        panel.appendChild(note);
      }
    }
    const props = document.createElement("p");
    props.className = "props hint";
    props.textContent = meta.properties.filter((p) => p.name !== "surprisal")
      .map((p) => `${p.name} ${data.props[meta.properties.indexOf(p) * n + i]}`).join(" \u00b7 ");
    panel.appendChild(props);
    if (state.mode === "neuron") {
      const u = unitIndex();
      const act = document.createElement("p");
      act.innerHTML = `${unitName(u)}: <b class="activation">${signed(activation(u, i), 4)}</b>`;
      panel.appendChild(act);
    }
  }

  // ---- moving around -----------------------------------------------------------------------
  function setCaret(i) {
    if (state.caret >= 0) spans[state.caret].classList.remove("caret");
    state.caret = Math.min(Math.max(i, 0), n - 1);
    spans[state.caret].classList.add("caret");
    spans[state.caret].scrollIntoView({ block: "nearest" });
    showPanel(state.caret);
    saveHash();
  }
  const lineStart = (i) => { while (i > 0 && meta.labels[i - 1] !== "\n") i--; return i; };
  function lineEnd(i) { while (i < n - 1 && meta.labels[i] !== "\n") i++; return i; }
  function onKey(event) {
    const at = state.caret < 0 ? 0 : state.caret;
    const start = lineStart(at), column = at - start;
    const moves = {
      ArrowRight: () => at + 1, ArrowLeft: () => at - 1, Home: () => start, End: () => lineEnd(at),
      ArrowDown: () => { const next = lineEnd(at) + 1; return next >= n ? at : Math.min(next + column, lineEnd(next)); },
      ArrowUp: () => { if (start === 0) return at; const previous = lineStart(start - 1); return Math.min(previous + column, start - 1); },
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    setCaret(state.caret < 0 ? 0 : moves[event.key]());
  }
  const indexOf = (target) => (target.classList && target.classList.contains("ch") ? Number(target.dataset.i) : -1);

  // ---- the unit picker and the ranking ------------------------------------------------------
  function setUnit(group, unit) {
    state.group = group;
    state.unit = Math.min(Math.max(Number.isFinite(unit) ? Math.trunc(unit) : 0, 0), meta.groups[group].units - 1);
    const g = meta.groups[group];
    $("layer").value = String(g.layer);
    fillKinds(g.layer);
    $("kind").value = g.kind;
    for (const id of ["unit", "unit-slider"]) { $(id).max = g.units - 1; $(id).value = state.unit; }
    const u = unitIndex();
    const rs = meta.properties.map((p, k) => `${p.name} ${signed(data.corr[k * meta.units + u], 2)}`).join(", ");
    $("unit-facts").textContent = `${unitName(u)}; r with ${rs}`;
    paint();
    saveHash();
  }
  function fillKinds(layer) {
    const kinds = meta.groups.filter((g) => g.layer === layer).map((g) => g.kind);
    $("kind").replaceChildren(...kinds.map((k) => new Option(meta.kind_names[k], k)));
    $("kind-label").hidden = kinds.length < 2;
  }
  function ranked(k) {
    const row = data.corr.subarray(k * meta.units, (k + 1) * meta.units);
    return Array.from(row.keys()).sort((a, b) => Math.abs(row[b]) - Math.abs(row[a]) || a - b).slice(0, meta.ranked);
  }
  function showRanking() {
    const k = meta.properties.findIndex((p) => p.name === state.property);
    const property = meta.properties[k];
    $("property-note").textContent = property.present ? property.description : `${property.description}: not in this text`;
    const list = $("ranked");
    list.replaceChildren();
    saveHash();
    if (!property.present) return;
    for (const u of ranked(k)) {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.dataset.unit = u;
      const name = document.createElement("span"), r = document.createElement("span");
      name.textContent = shortName(u);
      name.title = unitName(u);
      r.className = "r";
      r.textContent = `r = ${signed(data.corr[k * meta.units + u], 3)}`;
      button.append(name, r);
      button.addEventListener("click", () => {
        const g = meta.groups.findIndex((g) => u >= g.first && u < g.first + g.units);
        state.mode = "neuron";
        document.querySelector('input[name=mode][value=neuron]').checked = true;
        setUnit(g, u - meta.groups[g].first);
      });
      item.appendChild(button);
      list.appendChild(item);
    }
  }

  // ---- the address: #char=100&mode=neuron&layer=2&kind=cell&unit=37&property=quote -------------
  function saveHash() {
    if (data === null) return;
    const g = meta.groups[state.group];
    const params = new URLSearchParams({ mode: state.mode, layer: g.layer + 1, kind: g.kind, unit: state.unit, property: state.property });
    if (state.caret >= 0) params.set("char", state.caret);
    try { history.replaceState(null, "", "#" + params); } catch (e) { /* some file:// pages refuse; the view still works */ }
  }
  function readHash() {
    const params = new URLSearchParams(location.hash.slice(1));
    const layer = Number(params.get("layer") || 1) - 1, kind = params.get("kind") || "hidden";
    const group = groupOf(layer, kind) >= 0 ? groupOf(layer, kind) : groupOf(layer, "hidden");
    if (params.has("property") && meta.properties.some((p) => p.name === params.get("property"))) state.property = params.get("property");
    return { group, unit: Number(params.get("unit") || 0), mode: params.get("mode"), char: params.get("char"), explicit: params.has("layer") || params.has("unit") };
  }

  async function start() {
    data = sections(await inflate(document.getElementById("charlm-blob").textContent));
    render();
    const layers = [...new Set(meta.groups.map((g) => g.layer))];
    $("layer").replaceChildren(...layers.map((l) => new Option(`${l + 1}`, String(l))));
    $("property").replaceChildren(...meta.properties.map((p) => new Option(p.present ? p.name : `${p.name} (not in this text)`, p.name)));
    const wanted = readHash();
    if (state.property === null) state.property = (meta.properties.find((p) => p.present && p.name !== "surprisal") || meta.properties[0]).name;
    $("property").value = state.property;
    showRanking();
    let group = wanted.group >= 0 ? wanted.group : 0, unit = wanted.unit;
    if (!wanted.explicit) {  // open the neuron view on the unit that tracks the chosen property best
      const k = meta.properties.findIndex((p) => p.name === state.property);
      const best = ranked(k)[0];
      group = meta.groups.findIndex((g) => best >= g.first && best < g.first + g.units);
      unit = best - meta.groups[group].first;
    }
    state.mode = wanted.mode === "neuron" ? "neuron" : "surprisal";
    document.querySelector(`input[name=mode][value=${state.mode}]`).checked = true;
    setUnit(group, unit);
    if (wanted.char !== null && wanted.char !== "" && Number.isInteger(Number(wanted.char))) setCaret(Number(wanted.char));

    const box = $("text");
    box.addEventListener("mouseover", (e) => { const i = indexOf(e.target); if (i >= 0) showPanel(i); });
    box.addEventListener("mouseleave", () => { if (state.caret >= 0) showPanel(state.caret); });
    box.addEventListener("click", (e) => { const i = indexOf(e.target); if (i >= 0) { setCaret(i); box.focus({ preventScroll: true }); } });
    box.addEventListener("keydown", onKey);
    for (const radio of document.querySelectorAll("input[name=mode]")) radio.addEventListener("change", () => { state.mode = radio.value; paint(); saveHash(); });
    $("layer").addEventListener("change", () => {
      const layer = Number($("layer").value);
      setUnit(groupOf(layer, "hidden"), state.unit);
    });
    $("kind").addEventListener("change", () => setUnit(groupOf(meta.groups[state.group].layer, $("kind").value), state.unit));
    $("unit").addEventListener("input", () => { if ($("unit").value !== "") setUnit(state.group, Number($("unit").value)); });
    $("unit-slider").addEventListener("input", () => setUnit(state.group, Number($("unit-slider").value)));
    $("property").addEventListener("change", () => { state.property = $("property").value; showRanking(); });
    document.body.dataset.ready = "true";
  }

  start().catch((error) => {
    $("text").textContent = `This page could not be drawn: ${error}. It needs a current browser (DecompressionStream).`;
    document.body.dataset.ready = "error";
  });
})();
