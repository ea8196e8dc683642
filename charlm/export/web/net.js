// The forward step of a charlm model, one character at a time, from model.json and weights.bin
// (charlm/export/web/layers.py writes both). One step function per cell family; all weights are
// Float32Array views of the one buffer, read row by row (row-major), and every buffer a step
// needs is allocated once, when the network is built.
"use strict";

const CharlmNet = (() => {
  const MAX_SIZE = 1 << 20;  // no layer, embedding or vocabulary is wider than this

  class ModelError extends Error {}
  const fail = (message) => { throw new ModelError(message); };
  const isSize = (n) => Number.isInteger(n) && n > 0 && n <= MAX_SIZE;

  // One row of W (starting at o) times x, four sums at a time.
  function dot(w, o, x, n) {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, k = 0;
    for (; k + 3 < n; k += 4) {
      a0 += w[o + k] * x[k]; a1 += w[o + k + 1] * x[k + 1];
      a2 += w[o + k + 2] * x[k + 2]; a3 += w[o + k + 3] * x[k + 3];
    }
    for (; k < n; k++) a0 += w[o + k] * x[k];
    return (a0 + a1) + (a2 + a3);
  }
  const sigmoid = (a) => 1 / (1 + Math.exp(-a));
  const softplus = (a) => (a > 20 ? a : Math.log1p(Math.exp(a)));  // torch's threshold 20
  // erfc with fractional error below 1.2e-7 (Numerical Recipes' erfcc), for the exact GELU.
  function erf(x) {
    const z = Math.abs(x), t = 1 / (1 + 0.5 * z);
    const r = t * Math.exp(-z * z - 1.26551223 + t * (1.00002368 + t * (0.37409196 + t * (0.09678418 +
      t * (-0.18628806 + t * (0.27886807 + t * (-1.13520398 + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))));
    return x >= 0 ? 1 - r : r - 1;
  }
  const gelu = (a) => 0.5 * a * (1 + erf(a / Math.SQRT2));

  function layerNorm(x, w, b, eps, out) {
    const n = x.length;
    let mean = 0;
    for (let k = 0; k < n; k++) mean += x[k];
    mean /= n;
    let variance = 0;
    for (let k = 0; k < n; k++) { const d = x[k] - mean; variance += d * d; }
    const scale = 1 / Math.sqrt(variance / n + eps);
    for (let k = 0; k < n; k++) out[k] = (x[k] - mean) * scale * w[k] + b[k];
  }

  // h' = o tanh(c'), c' = f c + i g; Mogrifier rounds first gate x by Q h and h by R x.
  function lstm(L, T) {
    const n = L.input, H = L.hidden;
    const wih = T(L.w_ih, [4 * H, n]), whh = T(L.w_hh, [4 * H, H]), b = T(L.b, [4 * H]);
    const q = list(L.q).map((name) => T(name, [n, H])), r = list(L.r).map((name) => T(name, [H, n]));
    if (q.length < r.length || q.length > r.length + 1) fail(`a Mogrifier layer needs as many q as r matrices, or one more`);
    const h = new Float32Array(H), c = new Float32Array(H), g = new Float64Array(4 * H);
    const xm = new Float32Array(n), hm = new Float32Array(H);
    return {
      width: H,
      reset() { h.fill(0); c.fill(0); },
      step(x) {
        let xin = x, hin = h;
        if (q.length) {
          xm.set(x); hm.set(h); xin = xm; hin = hm;
          for (let round = 0; round < q.length + r.length; round++) {
            if (round % 2 === 0) { const Q = q[round >> 1]; for (let i = 0; i < n; i++) xm[i] *= 2 * sigmoid(dot(Q, i * H, hm, H)); }
            else { const R = r[round >> 1]; for (let j = 0; j < H; j++) hm[j] *= 2 * sigmoid(dot(R, j * n, xm, n)); }
          }
        }
        for (let j = 0; j < 4 * H; j++) g[j] = b[j] + dot(wih, j * n, xin, n) + dot(whh, j * H, hin, H);
        for (let k = 0; k < H; k++) {
          const cell = sigmoid(g[H + k]) * c[k] + sigmoid(g[k]) * Math.tanh(g[2 * H + k]);
          c[k] = cell;
          h[k] = sigmoid(g[3 * H + k]) * Math.tanh(cell);
        }
        return h;
      },
    };
  }

  // Rows r, u, n; h' = h + u (n - h). reset "after" (cuDNN): n = tanh(W_in x + b_n + r (W_hn h + b_hn));
  // "before" (Cho et al. 2014): n = tanh(W_in x + W_hn (r h) + b_n).
  function gru(L, T) {
    const n = L.input, H = L.hidden;
    const wih = T(L.w_ih, [3 * H, n]), whh = T(L.w_hh, [3 * H, H]), b = T(L.b, [3 * H]), bhn = T(L.b_hn, [H]);
    if (L.reset !== "after" && L.reset !== "before") fail(`a gru layer's reset must be "after" or "before", not ${JSON.stringify(L.reset)}`);
    const after = L.reset === "after";
    const h = new Float32Array(H), a = new Float64Array(2 * H), rh = new Float32Array(H), cand = new Float64Array(H);
    return {
      width: H,
      reset() { h.fill(0); },
      step(x) {
        for (let j = 0; j < 2 * H; j++) a[j] = b[j] + dot(wih, j * n, x, n) + dot(whh, j * H, h, H);
        if (after) {
          for (let k = 0, j = 2 * H; k < H; k++, j++) {
            const recurrent = bhn[k] + dot(whh, j * H, h, H);
            cand[k] = Math.tanh(b[j] + dot(wih, j * n, x, n) + sigmoid(a[k]) * recurrent);
          }
        } else {
          for (let k = 0; k < H; k++) rh[k] = sigmoid(a[k]) * h[k];
          for (let k = 0, j = 2 * H; k < H; k++, j++) cand[k] = Math.tanh(b[j] + dot(wih, j * n, x, n) + dot(whh, j * H, rh, H));
        }
        for (let k = 0; k < H; k++) h[k] += sigmoid(a[H + k]) * (cand[k] - h[k]);
        return h;
      },
    };
  }

  // h' = act(W_ih x + W_hh h + b), act tanh or relu.
  function rnn(L, T) {
    const n = L.input, H = L.hidden;
    const wih = T(L.w_ih, [H, n]), whh = T(L.w_hh, [H, H]), b = T(L.b, [H]);
    if (L.activation !== "tanh" && L.activation !== "relu") fail(`an rnn layer's activation must be tanh or relu`);
    const relu = L.activation === "relu";
    const h = new Float32Array(H), a = new Float64Array(H);
    return {
      width: H,
      reset() { h.fill(0); },
      step(x) {
        for (let j = 0; j < H; j++) a[j] = b[j] + dot(wih, j * n, x, n) + dot(whh, j * H, h, H);
        for (let j = 0; j < H; j++) h[j] = relu ? Math.max(a[j], 0) : Math.tanh(a[j]);
        return h;
      },
    };
  }

  // A residual block of minGRU or minLSTM (charlm/models/scan_stack.py):
  //   x += W_out (h = lerp(h, g(v), sigmoid(k)) of LayerNorm(x));  x += MLP(LayerNorm(x))
  function scan(L, T) {
    const W = L.input, U = L.hidden, M = 4 * W;
    const gates = { mingru: 2, minlstm: 3 }[L.gates] || fail(`a scan layer's gates must be mingru or minlstm`);
    const norm = (spec) => [T(spec.weight, [W]), T(spec.bias, [W]), eps(spec.eps)];
    const [n1w, n1b, n1e] = norm(L.cell_norm), [n2w, n2b, n2e] = norm(L.mlp_norm);
    const gw = T(L.cell.weight, [gates * U, W]), gb = T(L.cell.bias, [gates * U]);
    const ow = T(L.cell_out.weight, [W, U]), ob = T(L.cell_out.bias, [W]);
    const m1w = T(L.mlp_in.weight, [M, W]), m1b = T(L.mlp_in.bias, [M]);
    const m2w = T(L.mlp_out.weight, [W, M]), m2b = T(L.mlp_out.bias, [W]);
    const s = new Float32Array(W), t = new Float32Array(W), g = new Float64Array(gates * U);
    const h = new Float32Array(U), m = new Float32Array(M);
    return {
      width: W,
      reset() { h.fill(0); },
      step(x) {
        s.set(x);
        layerNorm(s, n1w, n1b, n1e, t);
        for (let j = 0; j < gates * U; j++) g[j] = gb[j] + dot(gw, j * W, t, W);
        for (let u = 0; u < U; u++) {
          // minLSTM: z = i / (f + i) = sigmoid(softplus(-f) - softplus(-i)) (models/cells/minlstm.py)
          const k = gates === 2 ? g[u] : softplus(-g[u]) - softplus(-g[U + u]), v = g[(gates - 1) * U + u];
          const candidate = v >= 0 ? v + 0.5 : sigmoid(v);
          h[u] += sigmoid(k) * (candidate - h[u]);
        }
        for (let j = 0; j < W; j++) s[j] += ob[j] + dot(ow, j * U, h, U);
        layerNorm(s, n2w, n2b, n2e, t);
        for (let j = 0; j < M; j++) m[j] = gelu(m1b[j] + dot(m1w, j * W, t, W));
        for (let j = 0; j < W; j++) s[j] += m2b[j] + dot(m2w, j * M, m, M);
        return s;
      },
    };
  }

  const FAMILIES = { lstm, gru, rnn, scan };
  const list = (value) => (value === undefined ? [] : Array.isArray(value) ? value : fail(`q and r must be lists of tensor names`));
  const eps = (value) => (typeof value === "number" && value > 0 && value < 1 ? value : fail(`a LayerNorm eps must be in (0, 1)`));

  // Each tensor model.json names, as a view of the buffer, checked against the shape the model needs.
  function tensorReader(meta, buffer) {
    const index = meta.tensors;
    if (!index || typeof index !== "object") fail(`model.json has no "tensors" object`);
    return (name, shape) => {
      const entry = typeof name === "string" && Object.prototype.hasOwnProperty.call(index, name) ? index[name] : null;
      if (!entry) fail(`model.json names no tensor ${JSON.stringify(name)}`);
      if (!Array.isArray(entry.shape) || entry.shape.length !== shape.length || entry.shape.some((d, i) => d !== shape[i])) {
        fail(`tensor ${name} has shape ${JSON.stringify(entry.shape)}; the model needs ${JSON.stringify(shape)}`);
      }
      const count = shape.reduce((p, d) => p * d, 1), offset = entry.offset;
      if (!Number.isInteger(offset) || offset < 0 || offset % 4 !== 0 || offset + 4 * count > buffer.byteLength) {
        fail(`tensor ${name}: offset ${offset} and ${count} floats do not lie inside weights.bin (${buffer.byteLength} bytes)`);
      }
      const view = new Float32Array(buffer, offset, count);
      for (let i = 0; i < count; i++) if (!Number.isFinite(view[i])) fail(`tensor ${name} holds values that are not finite`);
      return view;
    };
  }

  // The network of model.json over weights.bin: {vocabSize, reset(), step(id) -> logits}.
  function build(meta, buffer) {
    if (!meta || typeof meta !== "object" || meta.format !== 1) fail(`model.json is not a format 1 charlm web export; export the run again`);
    if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) fail(`this machine is big-endian; weights.bin is little-endian`);
    const expected = meta.weights && meta.weights.bytes;
    if (!Number.isInteger(expected) || expected !== buffer.byteLength) {
      fail(`weights.bin is ${buffer.byteLength} bytes but model.json says ${expected}: the two files come from different exports ` +
           `(or one was cut short); export the run again and use both files of one export`);
    }
    const m = meta.model || {}, V = m.vocab_size, E = m.embedding_dim;
    if (!isSize(V) || !isSize(E)) fail(`model.json's model needs vocab_size and embedding_dim, whole numbers from 1 to ${MAX_SIZE}`);
    if (!Array.isArray(meta.layers) || meta.layers.length === 0 || meta.layers.length > 1024) fail(`model.json needs a list of 1 to 1024 layers`);
    const T = tensorReader(meta, buffer);
    const embedding = T(meta.embedding, [V, E]);
    let width = E;
    const layers = meta.layers.map((L, i) => {
      if (!L || !Object.prototype.hasOwnProperty.call(FAMILIES, L.family)) fail(`layer ${i} has family ${JSON.stringify(L && L.family)}; this page runs ${Object.keys(FAMILIES).join(", ")}`);
      if (L.input !== width || !isSize(L.hidden)) fail(`layer ${i} reads ${L.input} features from a ${width}-wide input (hidden ${L.hidden})`);
      const layer = FAMILIES[L.family](L, T);
      width = layer.width;
      return layer;
    });
    let final = null;
    if (meta.final_norm) {
      const [w, b, e] = [T(meta.final_norm.weight, [width]), T(meta.final_norm.bias, [width]), eps(meta.final_norm.eps)];
      const out = new Float32Array(width);
      final = (x) => { layerNorm(x, w, b, e, out); return out; };
    }
    const decoder = meta.decoder || {};
    const dw = T(decoder.weight, [V, width]), db = T(decoder.bias, [V]);
    const logits = new Float64Array(V);
    return {
      vocabSize: V,
      reset() { for (const layer of layers) layer.reset(); },
      step(id) {
        let x = embedding.subarray(id * E, (id + 1) * E);
        for (const layer of layers) x = layer.step(x);
        if (final) x = final(x);
        for (let v = 0; v < V; v++) logits[v] = db[v] + dot(dw, v * width, x, width);
        return logits;
      },
    };
  }

  return { build, ModelError };
})();
