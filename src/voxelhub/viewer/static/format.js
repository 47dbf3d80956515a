// DICOM values the way people read them.

/** A DICOM PN (Family^Given^Middle^Prefix^Suffix) as "Family, Given Middle". */
export function personName(value) {
  if (!value) return "—";
  const [family, ...rest] = String(value).split("^");
  const given = rest.filter(Boolean).join(" ");
  return family && given ? `${family}, ${given}` : family || given || "—";
}

/** A DICOM DA (YYYYMMDD) as YYYY-MM-DD; anything else as given. */
export function dicomDate(value) {
  const text = String(value ?? "");
  return /^\d{8}$/.test(text) ? `${text.slice(0, 4)}-${text.slice(4, 6)}-${text.slice(6)}` : text;
}

/** YYYY-MM-DD (a date input's value) as a DICOM DA, or "" when empty. */
export function toDicomDate(value) {
  return value ? value.replaceAll("-", "") : "";
}
