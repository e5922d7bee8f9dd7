// slicebox_lab Viewer: the browser side (anywidget ESM, no imports, no network).
//
// The kernel sends every slice once as a binary buffer (int16/uint16/float32 modality values, or
// rgb8) in a custom message; this module keeps them per model and draws the shown one on a canvas
// through a window/level lookup table. Scrolling (wheel, slider, keys), window/level (drag, presets)
// and zoom never ask the kernel or the server for pixels.
//
// A segmentation (an app's SEG) arrives the same way: one uint8 label map (segment numbers, 0 none) per
// slice, keyed by the slice's image id and frame; it is blended over the slice in the segments' colours
// (toggle, opacity, choice of SEG in the toolbar).
//
// For tests and benchmarks the root element carries data-draw-count, data-drawn-index,
// data-drawn-at (performance.now() of the last draw), data-drawn-window, data-loaded, and
// data-overlay-pixels (pixels coloured by the overlay in the last draw) and data-overlay-id.

// model uid -> {generation, slices: Map(index -> slice), overlays: Map("image:frame" -> labels), overlayId, views}
const states = new Map();

function stateOf(model) {
  const uid = model.get("_uid");
  let state = states.get(uid);
  if (!state) {
    state = { generation: model.get("generation"), slices: new Map(), overlays: new Map(), overlayId: null, views: new Set() };
    states.set(uid, state);
  }
  return state;
}

function toArrayBuffer(buffer) {
  if (buffer instanceof ArrayBuffer) return buffer;
  // DataView / typed array: copy the bytes out, aligned for Int16Array/Float32Array
  return buffer.buffer.slice(buffer.byteOffset, buffer.byteOffset + buffer.byteLength);
}

function typed(dtype, bytes) {
  switch (dtype) {
    case "int16": return new Int16Array(bytes);
    case "uint16": return new Uint16Array(bytes);
    case "float32": return new Float32Array(bytes);
    default: return new Uint8Array(bytes);
  }
}

function onMessage(model, state, msg, buffers) {
  if (!msg || msg.generation !== model.get("generation")) return;
  if (state.generation !== msg.generation) {
    state.generation = msg.generation;
    state.slices.clear();
    state.overlays.clear();
  }
  if (msg.type === "slice") {
    state.slices.set(msg.index, {
      rows: msg.rows, columns: msg.columns, dtype: msg.dtype, invert: msg.invert,
      imageId: msg.image_id, frame: msg.frame, data: typed(msg.dtype, toArrayBuffer(buffers[0])),
    });
    for (const view of state.views) view.sliceArrived(msg.index);
  } else if (msg.type === "overlay") {
    if (msg.overlay !== model.get("overlay_series_id")) return;
    if (state.overlayId !== msg.overlay) {
      state.overlays.clear();
      state.overlayId = msg.overlay;
    }
    state.overlays.set(`${msg.image_id}:${msg.frame}`, new Uint8Array(toArrayBuffer(buffers[0])));
    for (const view of state.views) view.overlayArrived(msg.image_id, msg.frame);
  } else if (msg.type === "order") {
    const old = state.slices;
    state.slices = new Map();
    msg.order.forEach((from, to) => { if (old.has(from)) state.slices.set(to, old.get(from)); });
    for (const view of state.views) view.redraw();
  }
}

function initialize({ model }) {
  const state = stateOf(model);
  const handler = (msg, buffers) => onMessage(model, state, msg, buffers);
  const reset = () => {
    state.generation = model.get("generation");
    state.slices.clear();
    state.overlays.clear();
    for (const view of state.views) view.redraw();
  };
  const overlayChanged = () => {
    state.overlays.clear();
    state.overlayId = null;
    for (const view of state.views) view.redraw();
  };
  model.on("msg:custom", handler);
  model.on("change:generation", reset);
  model.on("change:overlay_series_id", overlayChanged);
  model.send({ type: "ready" });
  return () => {
    model.off("msg:custom", handler);
    model.off("change:generation", reset);
    model.off("change:overlay_series_id", overlayChanged);
    states.delete(model.get("_uid"));
  };
}

// A 65536-entry grey LUT for 16-bit data: built once per window change, then one lookup per pixel.
function buildLut(center, width, offset, invert) {
  const lut = new Uint32Array(65536);
  const low = center - width / 2;
  const scale = 255 / width;
  for (let i = 0; i < 65536; i++) {
    let v = (i - offset - low) * scale;
    v = v < 0 ? 0 : v > 255 ? 255 : v | 0;
    if (invert) v = 255 - v;
    lut[i] = 0xff000000 | (v << 16) | (v << 8) | v;
  }
  return lut;
}

function paint(slice, center, width, imageData) {
  const out = new Uint32Array(imageData.data.buffer);
  const src = slice.data;
  const n = slice.rows * slice.columns;
  if (slice.dtype === "int16" || slice.dtype === "uint16") {
    const offset = slice.dtype === "int16" ? 32768 : 0;
    const key = `${slice.dtype}:${center}:${width}:${slice.invert}`;
    if (paint.key !== key) {
      paint.lut = buildLut(center, width, offset, slice.invert);
      paint.key = key;
    }
    const lut = paint.lut;
    for (let i = 0; i < n; i++) out[i] = lut[src[i] + offset];
  } else if (slice.dtype === "float32") {
    const low = center - width / 2;
    const scale = 255 / width;
    for (let i = 0; i < n; i++) {
      let v = (src[i] - low) * scale;
      v = v < 0 ? 0 : v > 255 ? 255 : v | 0;
      if (slice.invert) v = 255 - v;
      out[i] = 0xff000000 | (v << 16) | (v << 8) | v;
    }
  } else {
    for (let i = 0, j = 0; i < n; i++, j += 3) {
      out[i] = 0xff000000 | (src[j + 2] << 16) | (src[j + 1] << 8) | src[j];
    }
  }
}

// "#rrggbb" of each segment number (index = segment number), from the model's overlay_segments
function segmentColors(segments) {
  const colors = [];
  for (const s of segments || []) {
    const hex = /^#([0-9a-f]{2})([0-9a-f]{2})([0-9a-f]{2})$/i.exec(s.color || "");
    if (hex && s.number > 0 && s.number < 256) colors[s.number] = hex.slice(1).map((h) => parseInt(h, 16));
  }
  return colors;
}

// Blend the label map over the painted slice: each labelled pixel moves towards its segment's colour.
function blend(imageData, labels, colors, alpha) {
  const px = imageData.data;
  let count = 0;
  for (let i = 0, j = 0; i < labels.length; i++, j += 4) {
    const color = labels[i] ? colors[labels[i]] : undefined;
    if (!color) continue;
    px[j] += (color[0] - px[j]) * alpha;
    px[j + 1] += (color[1] - px[j + 1]) * alpha;
    px[j + 2] += (color[2] - px[j + 2]) * alpha;
    count++;
  }
  return count;
}

function element(tag, className, parent, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  if (parent) parent.appendChild(node);
  return node;
}

function render({ model, el }) {
  const state = stateOf(model);
  const root = element("div", "sbx-viewer", el);
  root.tabIndex = 0;
  root.dataset.drawCount = "0";
  root.dataset.drawnIndex = "-1";

  const header = element("div", "sbx-header", root);
  const title = element("span", "sbx-title", header);
  const position = element("span", "sbx-position", header);
  const toolbar = element("div", "sbx-toolbar", root);
  const presetBar = element("span", "sbx-presets", toolbar);
  const windowLabel = element("span", "sbx-window", toolbar);
  const zoomBar = element("span", "sbx-zoom", toolbar);
  const zoomOut = element("button", "sbx-zoom-out", zoomBar, "−");
  const zoomFit = element("button", "sbx-zoom-fit", zoomBar, "fit");
  const zoomIn = element("button", "sbx-zoom-in", zoomBar, "+");
  zoomOut.title = "zoom out"; zoomIn.title = "zoom in"; zoomFit.title = "fit";
  // the segmentation over the series: which one, shown or not, how opaque, its segments' colours
  const overlayBar = element("span", "sbx-overlay", toolbar);
  const overlayToggleLabel = element("label", "sbx-overlay-toggle-label", overlayBar);
  const overlayToggle = element("input", "sbx-overlay-toggle", overlayToggleLabel);
  overlayToggle.type = "checkbox";
  element("span", "", overlayToggleLabel, "segmentation");
  const overlaySelect = element("select", "sbx-overlay-select", overlayBar);
  overlaySelect.title = "segmentation drawn over the images";
  const opacityLabel = element("label", "sbx-overlay-opacity-label", overlayBar, "opacity ");
  const overlayOpacity = element("input", "sbx-overlay-opacity", opacityLabel);
  overlayOpacity.type = "range";
  overlayOpacity.min = "0";
  overlayOpacity.max = "100";
  const overlayLegend = element("span", "sbx-overlay-legend", overlayBar);
  const overlayStatus = element("span", "sbx-overlay-status", overlayBar);

  const main = element("div", "sbx-main", root);
  const stage = element("div", "sbx-stage", main);
  const canvas = element("canvas", "sbx-canvas", stage);
  // what the stage says while it has no image: page text, not letters painted into the (pixelated) canvas
  const placeholder = element("div", "sbx-placeholder", stage);
  const side = element("div", "sbx-side", main);
  const filter = element("input", "sbx-filter", side);
  filter.placeholder = "filter attributes";
  const tableBox = element("div", "sbx-attributes", side);
  const table = element("table", "", tableBox);
  const tbody = element("tbody", "", table);

  const slider = element("input", "sbx-slider", root);
  slider.type = "range";
  slider.min = "0";
  const status = element("div", "sbx-status", root);

  const ctx = canvas.getContext("2d");
  let imageData = null;
  let frameRequested = false;
  let view = null;

  function setIndex(i) {
    const n = model.get("n_slices");
    if (n <= 0) return;
    const next = Math.max(0, Math.min(n - 1, i));
    if (next === model.get("index")) return;
    model.set("index", next);
    model.save_changes();
  }

  function setWindow(center, width) {
    model.set("window_center", center);
    model.set("window_width", Math.max(1, width));
  }

  function layout() {
    const rows = Number(canvas.height) || 1;
    const columns = Number(canvas.width) || 1;
    const box = stage.clientWidth || 512;
    const fit = Math.min(box / columns, 512 / rows, 4);
    const scale = fit * model.get("zoom");
    canvas.style.width = `${Math.round(columns * scale)}px`;
    canvas.style.height = `${Math.round(rows * scale)}px`;
  }

  function draw() {
    frameRequested = false;
    const index = model.get("index");
    const n = model.get("n_slices");
    const center = model.get("window_center");
    const width = model.get("window_width");
    position.textContent = n ? `slice ${index + 1} / ${n}` : "";
    windowLabel.textContent = `C ${Math.round(center)}  W ${Math.round(width)}`;
    slider.max = String(Math.max(0, n - 1));
    slider.value = String(index);
    root.dataset.loaded = String(state.slices.size);
    const slice = state.slices.get(index);
    canvas.hidden = !slice;
    placeholder.hidden = Boolean(slice);
    if (!slice) {
      placeholder.textContent = n ? `Loading slice ${index + 1} of ${n}…` : "Tick a series in the table to see its images here.";
      return;
    }
    if (canvas.width !== slice.columns || canvas.height !== slice.rows) {
      canvas.width = slice.columns;
      canvas.height = slice.rows;
      imageData = null;
    }
    if (!imageData) imageData = ctx.createImageData(slice.columns, slice.rows);
    paint(slice, center, width, imageData);
    let overlaid = 0;
    const labels = model.get("overlay_visible") ? state.overlays.get(`${slice.imageId}:${slice.frame}`) : undefined;
    if (labels && labels.length === slice.rows * slice.columns) {
      const alpha = Math.max(0, Math.min(1, model.get("overlay_opacity")));
      overlaid = blend(imageData, labels, segmentColors(model.get("overlay_segments")), alpha);
    }
    ctx.putImageData(imageData, 0, 0);
    root.dataset.overlayPixels = String(overlaid);
    root.dataset.overlayId = state.overlayId === null ? "" : String(state.overlayId);
    layout();
    root.dataset.drawCount = String(Number(root.dataset.drawCount) + 1);
    root.dataset.drawnIndex = String(index);
    root.dataset.drawnWindow = `${center},${width}`;
    root.dataset.drawnAt = String(performance.now());
  }

  function redraw() {
    if (frameRequested) return;
    frameRequested = true;
    requestAnimationFrame(draw);
  }

  function renderStatus() {
    const error = model.get("error");
    status.textContent = model.get("status");
    status.classList.toggle("sbx-error", Boolean(error));
    title.textContent = model.get("title");
  }

  function renderPresets() {
    presetBar.replaceChildren();
    const presets = model.get("presets") || {};
    for (const [name, [center, width]] of Object.entries(presets)) {
      const button = element("button", "sbx-preset", presetBar, name);
      button.dataset.preset = name;
      button.title = `center ${center}, width ${width}`;
      button.addEventListener("click", () => { setWindow(center, width); model.save_changes(); });
    }
  }

  function renderOverlay() {
    const overlays = model.get("overlays") || [];
    overlayBar.style.display = overlays.length ? "" : "none";
    const chosen = model.get("overlay_series_id");
    overlaySelect.replaceChildren();
    element("option", "", overlaySelect, "none").value = "";
    for (const o of overlays) {
      const option = element("option", "", overlaySelect, o.label);
      option.value = String(o.series_id);
    }
    overlaySelect.value = chosen === null ? "" : String(chosen);
    overlayToggle.checked = Boolean(model.get("overlay_visible"));
    overlayOpacity.value = String(Math.round(100 * model.get("overlay_opacity")));
    overlayLegend.replaceChildren();
    if (chosen !== null) {
      for (const s of model.get("overlay_segments") || []) {
        const chip = element("span", "sbx-overlay-segment", overlayLegend);
        const swatch = element("span", "sbx-overlay-swatch", chip);
        swatch.style.background = s.color;
        element("span", "", chip, s.label);
      }
    }
    overlayStatus.textContent = model.get("overlay_status") || "";
  }

  function renderAttributes() {
    const needle = filter.value.trim().toLowerCase();
    const rows = model.get("attributes") || [];
    const fragment = document.createDocumentFragment();
    for (const a of rows) {
      const text = `${a.tag} ${a.name} ${a.value}`.toLowerCase();
      if (needle && !text.includes(needle)) continue;
      const tr = element("tr", "", fragment);
      element("td", "sbx-tag", tr, a.tag);
      const name = element("td", "sbx-name", tr, a.name);
      name.style.paddingLeft = `${4 + 10 * (a.depth || 0)}px`;
      element("td", "sbx-vr", tr, a.vr);
      element("td", "sbx-value", tr, a.value);
    }
    tbody.replaceChildren(fragment);
  }

  // scrolling: wheel (ctrl/⌘ + wheel zooms), slider, keys
  canvas.addEventListener("wheel", (event) => {
    event.preventDefault();
    if (event.ctrlKey || event.metaKey) {
      model.set("zoom", Math.max(0.25, Math.min(8, model.get("zoom") * (event.deltaY < 0 ? 1.25 : 0.8))));
      model.save_changes();
      return;
    }
    setIndex(model.get("index") + (event.deltaY > 0 ? 1 : event.deltaY < 0 ? -1 : 0));
  }, { passive: false });
  slider.addEventListener("input", () => setIndex(Number(slider.value)));
  root.addEventListener("keydown", (event) => {
    const steps = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (event.target === filter) return;
    if (event.key in steps) setIndex(model.get("index") + steps[event.key]);
    else if (event.key === "Home") setIndex(0);
    else if (event.key === "End") setIndex(model.get("n_slices") - 1);
    else if (event.key === "+" || event.key === "=") model.set("zoom", Math.min(8, model.get("zoom") * 1.25));
    else if (event.key === "-") model.set("zoom", Math.max(0.25, model.get("zoom") * 0.8));
    else return;
    event.preventDefault();
    model.save_changes();
  });

  // window/level: drag horizontally for the width, vertically for the center
  let drag = null;
  canvas.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    root.focus({ preventScroll: true });
    drag = { x: event.clientX, y: event.clientY, center: model.get("window_center"), width: model.get("window_width"), sent: 0 };
    canvas.setPointerCapture(event.pointerId);
  });
  canvas.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const sensitivity = Math.max(drag.width, 10) / 256;
    setWindow(drag.center + (event.clientY - drag.y) * sensitivity, drag.width + (event.clientX - drag.x) * sensitivity);
    const now = performance.now();
    if (now - drag.sent > 200) { model.save_changes(); drag.sent = now; }
  });
  const endDrag = (event) => {
    if (!drag) return;
    drag = null;
    if (canvas.hasPointerCapture(event.pointerId)) canvas.releasePointerCapture(event.pointerId);
    model.save_changes();
  };
  canvas.addEventListener("pointerup", endDrag);
  canvas.addEventListener("pointercancel", endDrag);

  zoomIn.addEventListener("click", () => { model.set("zoom", Math.min(8, model.get("zoom") * 1.25)); model.save_changes(); });
  zoomOut.addEventListener("click", () => { model.set("zoom", Math.max(0.25, model.get("zoom") * 0.8)); model.save_changes(); });
  zoomFit.addEventListener("click", () => { model.set("zoom", 1); model.save_changes(); });
  filter.addEventListener("input", renderAttributes);
  overlayToggle.addEventListener("change", () => { model.set("overlay_visible", overlayToggle.checked); model.save_changes(); });
  overlayOpacity.addEventListener("input", () => { model.set("overlay_opacity", Number(overlayOpacity.value) / 100); model.save_changes(); });
  overlaySelect.addEventListener("change", () => {
    model.set("overlay_series_id", overlaySelect.value === "" ? null : Number(overlaySelect.value));
    model.save_changes();
  });

  const onDraw = () => redraw();
  model.on("change:index", onDraw);
  model.on("change:window_center", onDraw);
  model.on("change:window_width", onDraw);
  model.on("change:zoom", onDraw);
  model.on("change:n_slices", onDraw);
  model.on("change:status", renderStatus);
  model.on("change:error", renderStatus);
  model.on("change:title", renderStatus);
  model.on("change:presets", renderPresets);
  model.on("change:attributes", renderAttributes);
  for (const name of ["overlays", "overlay_series_id", "overlay_segments", "overlay_visible", "overlay_opacity", "overlay_status"]) {
    model.on(`change:${name}`, renderOverlay);
  }
  for (const name of ["overlay_series_id", "overlay_segments", "overlay_visible", "overlay_opacity"]) {
    model.on(`change:${name}`, onDraw);
  }

  view = {
    redraw,
    sliceArrived(index) {
      if (index === model.get("index")) redraw();
      else root.dataset.loaded = String(state.slices.size);
    },
    overlayArrived(imageId, frame) {
      const shown = state.slices.get(model.get("index"));
      if (shown && shown.imageId === imageId && shown.frame === frame) redraw();
    },
  };
  state.views.add(view);
  const resize = typeof ResizeObserver === "function" ? new ResizeObserver(() => layout()) : null;
  if (resize) resize.observe(stage);

  renderStatus();
  renderPresets();
  renderAttributes();
  renderOverlay();
  redraw();
  return () => {
    state.views.delete(view);
    if (resize) resize.disconnect();
  };
}

export default { initialize, render };
