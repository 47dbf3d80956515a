"""The image viewer: server-side rendering of slices, reformations and projections.

`render/` is the pure core (numpy, imagecodecs and the pure `voxelhub.dicom.tilt`): volume
geometry, planes and slab projections (reformats of gantry-tilted series on their regular
grid), window/level, square-millimetre resampling, encoding, SEG label volumes and region
statistics. `cache.py` keeps decoded volumes in memory under
`VOXELHUB_VIEWER_CACHE_MB` (default 2048) with least-recently-used eviction; `router.py`
serves `/viewer/api`.

The cache lives in each web process. With `voxelhub serve --web-processes N` every process
decodes and keeps its own copy of a series it is asked for, so the memory bound is N times
the budget, and a request that lands on a process that has not loaded the series waits for
that process to load it (about as long as the first load). One web process, or a proxy that
keeps a reader on one process (e.g. by session cookie), gives the best scrolling.
"""
