"""d1deploy: deploy schema changes to Cloudflare D1 without losing data.

The package is a library first; `d1deploy.cli` is a thin Click layer over it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
