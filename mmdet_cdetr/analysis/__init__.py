"""Analysis helpers behind ``tools/analysis_tools/`` (benchmark and
convergence study)."""
