"""Stream sources and sinks, found by URL scheme (:mod:`riera.stream.connectors.base`)."""
