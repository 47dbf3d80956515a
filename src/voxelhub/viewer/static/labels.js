// Segment label maps (8-bit PNGs of segment numbers) turned into coloured overlays.

/** The segment numbers of a decoded label image, one byte per pixel. */
export function labelValues(bitmap) {
  const canvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  const context = canvas.getContext("2d", { willReadFrequently: true, colorSpace: "srgb" });
  context.drawImage(bitmap, 0, 0);
  const rgba = context.getImageData(0, 0, bitmap.width, bitmap.height).data;
  const values = new Uint8Array(bitmap.width * bitmap.height);
  for (let i = 0; i < values.length; i += 1) values[i] = rgba[i * 4];
  return values;
}

/**
 * Paint `layers` (each {values, width, height, colors: Map number→[r,g,b]}) into one canvas
 * of the same size, at `opacity` (0–1); segments absent from `colors` stay transparent.
 * Returns the canvas, or null when nothing is visible.
 */
export function paintLabels(layers, opacity) {
  if (!layers.length || opacity <= 0) return null;
  const { width, height } = layers[0];
  const image = new ImageData(width, height);
  const out = image.data;
  const alpha = Math.round(255 * Math.min(1, opacity));
  let painted = 0;
  for (const layer of layers) {
    if (layer.width !== width || layer.height !== height || !layer.colors.size) continue;
    const { values, colors } = layer;
    for (let i = 0; i < values.length; i += 1) {
      const number = values[i];
      if (number === 0) continue;
      const color = colors.get(number);
      if (!color) continue;
      const o = i * 4;
      out[o] = color[0];
      out[o + 1] = color[1];
      out[o + 2] = color[2];
      out[o + 3] = alpha;
      painted += 1;
    }
  }
  if (!painted) return null;
  const canvas = new OffscreenCanvas(width, height);
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas;
}
