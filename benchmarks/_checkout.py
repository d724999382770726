"""Imported first by every benchmark script: puts this checkout's ``dcl_lib`` ahead of any
installed one, so a results file names the commit whose code actually ran."""
import sys
from pathlib import Path

CHECKOUT = str(Path(__file__).resolve().parents[1])
if sys.path[0] != CHECKOUT:
    sys.path.insert(0, CHECKOUT)
