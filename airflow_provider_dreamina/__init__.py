"""Apache Airflow provider for Dreamina 3.0 Pro image-to-video on RunComfy's Model API."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
