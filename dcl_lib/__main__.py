"""Command line: ``python -m dcl_lib run METHOD --dataset NAME --profile quick|full --seed N ...``."""
from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .runner import METHODS

    p = argparse.ArgumentParser(prog="python -m dcl_lib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a method and write results JSON (+ checkpoint)")
    r.add_argument("method", help=f"one of: {', '.join(sorted(METHODS))}")
    r.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(sorted(DATASETS))}")
    r.add_argument("--profile", default=None, help="quick (default, CPU) or full (paper scale)")
    r.add_argument("--seed", type=int, nargs="+", default=[0], help="one or more seeds")
    r.add_argument("--split", default=None, help="train, test or all (default: the profile's)")
    r.add_argument("--subset", type=int, default=None,
                   help="use a seeded random subset of this many images (default: the profile's)")
    r.add_argument("--out", default="results", help="output folder (default: results)")
    r.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    r.add_argument("--set", nargs="*", action="extend", default=[], metavar="FIELD=VALUE",
                   help="override config fields, e.g. --set n_init=20")
    r.add_argument("--tag", default=None,
                   help="suffix for the result files of a variant, e.g. --tag long")
    sub.add_parser("list", help="list methods and datasets")
    return p


def _parse_overrides(items: list[str]) -> dict:
    import ast

    out = {}
    for item in items:
        if "=" not in item:
            raise ValueError(f"--set expects FIELD=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        try:
            out[k] = ast.literal_eval(v)
        except (ValueError, SyntaxError):
            out[k] = v
    return out


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DATASETS
    from .runner import METHODS, check_request, run

    if args.command == "list":
        for name, spec in sorted(METHODS.items()):
            print(f"method   {name:18s} {spec.description}")
        for name, spec in sorted(DATASETS.items()):
            print(f"dataset  {name:18s} {spec.description}")
        return 0
    try:
        check_request(args.method, args.dataset, args.profile, args.seed)
        overrides = _parse_overrides(args.set)
        subset = "profile" if args.subset is None else args.subset
        for seed in args.seed:
            rec = run(args.method, args.dataset, args.profile, seed, split=args.split,
                      subset=subset, out_dir=args.out, device=args.device, overrides=overrides,
                      tag=args.tag)
            m = rec["metrics"]
            print(f"{rec['method']} {rec['dataset']}/{rec['split']} seed {seed}: "
                  f"ACC {m['acc']:.4f}  NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  "
                  f"purity {m['purity']:.4f}  ({rec['wall_time_s']:.1f} s on {rec['device']}) "
                  f"-> {rec['path']}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
