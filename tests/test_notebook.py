"""examples/tour.ipynb runs from top to bottom in a fresh kernel, as CI runs it (nbclient), and fails on any error.

The kernel is this interpreter, whatever kernels the machine has installed: a kernelspec pointing at
sys.executable is written into a temporary prefix and put first on JUPYTER_PATH, so a fresh virtual
environment needs no `python -m ipykernel install` step and a system-wide "python3" kernel (another Python,
without gptkit) cannot be picked by mistake.
"""

from __future__ import annotations

import nbformat
from conftest import REPO_ROOT
from ipykernel.kernelspec import install as install_kernelspec
from nbclient import NotebookClient

NOTEBOOK = REPO_ROOT / "examples" / "tour.ipynb"
KERNEL = "gptkit-tour-test"


def test_the_tour_notebook_runs_without_errors(tmp_path, monkeypatch):
    prefix = tmp_path / "jupyter-prefix"
    install_kernelspec(kernel_name=KERNEL, prefix=str(prefix))
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    assert all(not cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"), "commit the notebook without outputs"
    client = NotebookClient(notebook, kernel_name=KERNEL, timeout=180, resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError, naming the cell, on the first error

    outputs = [o for cell in notebook.cells if cell.cell_type == "code" for o in cell.outputs]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "measured peak" in text and "val loss" in text
    assert any("image/png" in o.get("data", {}) for o in outputs if o.output_type == "display_data")  # the attention map
