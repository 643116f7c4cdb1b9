# nbconvert configuration used by `make notebook` / `make notebooks` to re-execute a notebook in place:
#   jupyter nbconvert --config nbconvert_execute.py --to notebook --execute --inplace notebooks/01_*.ipynb
# The kernel runs in the notebook's folder (notebooks/), so runs land in notebooks/runs/ (git-ignored).
# It keeps the committed notebooks' metadata clean and portable (checked by tests/test_notebook_sources.py):
# no per-cell execution timings, no stored widget state (plotly's FigureWidget state embeds plotly.js,
# megabytes; widgets render again when the notebook is run), notebook metadata reduced to the kernelspec and
# the language name, and code cells keep only their `jupyter` (collapsed source) and `tags` metadata.
# For readers without a kernel (GitHub, nbviewer, HTML; notebooks/README.md): progress bars are plain text
# (CAS_EDU_PROGRESS=text, inherited by the kernel) and consecutive stream outputs are merged with their carriage
# returns collapsed, so a bar is saved as its final line; every plotly figure gains a PNG in the same output
# (tools/static_figures.py; current images are kept, so `make sync` needs Chromium only for new figures).
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # tools/ is repository tooling, not installed
os.environ["CAS_EDU_PROGRESS"] = "text"

c = get_config()  # noqa: F821 (provided by traitlets when nbconvert loads this file)

c.ExecutePreprocessor.kernel_name = "python3"
c.ExecutePreprocessor.timeout = 1800
c.ExecutePreprocessor.record_timing = False
c.ExecutePreprocessor.store_widget_state = False

c.ClearMetadataPreprocessor.enabled = True
c.ClearMetadataPreprocessor.preserve_nb_metadata_mask = {("kernelspec",), ("language_info", "name")}
c.ClearMetadataPreprocessor.preserve_cell_metadata_mask = {("jupyter",), ("tags",)}

c.NotebookExporter.preprocessors = ["nbconvert.preprocessors.CoalesceStreamsPreprocessor",
                                    "tools.static_figures.StaticFiguresPreprocessor"]
