"""The command line's grammar: the parser of ``python -m dcl_lib`` and ``--set`` items.

Shared by the entry point (``__main__``) and the campaign's provenance check, which
parses recorded commands with today's grammar.
"""
from __future__ import annotations

import argparse


def build_parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .methods import method_names

    p = argparse.ArgumentParser(prog="python -m dcl_lib", description="Command line: python -m dcl_lib run METHOD --dataset NAME --profile quick|full --seed N ...")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a method and write results JSON (+ checkpoint)")
    r.add_argument("method", help=f"one of: {', '.join(method_names())}")
    r.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(sorted(DATASETS))}")
    r.add_argument("--profile", default=None,
                   help="quick (default, CPU), full (paper scale) or a method's own (depict: paper)")
    r.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more seeds")
    r.add_argument("--split", default=None, help="train, test or all (default: the profile's)")
    r.add_argument("--subset", type=int, default=None,
                   help="use a seeded random subset of this many images (default: the profile's)")
    r.add_argument("--out", default="results", help="output folder (default: results)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--set", nargs="*", action="extend", default=[], metavar="FIELD=VALUE",
                   help="override config fields (type-checked), e.g. --set n_init=20 "
                        "--set 'channels=(32, 64)'")
    r.add_argument("--tag", default=None,
                   help="suffix for the result files of a variant, e.g. --tag long")
    r.add_argument("--resume", action="store_true",
                   help="continue from the run's training state (<stem>.train-state.pt) if present")
    r.add_argument("--save-every", type=float, default=60.0, metavar="SECONDS",
                   help="save the training state at most this often (default 60)")
    r.add_argument("--no-state", action="store_true",
                   help="write no training state (a run that cannot be resumed; e.g. on a lent GPU)")
    r.add_argument("--budget-s", type=float, default=None, metavar="SECONDS",
                   help="stop training after this long, save the state and record stopped_at")
    sub.add_parser("list", help="list methods and datasets")
    c = sub.add_parser("campaign", help="run every outstanding full-profile result on a GPU window")
    c.add_argument("--budget-s", type=float, default=540.0, help="the whole window (default 540)")
    c.add_argument("--out", default="campaign-out", help="folder for the archives and summary.json")
    c.add_argument("--parallel", type=int, default=3, help="concurrent processes on the GPU")
    c.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU (a rehearsal)")
    c.add_argument("--only", nargs="+", default=None, metavar="JOB",
                   help="run only these outstanding jobs, in this order (e.g. ganmm-raw-mnist-seed0)")
    c.add_argument("--prepare", action="store_true",
                   help="here, before a window: stage the data and print the device command")
    t = sub.add_parser("results", help="print the results tables (from results/**/*.json)")
    t.add_argument("--readme", action="store_true", help="rewrite the README's results block")
    t.add_argument("--prune-checkpoints", action="store_true",
                   help="drop the weight exports the tree does not keep (variants no page "
                        "reloads, files over 5 MB); their results JSON say so")
    k = sub.add_parser("collect", help="copy a campaign's results into results/ after checks")
    k.add_argument("source", help="the folder the device returned (archives) or a results tree")
    return p


def parse_overrides(items: list[str]) -> dict[str, str]:
    """``FIELD=VALUE`` strings -> {field: text}; the config parses and type-checks the text."""
    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v
    return out
