"""The pure render core: volumes, planes, slabs, window/level and encoding."""
