// Calls to the viewer API: JSON with the server's error message, and images with their headers.

/** An HTTP error carrying the server's own explanation (`detail`, or `message`). */
export class ApiError extends Error {
  constructor(status, message, body) {
    super(message);
    this.status = status;
    this.body = body;
  }
}

async function explain(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    return new ApiError(response.status, `${response.status} ${response.statusText}`, null);
  }
  const detail = body && (typeof body.detail === "string" ? body.detail : body.message);
  return new ApiError(response.status, detail || `${response.status} ${response.statusText}`, body);
}

/** GET (or POST with `csrf`) a JSON document; throws ApiError with the server's message. */
export async function getJson(url, { method = "GET", csrf = "", signal } = {}) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  const response = await fetch(url, { method, headers, signal, credentials: "same-origin" });
  if (!response.ok) throw await explain(response);
  return response.json();
}

/**
 * An image from a render endpoint, decoded off the main thread, with what its headers say.
 * Returns {bitmap, width, height, planeSize, pixelSpacing, index}.
 */
export async function getImage(url, { signal, raw = false } = {}) {
  const response = await fetch(url, { signal, credentials: "same-origin" });
  if (!response.ok) throw await explain(response);
  const blob = await response.blob();
  // Label maps must keep their exact grey values: no colour management, no premultiplying.
  const options = raw ? { colorSpaceConversion: "none", premultiplyAlpha: "none" } : {};
  const bitmap = await createImageBitmap(blob, options);
  const number = (name) => {
    const value = Number.parseFloat(response.headers.get(name) ?? "");
    return Number.isFinite(value) ? value : null;
  };
  return {
    bitmap,
    width: bitmap.width,
    height: bitmap.height,
    planeSize: number("X-Plane-Size"),
    pixelSpacing: number("X-Pixel-Spacing"),
    index: number("X-Index"),
  };
}

/** `path?key=value&…`, leaving out null and undefined values. */
export function withQuery(path, params) {
  const query = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(key, String(value));
  }
  const text = query.toString();
  return text ? `${path}?${text}` : path;
}

export const seriesPath = (uid) => `/viewer/api/series/${encodeURIComponent(uid)}`;
