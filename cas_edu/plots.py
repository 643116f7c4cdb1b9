"""Static plotly figures for the notebooks: every builder returns a ``go.Figure`` with a title, axis labels and a legend."""
from __future__ import annotations

import plotly.graph_objects as go

# --- notebooks 01-02 ---


# --- notebooks 03-04 ---
