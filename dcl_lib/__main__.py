"""Command line: ``python -m dcl_lib run METHOD --dataset NAME --profile quick|full --seed N ...``."""
from __future__ import annotations

import sys

from .cli import build_parser, parse_overrides


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
        for f in report.get("restored", []):
            print(f"restored {f}")
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
