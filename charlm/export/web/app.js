// The page: load model.json and weights.bin (over HTTP, from disk where the browser allows it,
// or from a file picker), read the prompt as `charlm sample` does, and stream generated text
// with its speed. URL parameters fill the form and start a run: ?prompt=...&length=200&greedy=1&run=1
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const MAX_LENGTH = 1000000;
  const FLUSH_MS = 30;  // show the text and yield to the browser this often
  let net = null, vocab = null, run = null;

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
    document.body.dataset.done = "error";
  }

  function read(url, type) {
    return new Promise((resolve, reject) => {
      const request = new XMLHttpRequest();  // unlike fetch(), it reads file:// where a browser allows it
      request.open("GET", url);
      request.responseType = type;
      // Revalidate: a folder exported again must not be read half from the browser's cache.
      if (location.protocol !== "file:") request.setRequestHeader("Cache-Control", "no-cache");
      request.onload = () => (request.status === 200 || (request.status === 0 && request.response !== null)
        ? resolve(request.response) : reject(new Error(`${url}: HTTP ${request.status}`)));
      request.onerror = () => reject(new Error(`${url} could not be read`));
      request.send();
    });
  }

  async function load() {
    let text, buffer;
    try {
      [text, buffer] = await Promise.all([read("model.json", "text"), read("weights.bin", "arraybuffer")]);
    } catch (error) {
      const fromDisk = location.protocol === "file:";
      $("loader-message").textContent = fromDisk
        ? "This browser does not let a page opened from disk read the files beside it. Choose model.json and " +
          "weights.bin from this folder below, or serve the folder (python -m http.server -d FOLDER) and open " +
          "http://localhost:8000/."
        : `The model files could not be loaded (${error.message}). Choose model.json and weights.bin below.`;
      $("loader").hidden = false;
      $("status").textContent = fromDisk ? "Opened from disk: choose the model's two files." : "The model is not loaded.";
      document.body.dataset.ready = "needs-files";
      return;
    }
    start(text, buffer);
  }

  async function pickFiles(files) {
    const json = [...files].find((f) => f.name.endsWith(".json")), bin = [...files].find((f) => f.name.endsWith(".bin"));
    if (!json || !bin) return showError("Choose both files: model.json and weights.bin (hold Ctrl or Shift to pick two).");
    start(await json.text(), await bin.arrayBuffer());
  }

  function start(text, buffer) {
    $("error").hidden = true;
    let meta;
    try {
      meta = JSON.parse(text);
    } catch (error) {
      return showError(`model.json is not valid JSON (${error.message}); export the run again`);
    }
    try {
      net = CharlmNet.build(meta, buffer);
      vocab = makeVocabulary(meta.vocab, net.vocabSize);
    } catch (error) {
      if (!(error instanceof CharlmNet.ModelError)) throw error;
      return showError(error.message);
    }
    $("loader").hidden = true;
    document.title = `charlm: ${meta.title}`;
    $("title").textContent = `charlm model: ${meta.title}`;
    const r = meta.run || {}, m = meta.model;
    $("facts").textContent = `${m.cell} (${m.impl}), layers of ${m.layer_sizes.join(", ")} units, embedding ${m.embedding_dim}` +
      `${m.tied ? ", tied decoder" : ""}; vocabulary ${m.vocab_size} (${vocab.unit}); step ${r.step}, ${r.weights} weights`;
    $("status").textContent = "Ready.";
    $("generate").disabled = false;
    document.body.dataset.ready = "true";
    if (new URLSearchParams(location.search).get("run") === "1") generate();
  }

  // --- the vocabulary, the prompt and the text, as charlm/inference/trained.py reads and shows them

  function makeVocabulary(v, size) {
    const bad = (what) => { throw new CharlmNet.ModelError(`model.json's vocab: ${what}; export the run again`); };
    if (!v || !Array.isArray(v.tokens) || v.tokens.length !== size) bad(`needs ${size} tokens`);
    if (v.unit !== "char" && v.unit !== "byte") bad(`unit must be char or byte`);
    const pairs = (list) => new Map(Array.isArray(list) && list.every((p) => Array.isArray(p) && p.length === 2 &&
      typeof p[0] === "string" && typeof p[1] === "string") ? list : bad(`shown and typed must be [from, to] pairs`));
    const shown = pairs(v.shown), typed = pairs(v.typed);
    const special = (id) => (id === null || (Number.isInteger(id) && id >= 0 && id < size) ? id : bad(`newline and unk must be token ids or null`));
    const ids = new Map();
    const texts = v.tokens.map((token, i) => {
      if (typeof token !== "string" || token === "") bad(`token ${i} is not a non-empty string`);
      const chars = [...token];
      if (chars.length === 1) {
        const code = token.codePointAt(0);
        if (v.unit === "byte" && code > 255) bad(`a byte vocabulary holds characters beyond byte 255`);
        if (ids.has(code)) bad(`token ${i} is there twice`);
        ids.set(code, i);
      }
      return chars.map((c) => (shown.has(c) ? shown.get(c) : c)).join("");
    });
    return { unit: v.unit, tokens: v.tokens, ids, texts, shown, typed, newline: special(v.newline), unk: special(v.unk) };
  }

  function describe(code) {
    return vocab.unit === "char" ? JSON.stringify(String.fromCodePoint(code)) : `byte 0x${code.toString(16).padStart(2, "0")}`;
  }

  // encode_prompt: the prompt in the corpus's form, read after an end-of-line (an empty prompt is that alone).
  function encodePrompt(prompt) {
    const text = prompt ? [...prompt].map((c) => (vocab.typed.has(c) ? vocab.typed.get(c) : c)).join("") : "\n";
    const units = vocab.unit === "char" ? [...text].map((c) => c.codePointAt(0)) : [...new TextEncoder().encode(text)];
    const unknown = [...new Set(units.filter((u) => !vocab.ids.has(u)))].sort((a, b) => a - b);
    if (unknown.length) {
      if (!prompt) throw new Error("this model's vocabulary has no end-of-line to start from; give a prompt");
      const known = vocab.unit === "char" ? JSON.stringify([...vocab.ids.keys()].sort((a, b) => a - b).map((c) => vocab.texts[vocab.ids.get(c)]).join(""))
        : `${vocab.ids.size} byte values`;
      throw new Error(`the prompt contains ${vocab.unit === "char" ? "characters" : "bytes"} not in this model's vocabulary: ` +
        `${unknown.slice(0, 20).map(describe).join(", ")}; the vocabulary is ${known}`);
    }
    const ids = units.map((u) => vocab.ids.get(u));
    return text.startsWith("\n") || vocab.newline === null ? ids : [vocab.newline, ...ids];
  }

  // Generated ids become text in batches; a byte model's bytes are decoded as UTF-8 as they come
  // (a character may span several steps), as charlm sample streams them.
  function makeSink(node) {
    const decoder = new TextDecoder("utf-8"), bytes = new Uint8Array(4096);
    let pending = "", count = 0;
    const show = (text) => [...text].map((c) => (vocab.shown.has(c) ? vocab.shown.get(c) : c)).join("");
    return {
      push(id) {
        if (vocab.unit === "char" || [...vocab.tokens[id]].length !== 1) { pending += vocab.texts[id]; return; }
        bytes[count++] = vocab.tokens[id].charCodeAt(0);
        if (count === bytes.length) this.flush();
      },
      flush() {
        if (count) { pending += show(decoder.decode(bytes.subarray(0, count), { stream: true })); count = 0; }
        if (pending) { node.appendData(pending); pending = ""; }
      },
    };
  }

  // --- sampling

  // sfc32, seeded through splitmix32 from the seed's two 32-bit halves. Not torch's generator:
  // the same seed gives other text than `charlm sample --seed`; greedy text is the same.
  function makeRandom(seed) {
    const high = Math.floor(seed / 4294967296) >>> 0;
    let state = seed >>> 0;
    const mix = () => {
      state = (state + 0x9e3779b9) | 0;
      let z = state ^ high;
      z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
      z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
      return (z ^ (z >>> 15)) >>> 0;
    };
    let a = mix(), b = mix(), c = mix(), d = mix();
    for (let i = 0; i < 12; i++) next();
    function next() {  // sfc32 (Chris Doty-Humphrey's Small Fast Counting generator)
      const t0 = (a + b) | 0;
      a = b ^ (b >>> 9);
      b = (c + (c << 3)) | 0;
      c = (c << 21) | (c >>> 11);
      d = (d + 1) | 0;
      const t = (t0 + d) | 0;
      c = (c + t) | 0;
      return (t >>> 0) / 4294967296;
    }
    return next;
  }

  function pick(logits, temperature, random, weights) {
    const V = logits.length, banned = vocab.unk;
    if (random === null) {  // argmax; the first of equal maxima, as torch.argmax
      let best = -1, top = -Infinity;
      for (let i = 0; i < V; i++) if (i !== banned && logits[i] > top) { top = logits[i]; best = i; }
      return best;
    }
    let top = -Infinity;
    for (let i = 0; i < V; i++) if (i !== banned) top = Math.max(top, logits[i] / temperature);
    let total = 0;
    for (let i = 0; i < V; i++) { weights[i] = i === banned ? 0 : Math.exp(logits[i] / temperature - top); total += weights[i]; }
    let u = random() * total, last = -1;
    for (let i = 0; i < V; i++) {
      if (weights[i] > 0) { last = i; u -= weights[i]; if (u < 0) return i; }
    }
    return last;
  }

  // --- the form and the run

  function options() {
    const length = Number($("length").value), seedText = $("seed").value.trim();
    let temperature = Number($("temperature").value);
    const greedy = $("greedy").checked || temperature === 0;
    if (!Number.isInteger(length) || length < 0 || length > MAX_LENGTH) throw new Error(`Length must be a whole number from 0 to ${MAX_LENGTH}`);
    if (!greedy && !(temperature >= 1e-4 && temperature <= 1e4)) throw new Error("Temperature must be from 0.0001 to 10000 (0: greedy)");
    let seed = null;
    if (!greedy) {
      seed = seedText === "" ? crypto.getRandomValues(new Uint32Array(1))[0] : Number(seedText);
      if (!Number.isSafeInteger(seed) || seed < 0) throw new Error("Seed must be a whole number of at least 0, or empty for a random one");
    }
    return { length, greedy, temperature, seed };
  }

  const channel = new MessageChannel();
  let wake = null;
  channel.port1.onmessage = () => { const w = wake; wake = null; if (w) w(); };
  // A message, not setTimeout: nested timeouts are clamped to 4 ms, which would cost speed.
  const yieldToBrowser = () => new Promise((resolve) => { wake = resolve; channel.port2.postMessage(0); });

  function showSpeed(count, ms, finished) {
    const perSecond = ms > 0 ? count / (ms / 1000) : 0;
    $("speed").dataset.charsPerSecond = perSecond.toFixed(1);
    $("speed").dataset.chars = String(count);
    $("speed").textContent = `${count.toLocaleString("en")} characters in ${(ms / 1000).toFixed(2)} s: ` +
      `${Math.round(perSecond).toLocaleString("en")} characters per second${finished ? "" : "\u2026"}`;
  }

  async function generate() {
    if (run || !net) return;
    $("error").hidden = true;
    let opts, ids;
    const prompt = $("prompt").value;
    try {
      opts = options();
      ids = encodePrompt(prompt);
    } catch (error) {
      return showError(error.message);
    }
    run = { stopped: false };
    document.body.dataset.done = "false";
    $("generate").disabled = true;
    $("stop").disabled = false;
    $("prompt-echo").textContent = prompt;
    const node = document.createTextNode("");
    $("output").replaceChildren(node);
    $("status").textContent = opts.greedy ? "Generating (greedy)\u2026" : `Generating (temperature ${opts.temperature}, seed ${opts.seed})\u2026`;
    const sink = makeSink(node), random = opts.greedy ? null : makeRandom(opts.seed), weights = new Float64Array(net.vocabSize);
    const started = performance.now();
    net.reset();
    let logits = null;
    for (const id of ids) logits = net.step(id);
    let made = 0, shown = performance.now();
    while (made < opts.length && !run.stopped) {
      const id = pick(logits, opts.temperature, random, weights);
      sink.push(id);
      made += 1;
      if (made < opts.length) logits = net.step(id);
      if (performance.now() - shown > FLUSH_MS) {
        sink.flush();
        showSpeed(made, performance.now() - started, false);
        await yieldToBrowser();
        shown = performance.now();
      }
    }
    sink.flush();
    const ms = performance.now() - started;
    showSpeed(made, ms, true);
    $("status").textContent = `${run.stopped ? "Stopped" : "Done"}${opts.greedy ? " (greedy)" : `, seed ${opts.seed}`}.`;
    $("seed").dataset.used = opts.seed === null ? "" : String(opts.seed);
    run = null;
    $("generate").disabled = false;
    $("stop").disabled = true;
    document.body.dataset.done = "true";
    // ?report=1: post the figures back to the server (benchmarks/web_speed.py measures in real time;
    // headless Chromium's --virtual-time-budget stops the page's clock while a script runs).
    if (new URLSearchParams(location.search).get("report") === "1") {
      navigator.sendBeacon("report", JSON.stringify({ chars: made, ms, seed: opts.seed, text: $("output").textContent }));
    }
  }

  function fillFromAddress() {
    const q = new URLSearchParams(location.search);
    for (const name of ["prompt", "length", "temperature", "seed"]) if (q.has(name)) $(name).value = q.get(name);
    if (q.has("greedy")) $("greedy").checked = ["1", "true", "yes"].includes(q.get("greedy"));
  }

  $("controls").addEventListener("submit", (event) => { event.preventDefault(); generate(); });
  $("stop").addEventListener("click", () => { if (run) run.stopped = true; });
  $("files").addEventListener("change", (event) => pickFiles(event.target.files));
  fillFromAddress();
  load();
})();
