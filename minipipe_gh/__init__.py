"""minipipe-gh: agent sessions as tracked PRs, every pushed patch gated by review."""

__version__ = "0.1.0"
