"use strict";
// The page talks to the server's own HTTP routes only: /v1/models, /v1/methods,
// /v1/demo-images, /v2/models/NAME/infer (explanations), /v1/models/NAME:maximize (frames as
// NDJSON) and /v1/models/NAME:embed (a projection).
const $ = (id) => document.getElementById(id);
const state = { models: [], image: null, demos: [], maximize: null };

function headers() {
  const token = $("token").value.trim();
  const base = { "Content-Type": "application/json" };
  return token ? { ...base, Authorization: "Bearer " + token } : base;
}

async function api(path, body) {
  const response = await fetch(path, body === undefined ? { headers: headers() } :
    { method: "POST", headers: headers(), body: JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
  if (!response.ok) throw new Error((data && data.error) || ("HTTP " + response.status));
  return data;
}

function say(id, text, isError) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", Boolean(isError));
}

function model() { return state.models.find((m) => m.name === $("model").value); }

function readFile(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(String(reader.result).split(",", 2)[1]);
    reader.onerror = () => reject(reader.error);
    reader.readAsDataURL(file);
  });
}

function choose(b64, name) {
  state.image = b64;
  const preview = $("preview");
  preview.src = "data:image/png;base64," + b64;
  preview.alt = "The chosen image: " + name;
  preview.hidden = false;
  say("explain-status", "Image: " + name);
}

// --- tabs ---------------------------------------------------------------------------------
function selectTab(tab) {
  document.querySelectorAll("[role=tab]").forEach((other) => {
    const on = other === tab;
    other.setAttribute("aria-selected", String(on));
    other.tabIndex = on ? 0 : -1;
    $(other.getAttribute("aria-controls")).hidden = !on;
  });
  tab.focus();
}
document.querySelectorAll("[role=tab]").forEach((tab, index, all) => {
  tab.addEventListener("click", () => selectTab(tab));
  tab.addEventListener("keydown", (event) => {
    const step = { ArrowRight: 1, ArrowLeft: -1 }[event.key];
    if (step) selectTab(all[(index + step + all.length) % all.length]);
  });
});

// --- explain ------------------------------------------------------------------------------
function renderMethods(methods) {
  const box = $("methods");
  methods.forEach((method, index) => {
    const label = document.createElement("label");
    const input = document.createElement("input");
    input.type = "checkbox";
    input.value = method.name;
    input.name = "method";
    input.checked = method.name === "gradcam";
    label.append(input, " " + method.name);
    label.title = method.description;
    box.append(label);
  });
}

function renderDemos() {
  const box = $("demos");
  state.demos.forEach((demo) => {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.demo = demo.name;
    button.setAttribute("aria-label", "Demo image: " + demo.name);
    const img = document.createElement("img");
    img.src = "data:image/png;base64," + demo.png;
    img.alt = "";
    button.append(img);
    button.addEventListener("click", () => choose(demo.png, demo.name));
    box.append(button);
  });
}

function card(method, outputs) {
  const figure = document.createElement("figure");
  figure.className = "result";
  figure.dataset.method = method;
  const byName = Object.fromEntries(outputs.map((o) => [o.name, o.data]));
  const img = document.createElement("img");
  img.src = "data:image/png;base64," + byName.overlay[0];
  img.alt = method + " heatmap over the image for class " + byName.labels[0];
  const caption = document.createElement("figcaption");
  const rows = byName.labels.map((label, i) =>
    `${label} (class ${byName.targets[i]}): score ${byName.scores[i].toFixed(3)}, ` +
    `p ${byName.probabilities[i].toFixed(3)}`);
  caption.innerHTML = "<strong></strong><br><span class=predicted></span>";
  caption.querySelector("strong").textContent = method;
  caption.querySelector(".predicted").textContent = rows.join("; ");
  caption.querySelector(".predicted").dataset.label = byName.labels[0];
  figure.append(img, caption);
  return figure;
}

async function explainAll() {
  const methods = [...document.querySelectorAll("input[name=method]:checked")].map((i) => i.value);
  if (!state.image) return say("explain-status", "Choose an image first.", true);
  if (!methods.length) return say("explain-status", "Choose at least one method.", true);
  const parameters = {};
  const targets = $("targets").value.trim();
  if (targets) parameters.targets = targets;
  $("results").replaceChildren();
  say("explain-status", "Explaining with " + methods.join(", ") + "…");
  const name = $("model").value;
  const outcomes = await Promise.allSettled(methods.map(async (method) => {
    const answer = await api(`/v2/models/${encodeURIComponent(name)}/infer`, {
      parameters: { ...parameters, method },
      inputs: [{ name: "image_bytes", datatype: "BYTES", shape: [1], data: [state.image] }],
      outputs: ["targets", "labels", "scores", "probabilities", "overlay"].map((n) => ({ name: n })),
    });
    $("results").append(card(method, answer.outputs));
  }));
  const failed = outcomes.map((o, i) => [o, methods[i]]).filter(([o]) => o.status === "rejected");
  say("explain-status", failed.length ? failed.map(([o, m]) => `${m}: ${o.reason.message}`).join("; ")
    : "Done: " + methods.length + " explanation(s).", failed.length > 0);
}

// --- maximize -----------------------------------------------------------------------------
async function maximize() {
  const controller = new AbortController();
  state.maximize = controller;
  $("max-start").disabled = true;
  $("max-stop").disabled = false;
  say("max-status", "Optimising…");
  try {
    const response = await fetch(`/v1/models/${encodeURIComponent($("model").value)}:maximize`, {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ objective: "OBJECTIVE_CLASS", classes: [Number($("max-class").value)],
        steps: Number($("max-steps").value), frameEvery: Number($("max-every").value) }),
    });
    if (!response.ok) throw new Error((await response.json()).error);
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffered = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffered += decoder.decode(value, { stream: true });
      const lines = buffered.split("\n");
      buffered = lines.pop();
      lines.filter(Boolean).forEach((line) => showFrame(JSON.parse(line)));
    }
    say("max-status", "Finished.");
  } catch (error) {
    say("max-status", error.name === "AbortError" ? "Stopped." : error.message, error.name !== "AbortError");
  } finally {
    $("max-start").disabled = false;
    $("max-stop").disabled = true;
    state.maximize = null;
  }
}

function showFrame(frame) {
  if (frame.error) throw new Error(frame.error);
  const img = $("max-frame");
  if (frame.png) { img.src = "data:image/png;base64," + frame.png; img.hidden = false; }
  $("max-caption").textContent = `step ${frame.step}: objective ${frame.objective_value.toFixed(3)}, ` +
    `predicted class ${frame.predicted_class} (p ${frame.probability.toFixed(3)})`;
  $("max-frame").dataset.step = frame.step;
}

// --- embed --------------------------------------------------------------------------------
async function embed() {
  const items = [];
  for (const file of $("embed-files").files) items.push({ id: file.name, b64: await readFile(file) });
  if ($("embed-demos").checked) state.demos.forEach((d) => items.push({ id: d.name, b64: d.png }));
  if (items.length < 2) return say("embed-status", "Choose at least two images.", true);
  say("embed-status", "Embedding " + items.length + " images…");
  try {
    const answer = await api(`/v1/models/${encodeURIComponent($("model").value)}:embed`, {
      items, config: { projection: $("embed-projection").value, projectionDims: 2 } });
    plot(answer);
    say("embed-status", "Projected " + answer.ids.length + " images.");
  } catch (error) { say("embed-status", error.message, true); }
}

function plot(answer) {
  const svg = $("embed-plot");
  svg.replaceChildren();
  const points = answer.projection || [];
  const xs = points.map((p) => p[0]), ys = points.map((p) => p[1]);
  const scale = (v, lo, hi) => 30 + 340 * (hi > lo ? (v - lo) / (hi - lo) : 0.5);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const ns = "http://www.w3.org/2000/svg";
  points.forEach((p, i) => {
    const g = document.createElementNS(ns, "g");
    const dot = document.createElementNS(ns, "circle");
    dot.setAttribute("cx", scale(p[0], x0, x1));
    dot.setAttribute("cy", 400 - scale(p[1], y0, y1));
    dot.setAttribute("r", 5);
    dot.setAttribute("fill", `hsl(${(answer.predicted[i] * 47) % 360} 60% 45%)`);
    const title = document.createElementNS(ns, "title");
    title.textContent = answer.ids[i] + " (predicted class " + answer.predicted[i] + ")";
    const text = document.createElementNS(ns, "text");
    text.setAttribute("x", scale(p[0], x0, x1) + 7);
    text.setAttribute("y", 404 - scale(p[1], y0, y1));
    text.setAttribute("font-size", "11");
    text.textContent = answer.ids[i];
    dot.append(title);
    g.append(dot, text);
    svg.append(g);
  });
}

// --- start --------------------------------------------------------------------------------
function fillClasses() {
  const m = model();
  $("max-class").replaceChildren(...(m ? m.labels : []).map((label, i) => new Option(`${i}: ${label}`, i)));
  $("model-help").textContent = m ? `${m.arch}, ${m.num_classes} classes, input ${m.input_size.join("×")}` : "";
}

async function start() {
  const drop = $("drop");
  ["dragenter", "dragover"].forEach((e) => drop.addEventListener(e, (ev) => { ev.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((e) => drop.addEventListener(e, () => drop.classList.remove("over")));
  drop.addEventListener("drop", async (event) => {
    event.preventDefault();
    const file = event.dataTransfer.files[0];
    if (file) choose(await readFile(file), file.name);
  });
  drop.addEventListener("keydown", (event) => { if (event.key === "Enter") $("file").click(); });
  $("file").addEventListener("change", async () => {
    const file = $("file").files[0];
    if (file) choose(await readFile(file), file.name);
  });
  $("explain").addEventListener("click", explainAll);
  $("max-start").addEventListener("click", maximize);
  $("max-stop").addEventListener("click", () => state.maximize && state.maximize.abort());
  $("embed-run").addEventListener("click", embed);
  $("model").addEventListener("change", fillClasses);
  $("token").addEventListener("change", () => { if (!document.body.dataset.ready) load(); });
  await load();
}

async function load() {
  try {
    const [models, methods, demos] = await Promise.all([api("/v1/models"), api("/v1/methods"), api("/v1/demo-images")]);
    state.models = models.models;
    state.demos = demos.images;
    $("model").replaceChildren(...state.models.map((m) => new Option(m.name, m.name)));
    $("methods").querySelectorAll("label").forEach((l) => l.remove());
    $("demos").replaceChildren();
    renderMethods(methods.methods);
    renderDemos();
    fillClasses();
    document.body.dataset.ready = "true";
  } catch (error) {
    say("explain-status", "Could not reach the server: " + error.message + " (an access token may be needed)", true);
  }
}
start();
