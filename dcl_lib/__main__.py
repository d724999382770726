"""Command line: ``python -m dcl_lib run METHOD --dataset NAME --profile quick|full --seed N ...``."""
from __future__ import annotations

import argparse
import sys


def _parser() -> argparse.ArgumentParser:
    from .data import DATASETS
    from .methods import method_names

    p = argparse.ArgumentParser(prog="python -m dcl_lib", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a method and write results JSON (+ checkpoint)")
    r.add_argument("method", help=f"one of: {', '.join(method_names())}")
    r.add_argument("--dataset", default="mnist", help=f"one of: {', '.join(sorted(DATASETS))}")
    r.add_argument("--profile", default=None, help="quick (default, CPU) or full (paper scale)")
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
    c.add_argument("--prepare", action="store_true",
                   help="here, before a window: stage the data and print the device command")
    t = sub.add_parser("results", help="print the results tables (from results/**/*.json)")
    t.add_argument("--readme", action="store_true", help="rewrite the README's results block")
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


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .data import DATASETS
    from .methods import get_spec, method_names

    if args.command == "results":
        from .results import main as results_main

        return results_main(args)
    if args.command in ("campaign", "collect"):
        from . import campaign

        try:
            if args.command == "campaign":
                return campaign.main(args)
            report = campaign.collect(args.source)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        for f in report["copied"]:
            print(f"copied   {f}")
        for r in report["refused"]:
            print(f"refused  {r}")
        return 1 if report["refused"] else 0
    if args.command == "list":
        for name in method_names():
            print(f"method   {name:18s} {get_spec(name).description}")
        for name, spec in sorted(DATASETS.items()):
            print(f"dataset  {name:18s} {spec.description}")
        return 0
    from .runner import check_request, resolve, run

    try:
        check_request(args.method, args.dataset, args.profile, args.seed)
        overrides = parse_overrides(args.set)
        subset = "profile" if args.subset is None else args.subset
        for seed in args.seed:  # every seed's plan is checked before the first one runs
            resolve(args.method, args.dataset, args.profile, seed, args.split, subset, overrides,
                    args.tag, args.out)
        for seed in args.seed:
            rec = run(args.method, args.dataset, args.profile, seed, split=args.split,
                      subset=subset, out_dir=args.out, device=args.device, overrides=overrides,
                      tag=args.tag, resume=args.resume,
                      save_every_s=None if args.no_state else args.save_every,
                      budget_s=args.budget_s)
            m = rec["metrics"]
            stopped = f", stopped at step {rec['stopped_at']}" if rec["stopped_at"] is not None else ""
            print(f"{rec['method']} {rec['dataset']}/{rec['split']} seed {seed}: "
                  f"ACC {m['acc']:.4f}  NMI {m['nmi']:.4f}  ARI {m['ari']:.4f}  "
                  f"purity {m['purity']:.4f}  ({rec['wall_time_s']:.1f} s on {rec['device']}"
                  f"{stopped}) -> {rec['path']}")
    except (ValueError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
