"""The package version, stated once: pyproject.toml reads it from here (setuptools dynamic).

A module of its own so that modules inside the package can name the version
without importing `poller` itself.
"""

__version__ = "0.1.0"
