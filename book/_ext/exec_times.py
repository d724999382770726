"""Record how long each notebook took to execute in the build, and fail the build when one
took longer than the quick profile allows.

myst-nb keeps each notebook's execution result (runtime, success) in the Sphinx
environment; at the end of the build this writes them to ``_build/exec_times.json`` and
raises a warning (an error under ``-W``) for every notebook over ``nb_max_runtime_s``
seconds or one that did not execute.  The limit is the book's rule: a chapter runs in at
most three minutes on 2 CPU cores (``DCL_MAX_NOTEBOOK_S`` overrides it, 0 turns it off).
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from sphinx.util import logging

logger = logging.getLogger(__name__)


def _write(app, exception):
    if exception is not None:
        return
    from myst_nb.sphinx_ import NbMetadataCollector

    data = NbMetadataCollector.get_doc_data(app.env)
    rows = {}
    for docname in sorted(data):
        ex = data[docname].get("exec_data")
        if ex:
            rows[docname] = {"runtime_s": ex.get("runtime"), "succeeded": ex.get("succeeded"),
                             "error": ex.get("error")}
    out = Path(app.outdir).parent / "exec_times.json"
    out.write_text(json.dumps(rows, indent=1) + "\n")
    limit = float(os.environ.get("DCL_MAX_NOTEBOOK_S", app.config.nb_max_runtime_s))
    for doc, r in rows.items():
        if not r["succeeded"]:
            logger.warning(f"{doc}: the notebook did not execute ({r['error']})")
        elif limit and r["runtime_s"] is not None and r["runtime_s"] > limit:
            logger.warning(f"{doc}: executed in {r['runtime_s']:.0f} s, over the {limit:.0f} s "
                           "that a chapter may take (quick profile, 2 CPU cores)")
    logger.info(f"execution times written to {out}")


def setup(app):
    app.add_config_value("nb_max_runtime_s", 180.0, "env")
    app.connect("build-finished", _write)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
