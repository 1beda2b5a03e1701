"""Exchange backends: how stages hand data to each other (see :mod:`riera.exchange.base`)."""

from riera.exchange.base import Exchange, Ref, SegmentKey, available, create, register

__all__ = ["Exchange", "Ref", "SegmentKey", "available", "create", "register"]
