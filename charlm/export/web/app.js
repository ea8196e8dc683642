// charlm web export: a character model that writes in the browser. No framework, no network:
// the model description is inlined in this page (model.json beside it holds the same), the
// weights are weights.bin beside it (float32, little-endian), read by XHR, or picked by hand
// where the browser refuses to read files next to a page opened from disk.
"use strict";

const META = JSON.parse(document.getElementById("charlm-model").textContent);
const $ = (id) => document.getElementById(id);

// ---- the forward step -------------------------------------------------------------------------

// out = W x + b for a row-major (rows x cols) matrix held at W[offset ..]; sums in doubles.
function matvec(out, W, rows, cols, x, b) {
  for (let r = 0, o = 0; r < rows; r++, o += cols) {
    let s = b ? b[r] : 0;
    for (let k = 0; k < cols; k++) s += W[o + k] * x[k];
    out[r] = s;
  }
}

function addMatvec(out, W, rows, cols, x, b) {
  for (let r = 0, o = 0; r < rows; r++, o += cols) {
    let s = out[r] + b[r];
    for (let k = 0; k < cols; k++) s += W[o + k] * x[k];
    out[r] = s;
  }
}

const sigmoid = (v) => 1 / (1 + Math.exp(-v));

// One layer per cell family, with nn.LSTM / nn.GRU / nn.RNN's equations and gate orders.
const CELLS = {
  lstm(layer, x, st) {  // gates i, f, g, o
    const H = layer.hidden, g = layer.scratch;
    matvec(g, layer.w_ih, 4 * H, layer.input, x, layer.b_ih);
    addMatvec(g, layer.w_hh, 4 * H, H, st.h, layer.b_hh);
    for (let j = 0; j < H; j++) {
      const c = sigmoid(g[H + j]) * st.c[j] + sigmoid(g[j]) * Math.tanh(g[2 * H + j]);
      st.c[j] = c;
      st.h[j] = sigmoid(g[3 * H + j]) * Math.tanh(c);
    }
  },
  gru(layer, x, st) {  // gates r, z, n; n reads r * (W_hn h + b_hn), as cuDNN's GRU
    const H = layer.hidden, gi = layer.scratch, gh = layer.scratch2;
    matvec(gi, layer.w_ih, 3 * H, layer.input, x, layer.b_ih);
    matvec(gh, layer.w_hh, 3 * H, H, st.h, layer.b_hh);
    for (let j = 0; j < H; j++) {
      const r = sigmoid(gi[j] + gh[j]), z = sigmoid(gi[H + j] + gh[H + j]);
      const n = Math.tanh(gi[2 * H + j] + r * gh[2 * H + j]);
      st.h[j] = (1 - z) * n + z * st.h[j];
    }
  },
  rnn_tanh(layer, x, st) { CELLS.rnn(layer, x, st, Math.tanh); },
  rnn_relu(layer, x, st) { CELLS.rnn(layer, x, st, (v) => (v > 0 ? v : 0)); },
  rnn(layer, x, st, act) {
    const H = layer.hidden, g = layer.scratch;
    matvec(g, layer.w_ih, H, layer.input, x, layer.b_ih);
    addMatvec(g, layer.w_hh, H, H, st.h, layer.b_hh);
    for (let j = 0; j < H; j++) st.h[j] = act(g[j]);
  },
};

class Model {
  constructor(meta, buffer) {
    const floats = new Float32Array(buffer);
    const view = (t) => floats.subarray(t.offset, t.offset + t.size);
    this.vocab = meta.vocab;
    this.embedding = view(meta.embedding);
    this.width = meta.embedding.cols;
    this.decoder = view(meta.decoder.weight);
    this.decoderBias = view(meta.decoder.bias);
    this.layers = meta.layers.map((l) => ({
      cell: l.cell, input: l.input, hidden: l.hidden,
      w_ih: view(l.w_ih), w_hh: view(l.w_hh), b_ih: view(l.b_ih), b_hh: view(l.b_hh),
      scratch: new Float64Array(4 * l.hidden), scratch2: new Float64Array(3 * l.hidden),
    }));
    this.logits = new Float64Array(this.vocab.tokens.length);
    this.reset();
  }

  reset() {  // the state before the first character: zeros
    this.state = this.layers.map((l) => ({ h: new Float64Array(l.hidden), c: new Float64Array(l.hidden) }));
  }

  step(id) {  // read token `id`; this.logits then holds the scores of the next one
    let x = this.embedding.subarray(id * this.width, (id + 1) * this.width);
    this.layers.forEach((layer, i) => { CELLS[layer.cell](layer, x, this.state[i]); x = this.state[i].h; });
    matvec(this.logits, this.decoder, this.logits.length, x.length, x, this.decoderBias);
    return this.logits;
  }
}

// ---- text in and out, as charlm sample does it ------------------------------------------------

// mulberry32: a small seeded generator. Same seed, same text here; torch draws other numbers,
// so only greedy text equals `charlm sample`'s.
function rng(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function pick(logits, temperature, greedy, random, banned) {
  let best = -1;
  for (let i = 0; i < logits.length; i++) if (i !== banned && (best < 0 || logits[i] > logits[best])) best = i;
  if (greedy) return best;  // the first of equal scores, as torch.argmax
  let total = 0;
  const p = new Float64Array(logits.length);
  for (let i = 0; i < logits.length; i++) {
    p[i] = i === banned ? 0 : Math.exp((logits[i] - logits[best]) / temperature);
    total += p[i];
  }
  let u = random() * total;
  for (let i = 0; i < p.length; i++) { u -= p[i]; if (u < 0 && p[i] > 0) return i; }
  return best;
}

// The prompt's ids, read as the start of a line: an end-of-line first when the vocabulary has
// one (charlm's encode_prompt); an empty prompt is that end-of-line alone.
function encodePrompt(vocab, prompt) {
  const ids = new Map(vocab.tokens.map((t, i) => [t, i]));
  const readable = new Map(vocab.readable.map((t, i) => [t, i]));
  let units;
  if (vocab.unit === "byte") units = Array.from(new TextEncoder().encode(prompt), (b) => String.fromCharCode(b));
  else units = Array.from(prompt);
  const out = [], unknown = [];
  for (const u of units) {
    const id = vocab.unit === "byte" ? ids.get(u) : (readable.has(u) ? readable.get(u) : ids.get(u));
    if (id === undefined) unknown.push(u); else out.push(id);
  }
  const newline = ids.get("\n");
  if (unknown.length) throw new Error("the prompt has characters this model does not know: " + JSON.stringify([...new Set(unknown)].join("")));
  if (!out.length) {
    if (newline === undefined) throw new Error("this model's vocabulary has no end-of-line to start from; type a prompt");
    return [newline];
  }
  if (newline !== undefined && out[0] !== newline) out.unshift(newline);
  return out;
}

// ---- the page -----------------------------------------------------------------------------------

let model = null, running = null;

function describe() {
  const m = META.model;
  $("model").textContent = `${m.cell} ${m.layers}x${m.hidden} on ${META.vocab.corpus} · ${META.parameters.toLocaleString("en")} parameters · ` +
    `vocabulary ${META.vocab.tokens.length} (${META.vocab.unit}s) · step ${META.step.toLocaleString("en")}`;
}

function loaded(buffer) {
  if (buffer.byteLength !== META.bytes) {
    throw new Error(`weights.bin is ${buffer.byteLength.toLocaleString("en")} bytes; this page needs ${META.bytes.toLocaleString("en")}: export the model again`);
  }
  model = new Model(META, buffer);
  $("status").textContent = "ready";
  $("generate").disabled = false;
  document.body.dataset.ready = "1";
  const params = new URLSearchParams(location.search);
  if (params.get("run") === "1") generate();
}

function fail(message) {
  $("status").textContent = message;
  $("status").className = "error";
  document.body.dataset.error = message;
  document.body.dataset.done = "1";
}

function load() {
  const xhr = new XMLHttpRequest();  // XHR, not fetch: it can read beside a file:// page where allowed
  xhr.open("GET", "weights.bin");
  xhr.responseType = "arraybuffer";
  xhr.onload = () => {
    if (xhr.status === 200 || (xhr.status === 0 && xhr.response)) {
      try { loaded(xhr.response); } catch (e) { fail(e.message); }
    } else offerPicker(`weights.bin could not be read (HTTP ${xhr.status})`);
  };
  xhr.onerror = () => offerPicker("this browser does not let a page opened from disk read weights.bin beside it");
  xhr.send();
}

function offerPicker(why) {
  $("status").textContent = why + ": serve the folder (python -m http.server) or choose weights.bin here.";
  $("picker").hidden = false;
  document.body.dataset.picker = "1";
}

async function generate() {
  if (running) { running.stop = true; return; }
  const params = { prompt: $("prompt").value, length: Number($("length").value), temperature: Number($("temperature").value),
                   seed: Number($("seed").value), greedy: $("greedy").checked };
  if (!Number.isInteger(params.length) || params.length < 1 || params.length > 1e6) return fail("length must be a whole number from 1 to 1,000,000");
  if (!params.greedy && !(params.temperature > 0 && params.temperature <= 100)) return fail("temperature must be above 0 (at most 100)");
  if (!Number.isInteger(params.seed) || params.seed < 0) return fail("seed must be a whole number >= 0");
  let ids;
  try { ids = encodePrompt(META.vocab, params.prompt); } catch (e) { return fail(e.message); }
  $("status").className = "";
  document.body.dataset.done = "";
  const job = running = { stop: false };
  $("generate").textContent = "Stop";
  $("echo").textContent = params.prompt;
  const out = $("generated");
  out.textContent = "";
  model.reset();
  let logits;
  for (const id of ids) logits = model.step(id);
  const random = rng(params.seed), banned = META.vocab.unk_id;
  const decoder = new TextDecoder("utf-8");
  const started = performance.now();
  let made = 0, pending = "";
  while (made < params.length && !job.stop) {
    const id = pick(logits, params.temperature, params.greedy, random, banned);
    const token = META.vocab.tokens[id];
    pending += META.vocab.unit === "byte" && token.length === 1
      ? decoder.decode(new Uint8Array([token.charCodeAt(0)]), { stream: true }) : META.vocab.readable[id];
    logits = model.step(id);
    made++;
    if (made % 16 === 0 || made === params.length) {  // stream: show the text, let the page breathe
      out.append(pending);
      pending = "";
      const seconds = (performance.now() - started) / 1000;
      $("speed").textContent = `${made.toLocaleString("en")} characters, ${seconds > 0 ? Math.round(made / seconds).toLocaleString("en") : "-"} chars/s`;
      $("speed").dataset.charsPerSecond = seconds > 0 ? String(made / seconds) : "";
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
  }
  out.append(pending + decoder.decode());
  running = null;
  $("generate").textContent = "Generate";
  document.body.dataset.done = "1";
  const report = new URLSearchParams(location.search).get("report");
  if (report) fetch(report, { method: "POST", body: JSON.stringify({ text: out.textContent, chars: made, seconds: (performance.now() - started) / 1000 }) });
}

function init() {
  describe();
  const params = new URLSearchParams(location.search);
  for (const key of ["prompt", "length", "temperature", "seed"]) if (params.has(key)) $(key).value = params.get(key);
  if (params.has("greedy")) $("greedy").checked = params.get("greedy") === "1";
  $("generate").addEventListener("click", generate);
  $("weights").addEventListener("change", async (event) => {
    const file = event.target.files[0];
    if (file) { try { loaded(await file.arrayBuffer()); $("picker").hidden = true; } catch (e) { fail(e.message); } }
  });
  load();
}

init();
