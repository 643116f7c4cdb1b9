"""Interactive explorers for the notebooks: a pure function computes each view, a small class wires it to
ipywidgets 8 controls and one plotly ``go.FigureWidget``, so tests can drive every widget headlessly."""
from __future__ import annotations

import plotly.graph_objects as go

# --- notebooks 01-02 ---


# --- notebooks 03-04 ---
