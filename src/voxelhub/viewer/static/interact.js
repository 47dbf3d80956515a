// Mouse, wheel and keyboard input on viewports: scroll, window, zoom, pan, measure, cross-hairs.

const WHEEL_NOTCH = 100; // pixels of wheel delta per slice (one notch of a mouse wheel)
const MEASURE_TOOLS = new Set(["length", "rect", "ellipse"]);

/** What a drag with `button` does under `tool`: the right button always windows. */
function dragKind(tool, button) {
  if (button === 2) return "wl";
  if (button === 1) return "pan";
  return tool;
}

/** Wire `viewport`'s element to the app's tools. */
export function attachInput(app, viewport) {
  const root = viewport.root;
  let drag = null;
  let wheelRest = 0;

  root.addEventListener("contextmenu", (event) => event.preventDefault());

  root.addEventListener("pointerdown", (event) => {
    app.activate(viewport);
    if (!viewport.series || !viewport.shown) return;
    event.preventDefault();
    root.focus({ preventScroll: true });
    root.setPointerCapture(event.pointerId);
    const kind = dragKind(app.tool, event.button);
    const start = viewport.toImage(event.clientX, event.clientY);
    drag = {
      kind, x: event.clientX, y: event.clientY, start,
      ww: viewport.ww, wc: viewport.wc, index: viewport.index,
      zoom: viewport.zoom, panX: viewport.panX, panY: viewport.panY,
    };
    if (MEASURE_TOOLS.has(kind)) {
      viewport.draft = { kind, key: viewport.measurementKey(), a: start, b: { ...start } };
    } else if (kind === "crosshair") {
      app.crosshairAt(viewport, start);
    }
  });

  root.addEventListener("pointermove", (event) => {
    if (!drag) return;
    const dx = event.clientX - drag.x;
    const dy = event.clientY - drag.y;
    dragMove(app, viewport, drag, { dx, dy, event });
  });

  const finish = (event) => {
    if (!drag) return;
    if (root.hasPointerCapture(event.pointerId)) root.releasePointerCapture(event.pointerId);
    const m = viewport.draft;
    viewport.draft = null;
    drag = null;
    if (!m) return;
    if (Math.hypot(m.b.x - m.a.x, m.b.y - m.a.y) < 1) {
      viewport.drawAnnotations();
      return;
    }
    viewport.measurements.push(m);
    if (m.kind === "length") viewport.finishLength(m);
    else viewport.finishRegion(m);
    viewport.drawAnnotations();
  };
  root.addEventListener("pointerup", finish);
  root.addEventListener("pointercancel", finish);

  root.addEventListener(
    "wheel",
    (event) => {
      if (!viewport.series) return;
      event.preventDefault();
      app.activate(viewport);
      if (event.deltaMode !== 0) {
        scroll(app, viewport, () => viewport.step(Math.sign(event.deltaY)));
        return;
      }
      wheelRest += event.deltaY;
      const steps = Math.trunc(wheelRest / WHEEL_NOTCH);
      if (steps) {
        wheelRest -= steps * WHEEL_NOTCH;
        scroll(app, viewport, () => viewport.step(steps));
      }
    },
    { passive: false },
  );
}

/** Scroll `viewport` by `move`; the views linked to it follow when it reached another image. */
function scroll(app, viewport, move) {
  const before = viewport.index;
  move();
  if (viewport.index !== before) app.followScroll(viewport);
}

function dragMove(app, viewport, drag, { dx, dy, event }) {
  switch (drag.kind) {
    case "scroll": {
      const pixelsPerSlice = Math.max(2, viewport.root.clientHeight / Math.max(viewport.count, 1));
      scroll(app, viewport, () => viewport.setIndex(drag.index + Math.round(dy / pixelsPerSlice)));
      break;
    }
    case "wl": {
      // Sensitivity grows with the width, so both a brain and a lung window are reachable.
      const gain = Math.max(0.5, drag.ww / 300);
      app.applyWindow(viewport, drag.ww + dx * gain * 2, drag.wc + dy * gain);
      break;
    }
    case "zoom":
      viewport.zoom = Math.min(20, Math.max(0.1, drag.zoom * Math.exp(-dy / 200)));
      viewport.writeState();
      viewport.draw();
      break;
    case "pan":
      viewport.panX = drag.panX + dx;
      viewport.panY = drag.panY + dy;
      viewport.draw();
      break;
    case "crosshair":
      app.crosshairAt(viewport, viewport.toImage(event.clientX, event.clientY));
      break;
    default:
      if (viewport.draft) {
        viewport.draft.b = viewport.toImage(event.clientX, event.clientY);
        if (viewport.draft.kind === "length") viewport.finishLength(viewport.draft);
        viewport.drawAnnotations();
      }
  }
}

/** Keys act on the active viewport: arrows and pages scroll, digits pick window presets. */
export function attachKeys(app) {
  document.addEventListener("keydown", (event) => {
    const target = event.target;
    if (target instanceof HTMLInputElement || target instanceof HTMLSelectElement) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    const viewport = app.active;
    if (!viewport?.series) return;
    const actions = {
      ArrowUp: () => viewport.step(-1),
      ArrowLeft: () => viewport.step(-1),
      ArrowDown: () => viewport.step(1),
      ArrowRight: () => viewport.step(1),
      PageUp: () => viewport.step(-10),
      PageDown: () => viewport.step(10),
      Home: () => viewport.setIndex(0),
      End: () => viewport.setIndex(viewport.count - 1),
      i: () => app.toggleInvert(),
      r: () => app.reset(),
      " ": () => app.toggleCine(),
      Delete: () => app.clearMeasurements(),
      Escape: () => app.clearMeasurements(),
    };
    const preset = app.presetForKey(event.key);
    const action = actions[event.key] ?? (preset && (() => app.applyPreset(preset)));
    if (!action) return;
    event.preventDefault();
    scroll(app, viewport, action); // linked views follow only a change of image
  });
}
