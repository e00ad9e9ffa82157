// headstart's page: try a model on images, or teach a new one. Plain JS, no build step.
// Everything goes through the documented HTTP API (see /docs).
"use strict";

const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));
const TOKEN_KEY = "headstart-token";
const TEACH_SIDE = 320;   // teach images are scaled down to this short side before upload
const PARALLEL = 4;       // predictions in flight at once (the server batches them)

const state = { models: [], model: null, infos: {}, topK: 3, stream: null, job: null, live: false };

// ---- API -------------------------------------------------------------------------------
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers["Authorization"] = "Bearer " + token;
  const res = await fetch(path, Object.assign({}, options, { headers }));
  if (res.status === 401) {
    $("#token-form").hidden = false;
    $("#token-input").focus();
  }
  const isJson = (res.headers.get("content-type") || "").includes("application/json");
  const body = isJson ? await res.json() : await res.blob();
  if (!res.ok) throw new Error((body && body.error) || res.status + " " + res.statusText);
  return body;
}

function notice(message) {
  const el = $("#notice");
  el.textContent = message || "";
  el.hidden = !message;
}

// ---- model info --------------------------------------------------------------------------
async function refreshModel(preferId) {
  let info;
  try {
    info = await api("/v1/model" + (preferId ? "?model=" + encodeURIComponent(preferId) : ""));
  } catch (e) {
    state.model = null;
    $("#model-chip").textContent = "no model yet";
    $("#no-model").hidden = false;
    $("#drop").hidden = true;
    return;
  }
  state.models = info.models;
  state.model = info.id;
  state.infos[info.id] = info;
  $("#no-model").hidden = true;
  $("#drop").hidden = false;
  $("#model-chip").textContent = `${info.source === "taught" ? "taught model" : info.name} · ${info.labels.length} classes`;
  $("#model-chip").title = info.labels.join(", ");
  $("#model-labels").textContent = "Classes: " + info.labels.join(", ");
  $("#model-about").textContent = "Model: " + modelLine(info);
  $("#model-threshold").textContent = thresholdLine(info);
  $("#model-threshold").hidden = !thresholdLine(info);
  const sel = $("#model-select");
  sel.innerHTML = "";
  for (const id of info.models) {
    const opt = document.createElement("option");
    opt.value = id;
    opt.textContent = id === "served" ? "served model" : id.replace("taught-", "taught ");
    sel.appendChild(opt);
  }
  sel.value = info.id;
  sel.hidden = info.models.length < 2;
}

// Which model made a prediction: its name, backbone and when it was trained.
function modelLine(info) {
  const name = info.source === "taught" ? `taught model ${info.name}` : info.name;
  const when = info.created ? new Date(info.created).toLocaleString() : "";
  return [name, info.backbone, when && "trained " + when].filter(Boolean).join(" · ");
}

// A binary model's decision threshold and why it is what it is (GET /v1/model).
function thresholdLine(info) {
  if (info.threshold === undefined || info.threshold === null) return "";
  return `Decision threshold: ${info.labels[1]} when p(${info.labels[1]}) ≥ ${info.threshold.toFixed(2)}, ` +
         `otherwise ${info.labels[0]}; ${info.threshold_reason}.`;
}

async function modelInfo(id) {
  if (!state.infos[id]) {
    try {
      state.infos[id] = await api("/v1/model?model=" + encodeURIComponent(id));
    } catch (e) {
      return { id, name: id, labels: [] };  // a model replaced since: its id is all there is
    }
  }
  return state.infos[id];
}

// ---- Try -----------------------------------------------------------------------------------
function resultCard(src, name) {
  const card = document.createElement("div");
  card.className = "card pending";
  card.innerHTML = `<img alt=""><div class="body"><div class="file"></div><div class="label">predicting…</div>` +
                   `<div class="note" hidden></div><div class="bars"></div><div class="by small muted"></div></div>`;
  $("img", card).src = src;
  $(".file", card).textContent = name;
  $("#results").prepend(card);
  return card;
}

function showPrediction(card, p, info) {
  card.classList.remove("pending");
  card.dataset.model = info.id;
  $(".by", card).textContent = "by " + modelLine(info);
  const note = thresholdNote(p, info);
  $(".note", card).textContent = note;
  $(".note", card).hidden = !note;
  $(".label", card).innerHTML = "";
  $(".label", card).append(document.createTextNode(p.label));
  const pct = document.createElement("span");
  pct.className = "pct";
  pct.textContent = (100 * p.probability).toFixed(1) + "%";
  $(".label", card).append(pct);
  const bars = $(".bars", card);
  bars.innerHTML = "";  // the live card is shown again for every frame
  for (const t of p.top || []) {
    const row = document.createElement("div");
    row.className = "bar";
    row.innerHTML = `<div class="track"><div class="fill"></div><div class="name"></div></div><div class="v"></div>`;
    $(".fill", row).style.width = (100 * t.probability).toFixed(1) + "%";
    $(".name", row).textContent = t.label;
    $(".v", row).textContent = (100 * t.probability).toFixed(0) + "%";
    bars.append(row);
  }
}

// Where a tuned binary threshold decided the label, say so beside the probabilities.
function thresholdNote(p, info) {
  if (p.threshold === undefined || p.threshold === 0.5 || !info.labels || info.labels.length !== 2) return "";
  const pos = info.labels[1];
  const pPos = p.label === pos ? p.probability : 1 - p.probability;
  return `p(${pos}) ${pPos.toFixed(2)} ${pPos >= p.threshold ? "≥" : "<"} threshold ${p.threshold.toFixed(2)}`;
}

function showError(card, message) {
  card.classList.remove("pending");
  card.classList.add("error");
  $(".label", card).textContent = message;
}

async function predictOne(blob, name) {
  const card = resultCard(URL.createObjectURL(blob), name);
  const form = new FormData();
  form.append("images", blob, name);
  const q = `?top_k=${state.topK}` + (state.model ? "&model=" + encodeURIComponent(state.model) : "");
  try {
    const out = await api("/v1/predict" + q, { method: "POST", body: form });
    showPrediction(card, out.predictions[0], await modelInfo(out.model));
    addHeatButton(card, blob, name);
  } catch (e) {
    showError(card, e.message);
  }
}

// A heat map (Grad-CAM, POST /v1/explain) of where in the image the prediction comes from.
function addHeatButton(card, blob, name) {
  const btn = document.createElement("button");
  btn.type = "button";
  btn.className = "heat";
  btn.textContent = "show heat map";
  btn.addEventListener("click", async () => {
    btn.disabled = true;
    btn.textContent = "explaining…";
    const form = new FormData();
    form.append("image", blob, name);
    try {
      const png = await api("/v1/explain" + (state.model ? "?model=" + encodeURIComponent(state.model) : ""),
                            { method: "POST", body: form });
      const img = $("img", card);
      img.src = URL.createObjectURL(png);
      img.classList.add("heat");
      btn.remove();
    } catch (e) {
      btn.disabled = false;
      btn.textContent = "show heat map";
      notice(e.message);
    }
  });
  $(".body", card).append(btn);
}

async function predictFiles(files) {
  const queue = Array.from(files).filter(f => f.size !== undefined);
  const workers = Array.from({ length: PARALLEL }, async () => {
    while (queue.length) {
      const f = queue.shift();
      await predictOne(f, f.name || "image");
    }
  });
  await Promise.all(workers);
}

// ---- camera (offered only where the browser has one) -----------------------------------------
async function hasCamera() {
  if (!(navigator.mediaDevices && navigator.mediaDevices.getUserMedia && navigator.mediaDevices.enumerateDevices)) return false;
  try {
    return (await navigator.mediaDevices.enumerateDevices()).some(d => d.kind === "videoinput");
  } catch (e) {
    return false;
  }
}

async function offerCamera() {
  const yes = await hasCamera();
  $$(".camera-start").forEach(b => (b.hidden = !yes));
}

async function startCamera(video, panel) {
  try {
    if (!state.stream) {
      state.stream = await navigator.mediaDevices.getUserMedia({ video: { width: { ideal: 640 }, height: { ideal: 480 } } });
    }
    video.srcObject = state.stream;
    panel.hidden = false;
    if (panel.id === "teach-camera") $$(".snap").forEach(b => (b.hidden = false));
  } catch (e) {
    stopCamera();  // no stream: no panel, no live loop; images still work
    const why = e.name === "NotAllowedError" ? "permission was refused" :
                e.name === "NotFoundError" ? "no camera was found" : e.message;
    notice(`The camera is not available (${why}). You can still choose or drop images.`);
  }
}

// Live preview: predict the camera's current frame again and again while the box is ticked.
async function liveLoop() {
  const video = $("#video");
  while (state.live && state.stream) {
    const blob = await grabFrame(video);
    if (!blob || !state.live) break;
    const form = new FormData();
    form.append("images", blob, "camera.jpg");
    const q = `?top_k=${state.topK}` + (state.model ? "&model=" + encodeURIComponent(state.model) : "");
    try {
      const out = await api("/v1/predict" + q, { method: "POST", body: form });
      if (!state.live) break;
      showPrediction($("#live"), out.predictions[0], await modelInfo(out.model));
      $("#live").hidden = false;
    } catch (e) {
      notice(e.message);
      break;
    }
    await new Promise(r => setTimeout(r, 300));
  }
  setLive(false);
}

function setLive(on) {
  state.live = on && !!state.stream;
  $("#live-toggle").checked = state.live;
  if (!state.live) $("#live").hidden = true;
}

function stopCamera() {
  if (state.stream) state.stream.getTracks().forEach(t => t.stop());
  state.stream = null;
  setLive(false);
  $$(".camera").forEach(p => (p.hidden = true));
  $$(".snap").forEach(b => (b.hidden = true));
}

// The current frame as a JPEG blob (waits for the first frame after the camera starts).
async function grabFrame(video) {
  if (video.readyState < 2) {
    await Promise.race([new Promise(r => video.addEventListener("loadeddata", r, { once: true })),
                        new Promise(r => setTimeout(r, 5000))]);
  }
  if (!video.videoWidth) {
    notice("The camera gives no picture yet; try again in a moment.");
    return null;
  }
  const c = document.createElement("canvas");
  c.width = video.videoWidth;
  c.height = video.videoHeight;
  c.getContext("2d").drawImage(video, 0, 0);
  return new Promise(resolve => c.toBlob(resolve, "image/jpeg", 0.92));
}

// ---- Teach -------------------------------------------------------------------------------
let classCounter = 0;

function addClass(name) {
  const node = $("#class-template").content.firstElementChild.cloneNode(true);
  node.files = [];
  $(".name", node).value = name || "";
  $(".name", node).placeholder = `Class ${++classCounter}`;  // typing replaces it; left empty, it is the name
  $(".files", node).addEventListener("change", e => { addExamples(node, e.target.files); e.target.value = ""; });
  $(".remove", node).addEventListener("click", () => node.remove());
  $(".snap", node).hidden = $("#teach-camera").hidden;
  $(".snap", node).addEventListener("click", async () => {
    const blob = await grabFrame($("#video-teach"));
    if (blob) addExamples(node, [new File([blob], `camera-${Date.now()}.jpg`, { type: "image/jpeg" })]);
  });
  dropTarget(node, files => addExamples(node, files));
  $("#classes").append(node);
  return node;
}

function addExamples(node, files) {
  const thumbs = $(".thumbs", node);
  const hint = $(".hint", thumbs);
  if (hint) hint.remove();
  for (const f of files) {
    node.files.push(f);
    const img = document.createElement("img");
    img.src = URL.createObjectURL(f);
    img.title = f.name;
    thumbs.append(img);
  }
  $(".count", node).textContent = `${node.files.length} image${node.files.length === 1 ? "" : "s"}`;
}

// Scale an image down (short side TEACH_SIDE) so a thousand examples upload quickly.
async function shrink(file) {
  try {
    const bmp = await createImageBitmap(file);
    const s = Math.min(1, TEACH_SIDE / Math.min(bmp.width, bmp.height));
    if (s >= 1) return file;
    const c = document.createElement("canvas");
    c.width = Math.round(bmp.width * s);
    c.height = Math.round(bmp.height * s);
    c.getContext("2d").drawImage(bmp, 0, 0, c.width, c.height);
    return await new Promise(resolve => c.toBlob(resolve, "image/jpeg", 0.92));
  } catch (e) {
    return file;  // the server decides whether it is an image, and says so
  }
}

async function train() {
  notice("");
  const cards = $$(".class-card");
  const form = new FormData();
  let n = 0;
  for (const card of cards) {
    const label = $(".name", card).value.trim() || $(".name", card).placeholder;
    for (const f of card.files) {
      form.append("images", await shrink(f), f.name || "image.jpg");
      form.append("labels", label);
      n++;
    }
  }
  $("#train").disabled = true;
  $("#job").hidden = false;
  $("#job-done").hidden = true;
  setJob({ progress: 0, message: `uploading ${n} images…`, status: "running" });
  try {
    const job = await api("/v1/teach/jobs", { method: "POST", body: form });
    pollJob(job.id);
  } catch (e) {
    setJob({ progress: 0, message: e.message, status: "failed" });
    $("#train").disabled = false;
  }
}

function setJob(job) {
  $("#job-bar").style.width = (100 * (job.progress || 0)).toFixed(0) + "%";
  const status = $("#teach-status");
  status.className = "status " + (job.status || "");
  if (job.status === "failed") status.textContent = job.error || job.message;
  else if (job.status === "done") {
    const m = job.metrics || {};
    const acc = m.validation_accuracy !== undefined ? ` · validation accuracy ${(100 * m.validation_accuracy).toFixed(0)}% on ${m.validation_images} images` : "";
    status.textContent = `Done: ${job.message}${acc}.`;
    showTeachResult(m);
  } else status.textContent = job.message;
  if (job.status !== "done") $("#teach-result").hidden = true;
}

// Under the hood of the new model, on its validation images: accuracy per class, the
// confusion matrix and the training curves.
function showTeachResult(m) {
  const box = $("#teach-result");
  if (!m.labels) return;
  box.hidden = false;
  const perClass = $("#per-class tbody");
  perClass.innerHTML = "";
  for (const label of m.labels) {
    const c = m.per_class[label];
    const tr = document.createElement("tr");
    for (const v of [label, (100 * c.accuracy).toFixed(0) + "%", c.images]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.append(td);
    }
    perClass.append(tr);
  }
  const cm = $("#confusion");
  cm.innerHTML = "";
  const head = document.createElement("tr");
  head.append(cell("th", "true \\ predicted"));
  m.labels.forEach(l => head.append(cell("th", l)));
  cm.append(head);
  m.confusion_matrix.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.append(cell("th", m.labels[i]));
    row.forEach((v, j) => {
      const td = cell("td", v);
      if (v) td.className = i === j ? "hit" : "miss";
      tr.append(td);
    });
    cm.append(tr);
  });
  $("#curves").innerHTML = "";
  $("#curves").append(curve(m.history, "val_score", "validation accuracy", 1, m.kept_epoch),
                      curve(m.history, "loss", "training loss", null, m.kept_epoch),
                      curve(m.history, "val_loss", "validation loss", null, m.kept_epoch));
}

function cell(tag, text) {
  const el = document.createElement(tag);
  el.textContent = text;
  return el;
}

// One small line chart (SVG, no library): the metric per epoch, the kept epoch marked.
function curve(history, key, title, top, kept) {
  const NS = "http://www.w3.org/2000/svg";
  const W = 300, H = 150, P = 30;
  const pts = history.filter(r => r[key] !== undefined && r[key] !== null);
  const fig = document.createElement("figure");
  fig.className = "curve";
  fig.dataset.key = key;
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const hi = top || Math.max(...pts.map(r => r[key]), 1e-9);
  const n = Math.max(1, history.length - 1);
  const x = e => P + (W - P - 8) * (e - 1) / n;
  const y = v => H - P + 8 - (H - P) * v / hi;
  const line = document.createElementNS(NS, "polyline");
  line.setAttribute("points", pts.map(r => `${x(r.epoch).toFixed(1)},${y(r[key]).toFixed(1)}`).join(" "));
  line.setAttribute("class", "line");
  const axes = document.createElementNS(NS, "path");
  axes.setAttribute("d", `M${P},8 V${H - P + 8} H${W - 8}`);
  axes.setAttribute("class", "axes");
  svg.append(axes, line);
  if (kept) {
    const mark = document.createElementNS(NS, "line");
    mark.setAttribute("x1", x(kept)); mark.setAttribute("x2", x(kept));
    mark.setAttribute("y1", 8); mark.setAttribute("y2", H - P + 8);
    mark.setAttribute("class", "kept");
    svg.append(mark);
  }
  for (const [tx, ty, text, anchor] of [[P - 4, 14, hi.toFixed(2), "end"], [P - 4, H - P + 8, "0", "end"],
                                        [x(1), H - 8, "1", "middle"], [W - 8, H - 8, `epoch ${history.length}`, "end"]]) {
    const t = document.createElementNS(NS, "text");
    t.setAttribute("x", tx); t.setAttribute("y", ty); t.setAttribute("text-anchor", anchor);
    t.textContent = text;
    svg.append(t);
  }
  const cap = document.createElement("figcaption");
  cap.textContent = title + (kept ? ` (kept epoch ${kept})` : "");
  fig.append(svg, cap);
  return fig;
}

async function pollJob(id) {
  for (;;) {
    let job;
    try {
      job = await api("/v1/teach/jobs/" + id);
    } catch (e) {
      setJob({ status: "failed", message: e.message });
      break;
    }
    setJob(job);
    if (job.status === "done") {
      state.job = job;
      $("#job-done").hidden = false;
      await refreshModel(state.model === "served" ? "served" : job.model);
      break;
    }
    if (job.status === "failed") break;
    await new Promise(r => setTimeout(r, 500));
  }
  $("#train").disabled = false;
}

async function download(e) {
  e.preventDefault();
  if (!state.job) return;
  try {
    const blob = await api(state.job.download);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `headstart-model-${state.job.id}.zip`;
    a.click();
  } catch (err) {
    notice(err.message);
  }
}

// ---- wiring ------------------------------------------------------------------------------
function dropTarget(el, onFiles) {
  el.addEventListener("dragover", e => { e.preventDefault(); el.classList.add("over"); });
  el.addEventListener("dragleave", () => el.classList.remove("over"));
  el.addEventListener("drop", e => {
    e.preventDefault();
    el.classList.remove("over");
    onFiles(Array.from(e.dataTransfer.files).filter(f => !f.type || f.type.startsWith("image/")));
  });
}

function show(view) {
  $$(".tab").forEach(t => t.classList.toggle("active", t.dataset.view === view));
  $("#view-try").hidden = view !== "try";
  $("#view-teach").hidden = view !== "teach";
}

function init() {
  $$(".tab").forEach(t => t.addEventListener("click", () => show(t.dataset.view)));
  $$("[data-goto]").forEach(b => b.addEventListener("click", () => show(b.dataset.goto)));
  $("#file-input").addEventListener("change", e => { predictFiles(e.target.files); e.target.value = ""; });
  $("#model-select").addEventListener("change", e => refreshModel(e.target.value));
  dropTarget($("#drop"), predictFiles);
  offerCamera();
  if (navigator.mediaDevices && navigator.mediaDevices.addEventListener) {
    navigator.mediaDevices.addEventListener("devicechange", offerCamera);  // a camera plugged in later
  }
  $("#camera-try").addEventListener("click", () => startCamera($("#video"), $("#camera-panel")));
  $("#camera-teach").addEventListener("click", () => startCamera($("#video-teach"), $("#teach-camera")));
  $$(".camera-stop").forEach(b => b.addEventListener("click", stopCamera));
  $("#live-toggle").addEventListener("change", e => {
    setLive(e.target.checked);
    if (state.live) liveLoop();
  });
  $("#capture").addEventListener("click", async () => {
    const blob = await grabFrame($("#video"));
    if (blob) predictOne(blob, "camera " + new Date().toLocaleTimeString());
  });
  $("#add-class").addEventListener("click", () => addClass());
  $("#train").addEventListener("click", train);
  $("#try-new").addEventListener("click", async () => { await refreshModel(state.job.model); show("try"); });
  $("#download").addEventListener("click", download);
  $("#token-form").addEventListener("submit", e => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token-input").value);
    $("#token-form").hidden = true;
    refreshModel();
  });
  addClass();
  addClass();
  refreshModel();
}

init();
