// dermsweep web: classify in the browser with onnxruntime-web (WASM); fall back to the app's server.
// The ONNX model takes the decoded image at its own size and resizes it exactly as training did (PIL bilinear,
// baked into the graph), so this page only decodes pixels: no canvas resampling.
// The decoding rules are the server's (dermsweep/data/images.py, docs/web.md "What you can send"): the photo upright
// by its EXIF orientation, transparent pixels over white, at most info.max_pixels pixels.
"use strict";

const $ = (id) => document.getElementById(id);
const state = { info: null, mode: null, session: null, reason: "", file: null, busy: false };
window.dermsweep = state;  // read by the end-to-end test
const SHRINK_ABOVE = 4096 * 4096;  // pixels: larger photos are pre-shrunk on the canvas to bound the tab's memory

function pct(v) { return v == null ? "n/a" : (100 * v).toFixed(1) + " %"; }
function fmt(v) { return v == null ? "n/a" : Number(v).toFixed(3); }
// A score with its 95% interval when the run logged one (X_lo95, X_hi95), and the split it was measured on
function fmtScore(v, interval, images) {
  if (v == null) return "n/a";
  let text = fmt(v);
  if (interval) text += ` (95% interval ${fmt(interval[0])}–${fmt(interval[1])})`;
  if (images) text += ` on ${images} images`;
  return text;
}

// What the model was trained and scored on: read from its run by the server (never assumed here)
function describeData(data) {
  if (!data || !data.source) return "data its source run did not record";
  const n = data.images || {};
  const counts = ["train", "val", "test"].filter((k) => n[k] != null);
  const words = { train: "training", val: "validation", test: "test" };
  return data.description + (counts.length ? " (" + counts.map((k) => `${n[k]} ${words[k]}`).join(", ")
    + " images)" : "");
}

function showError(msg) {
  $("error").textContent = msg;
  $("error").hidden = !msg;
  document.body.dataset.state = msg ? "error" : document.body.dataset.state;
}

function setPath(mode, reason) {
  state.mode = mode;
  state.reason = reason || "";
  const el = $("path");
  el.dataset.path = mode;
  el.textContent = mode === "browser"
    ? "in this browser (onnxruntime-web, WebAssembly): the image never leaves this computer"
    : "on the server (fallback): the image is sent to this app's local server to be classified"
      + (reason ? " — " + reason : "");
}

function loadScript(src) {
  return new Promise((resolve, reject) => {
    const s = document.createElement("script");
    s.src = src;
    s.onload = resolve;
    s.onerror = () => reject(new Error("could not load " + src));
    document.head.appendChild(s);
  });
}

async function startBrowserRuntime(info) {
  if (!info.runtime) throw new Error("onnxruntime-web is not installed on the server (npm)");
  if (!info.onnx || info.onnx.error) throw new Error(info.onnx ? info.onnx.error : "no ONNX model");
  await loadScript("vendor/ort.wasm.min.js");
  // An absolute URL: a bare relative path fails. One thread: no COOP/COEP headers here.
  ort.env.wasm.wasmPaths = new URL("vendor/", location.href).href;
  ort.env.wasm.numThreads = 1;
  state.session = await ort.InferenceSession.create(info.onnx.url, { executionProviders: ["wasm"] });
}

async function init() {
  document.body.dataset.state = "loading";
  try {
    const r = await fetch("api/info");
    state.info = await r.json();
  } catch (e) {
    showError("Cannot reach the dermsweep web server: " + e.message);
    return;
  }
  const info = state.info;
  const name = info.model_name && info.version ? `${info.model_name} v${info.version}` : info.description;
  $("model-version").textContent = name + (info.aliases && info.aliases.length ? ` (@${info.aliases.join(", @")})` : "")
    + (info.run_id ? ` · run ${info.run_id.slice(0, 8)}` : "");
  const data = info.training_data || {};
  const intervals = info.intervals || {};
  const images = data.images || {};
  $("trained-on").textContent = data.source ? data.description : "data its source run did not record";
  $("model-data").textContent = describeData(data);
  if (!data.real_photos) {
    $("data-warning").textContent = data.source
      ? `This model was trained and scored on ${data.description}: its scores below say nothing about real skin `
        + "lesions, and its answers for a photo mean nothing medically."
      : "Where this model's training data came from is not recorded: treat its scores as unknown.";
    $("data-warning").hidden = false;
  }
  $("model-val").textContent = fmtScore(info.val_balanced_accuracy, intervals.val, images.val);
  $("model-test").textContent = fmtScore(info.test_balanced_accuracy, intervals.test, images.test);
  $("model-point").textContent = describePoint(info.operating_point, info.full_names);
  $("model-promoted").textContent = info.promoted_at
    ? new Date(info.promoted_at).toLocaleString() + " (" + info.promoted_at + ")"
    : "not promoted (loaded directly from " + info.uri + ")";
  const forced = new URLSearchParams(location.search).get("mode");
  if (forced === "server") {
    setPath("server", "requested with ?mode=server");
  } else {
    try {
      await startBrowserRuntime(info);
      setPath("browser");
    } catch (e) {
      console.warn("browser inference unavailable:", e);
      setPath("server", "browser inference unavailable: " + (e && e.message ? e.message : e));
    }
  }
  document.body.dataset.state = "ready";
}

async function decodePixels(file) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      premultiplyAlpha: "none", colorSpaceConversion: "none", imageOrientation: "from-image" });
  } catch (e) {
    throw new Error(`"${file.name}" is not an image this browser can read (choose a JPEG or PNG photo).`);
  }
  let w = bitmap.width, h = bitmap.height, note = "";
  const limit = state.info.max_pixels;
  if (limit && w * h > limit) {  // the server's rule: refused, with the same reason
    bitmap.close && bitmap.close();
    throw new Error(`"${file.name}" is too large (${w}x${h} = ${(w * h / 1e6).toFixed(0)} megapixels; `
      + `the limit is ${(limit / 1e6).toFixed(0)} megapixels): resize it and try again.`);
  }
  if (w * h > SHRINK_ABOVE) {  // very large photos: shrink first (approximate; the model then resizes exactly)
    const s = Math.sqrt(SHRINK_ABOVE / (w * h));
    w = Math.max(1, Math.floor(w * s)); h = Math.max(1, Math.floor(h * s));
    note = " (very large image: pre-shrunk in the browser, preprocessing approximate)";
  }
  const canvas = document.createElement("canvas");
  canvas.width = w; canvas.height = h;
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  ctx.fillStyle = "#ffffff";  // transparent pixels over white, as the server's decoder does
  ctx.fillRect(0, 0, w, h);
  ctx.drawImage(bitmap, 0, 0, w, h);
  bitmap.close && bitmap.close();
  const rgba = ctx.getImageData(0, 0, w, h).data;
  const rgb = new Float32Array(w * h * 3);
  for (let i = 0, j = 0; i < rgba.length; i += 4, j += 3) {
    rgb[j] = rgba[i]; rgb[j + 1] = rgba[i + 1]; rgb[j + 2] = rgba[i + 2];
  }
  return { rgb, w, h, note };
}

async function classifyInBrowser(file) {
  const { rgb, w, h, note } = await decodePixels(file);
  const t = performance.now();
  const input = new ort.Tensor("float32", rgb, [1, h, w, 3]);
  const out = await state.session.run({ [state.session.inputNames[0]]: input });
  const probs = Array.from(out[state.session.outputNames[0]].data);
  const names = state.info.class_names;
  const probabilities = Object.fromEntries(names.map((c, i) => [c, probs[i]]));
  return { probabilities, ms: performance.now() - t, note: `decoded ${w}×${h}${note}` };
}

async function classifyOnServer(file) {
  const t = performance.now();
  const r = await fetch("api/predict", { method: "POST", body: file,
    headers: { "Content-Type": "application/octet-stream" } });
  const body = await r.json().catch(() => ({ error: `server answered ${r.status}` }));
  if (!r.ok || body.error) throw new Error(body.error || `server answered ${r.status}`);
  return { probabilities: body.probabilities, ms: performance.now() - t, note: "round trip to the server" };
}

// The model's operating point (chosen on validation for a sensitivity): the same rule as dermsweep.diagnoses.
function describePoint(point, names) {
  if (!point) return "none (the most probable class)";
  const name = names[point.class_name] || point.class_name;
  const measured = point.val_sensitivity == null ? "" : `; on validation: sensitivity ${pct(point.val_sensitivity)}`
    + (point.val_specificity == null ? "" : `, specificity ${pct(point.val_specificity)}`);
  return `${name} (${point.class_name}) is flagged from P = ${pct(point.threshold)}`
    + ` (chosen for sensitivity ${pct(point.target_sensitivity)}${measured})`;
}

function decideAtPoint(point, probabilities, classNames) {
  if (!point || !(point.class_name in probabilities)) return null;
  const p = probabilities[point.class_name];
  const flagged = p >= point.threshold;
  const others = classNames.filter((c) => c !== point.class_name).sort((a, b) => probabilities[b] - probabilities[a]);
  return { flagged, p, decision: flagged ? point.class_name : others[0] };
}

function render(res) {
  const info = state.info;
  const verdict = decideAtPoint(info.operating_point, res.probabilities, info.class_names);
  $("flag").hidden = !verdict;
  if (verdict) {
    const name = info.full_names[info.operating_point.class_name] || info.operating_point.class_name;
    $("flag").dataset.flagged = String(verdict.flagged);
    $("flag").textContent = verdict.flagged
      ? `${name}: flagged (P = ${pct(verdict.p)} reaches the operating point's ${pct(info.operating_point.threshold)})`
      : `${name}: not flagged (P = ${pct(verdict.p)} is below ${pct(info.operating_point.threshold)})`;
  }
  const entries = info.class_names.map((c) => [c, res.probabilities[c]]).sort((a, b) => b[1] - a[1]);
  const [bestLabel, bestP] = entries[0];
  $("top-name").textContent = info.full_names[bestLabel] || bestLabel;
  $("top-label").textContent = bestLabel;
  $("top-prob").textContent = pct(bestP);
  const bars = $("bars");
  bars.replaceChildren();
  for (const [label, p] of entries) {
    const best = label === bestLabel ? " best" : "";
    const name = document.createElement("div");
    name.className = "bar-label" + best;
    name.textContent = `${info.full_names[label] || label} (${label})`;
    const track = document.createElement("div");
    track.className = "bar-track";
    const fill = document.createElement("div");
    fill.className = "bar-fill" + best;
    fill.style.width = (100 * p).toFixed(2) + "%";
    track.appendChild(fill);
    const value = document.createElement("div");
    value.className = "bar-value";
    value.textContent = pct(p);
    const row = [name, track, value];
    for (const el of row) { el.dataset.label = label; el.dataset.probability = String(p); }
    value.classList.add("prob");
    bars.append(...row);
  }
  $("timing").textContent = `${state.mode === "browser" ? "Classified in the browser" : "Classified on the server"}`
    + ` in ${res.ms.toFixed(0)} ms · ${res.note}`;
  $("result").hidden = false;
}

async function handleFile(file) {
  if (!file || state.busy) return;
  state.busy = true;
  state.file = file;
  state.result = null;
  document.body.dataset.state = "working";
  showError("");
  $("result").hidden = true;
  $("cam-figure").hidden = true;
  const preview = $("preview");
  if (preview.src) URL.revokeObjectURL(preview.src);
  preview.hidden = true;
  $("preview-caption").textContent = "";
  try {
    const res = state.mode === "browser" ? await classifyInBrowser(file) : await classifyOnServer(file);
    preview.src = URL.createObjectURL(file);
    preview.hidden = false;
    $("preview-caption").textContent = file.name;
    state.result = Object.assign({ mode: state.mode }, res);
    render(res);
    document.body.dataset.state = "done";
  } catch (e) {
    showError(e && e.message ? e.message : String(e));
  } finally {
    state.busy = false;
  }
}

async function explain() {
  if (!state.file) return;
  const btn = $("explain");
  btn.disabled = true;
  btn.textContent = "Computing Grad-CAM on the server…";
  try {
    const r = await fetch("api/gradcam", { method: "POST", body: state.file,
      headers: { "Content-Type": "application/octet-stream" } });
    const body = await r.json().catch(() => ({ error: `server answered ${r.status}` }));
    if (!r.ok || body.error) throw new Error(body.error || `server answered ${r.status}`);
    $("cam").src = body.overlay;
    if (body.scale && body.scale.length) {  // the overlay's own colours, low to high (CSSOM: allowed by the CSP)
      $("cam-scale").style.background = `linear-gradient(to right, ${body.scale.join(", ")})`;
    }
    $("cam-caption").textContent = `Grad-CAM for ${state.info.full_names[body.label] || body.label} `
      + `(layer ${body.layer}): the colour scale above goes from blue (no part in this class's score) to red `
      + "(the regions that raised it most)";
    $("cam-figure").hidden = false;
    document.body.dataset.cam = "done";
  } catch (e) {
    showError("Grad-CAM failed: " + (e && e.message ? e.message : e));
  } finally {
    btn.disabled = false;
    btn.textContent = "Explain with Grad-CAM";
  }
}

$("file").addEventListener("change", (e) => handleFile(e.target.files[0]));
$("explain").addEventListener("click", explain);
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.remove("over"); });
}
drop.addEventListener("drop", (e) => handleFile(e.dataTransfer.files[0]));
init();
