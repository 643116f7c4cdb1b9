"""Build tools for the notebooks (not part of the installed cas_edu package); run from the repository root."""
