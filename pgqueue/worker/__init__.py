"""The worker: ``pgqueue work`` runs a :class:`Runner` per process (a supervisor when
there are several)."""

from .runner import Runner

__all__ = ["Runner"]
