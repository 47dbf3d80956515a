// Where the images of a volume lie in the patient (LPS, mm), from the `grid` of the study
// document's volume, so that linked cross-hairs meet at one point of the patient.
//
// Every plane is cut from one regular grid of (slice, row, column) voxels. Coronal and
// sagittal images follow its rows and columns; the axial image of a slice shows the slice
// as acquired, which a gantry tilt shifts along the grid's rows and columns by that slice's
// offsets. Positions within images are fractions of their width and height (a pixel's
// centre lies half a pixel in), as the viewports draw them.

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const clamp = (value, low, high) => Math.min(high, Math.max(low, value));

/** Where the images of `volume` (a study document's volume with a grid) lie. */
export class PatientGrid {
  constructor(volume) {
    const grid = volume.grid;
    this.slices = volume.dims[0];
    this.dims = volume.dims;
    this.sliceSize = grid.slice_size;
    this.offsets = grid.slice_offsets;
    this.flipped = grid.flipped;
    this.origin = grid.origin;
    this.steps = grid.steps_mm;
    // Rows of the inverse of the matrix whose columns are the steps: patient → grid.
    const [a, b, c] = this.steps;
    const det = dot(a, cross(b, c));
    this.inverse = [cross(b, c), cross(c, a), cross(a, b)].map((row) => row.map((v) => v / det));
  }

  /** Rows and columns of the images of `plane`. */
  imageSize(plane) {
    const [slices, rows, columns] = this.dims;
    if (plane === "axial") return this.sliceSize;
    return plane === "coronal" ? [slices, columns] : [slices, rows];
  }

  /** The grid row and column of the first pixel of slice `index`. */
  offset(index) {
    return this.offsets?.[index] ?? [0, 0];
  }

  /** The patient point (mm) at fraction {fx, fy} of image `index` of `plane`. */
  toPatient(plane, index, { fx, fy }) {
    const [height, width] = this.imageSize(plane);
    const x = fx * width - 0.5;
    const y = fy * height - 0.5;
    const slice = this.flipped ? this.slices - 1 - y : y;
    let voxel;
    if (plane === "axial") {
      const [rows, columns] = this.offset(index);
      voxel = [index, y + rows, x + columns];
    } else {
      voxel = plane === "coronal" ? [slice, index, x] : [slice, x, index];
    }
    const [a, b, c] = this.steps;
    return this.origin.map((o, i) => o + voxel[0] * a[i] + voxel[1] * b[i] + voxel[2] * c[i]);
  }

  /** The image of `plane` nearest to `point` (mm), and where in it the point lies. */
  locate(plane, point) {
    const relative = point.map((value, i) => value - this.origin[i]);
    const [slice, row, column] = this.inverse.map((inverse) => dot(inverse, relative));
    const [height, width] = this.imageSize(plane);
    const at = (x, y) => ({ fx: (x + 0.5) / width, fy: (y + 0.5) / height });
    const y = this.flipped ? this.slices - 1 - slice : slice;
    if (plane === "axial") {
      const index = clamp(Math.round(slice), 0, this.slices - 1);
      const [rows, columns] = this.offset(index);
      return { index, ...at(column - columns, row - rows) };
    }
    if (plane === "coronal") return { index: this.nearest(row, 1), ...at(column, y) };
    return { index: this.nearest(column, 2), ...at(row, y) };
  }

  nearest(position, axis) {
    return clamp(Math.round(position), 0, this.dims[axis] - 1);
  }
}
