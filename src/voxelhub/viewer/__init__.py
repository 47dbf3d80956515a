"""The image viewer: server-side rendering of slices, reformations and projections."""
