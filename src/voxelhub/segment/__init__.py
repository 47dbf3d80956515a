"""Segmentation inference: bundles, runtimes, sliding windows, metrics (pure compute)."""
