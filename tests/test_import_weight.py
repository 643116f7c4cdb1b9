"""The core library runs where only torch is installed: importing it pulls in no plotting or widget package."""
from __future__ import annotations

import subprocess
import sys

import pytest

CORE = ("cas_edu", "cas_edu.data", "cas_edu.models", "cas_edu.attacks", "cas_edu.losses", "cas_edu.training",
        "cas_edu.evaluation", "cas_edu.activations", "cas_edu.observations", "cas_edu.cli")
PRESENTATION = ("plotly", "ipywidgets", "matplotlib", "IPython")


def loaded_after_import(module: str) -> set[str]:
    code = f"import sys, {module}; print(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    return set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.split())


@pytest.mark.parametrize("module", CORE)
def test_core_modules_import_no_plotting_or_widget_package(module):
    assert not loaded_after_import(module) & set(PRESENTATION)


def test_the_check_sees_a_plotting_import():
    assert "plotly" in loaded_after_import("cas_edu.plots")
