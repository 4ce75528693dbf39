"""Adapters: the only code that imports `azure.*` (adapters.azure) or touches local files for the
pipeline's ports (adapters.local). Chosen in one place, `shared.wiring`."""
