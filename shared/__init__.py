"""certsync's library: names, certificates and (in later modules) assessment, planning and adapters."""

__version__ = "0.1.0"
