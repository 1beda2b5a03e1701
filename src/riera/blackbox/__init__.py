"""Black-box programs (document 001): file groups staged in memory, external programs run over
them from an argv template, the files they write versioned in Git per run."""
