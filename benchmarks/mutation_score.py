"""The mutation score of the shared mathematical modules and of each method's losses,
against their own test files (mutmut; configuration in pyproject.toml, [tool.mutmut]).

    pip install -e ".[mutation]"
    OMP_NUM_THREADS=1 python benchmarks/mutation_score.py        # about 16 minutes on 2 cores
    python benchmarks/mutation_score.py --report-only            # the last run's results again

Runs mutmut on ``SHARED`` and ``LOSSES`` (function-name globs), then writes
``results/benchmarks/mutation_score.json``: per module and per function the mutants
killed and surviving, and every survivor with the reason it is kept (``REASONS``: an
equivalent mutant, or one this machine cannot tell apart).  A survivor without a reason
makes the script exit with status 1: write a test that kills it, or a reason.
"""
from __future__ import annotations

import _checkout  # noqa: F401  (first: this checkout's dcl_lib, not an installed one)

import re
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import torch

from dcl_lib._io import write_json
from dcl_lib.runner import git_commit
from dcl_lib.train import device_name

ROOT = Path(__file__).resolve().parents[1]
SHARED = ["dcl_lib.gan.*", "dcl_lib.em.*", "dcl_lib.metrics.*"]
LOSSES = [f"dcl_lib.methods.{m}.x_{f}__mutmut_*" for m, fs in {
    "vcami": ["jsd_mi", "_shuffled", "joint_posterior", "cluster_mi", "joint_mi", "gaussian_kl",
              "gmm_loss", "reg_loss", "mixture_posterior"],
    "dcan": ["sample_target", "abc_loss", "kl_to_target"],
    "depict": ["depict_target", "depict_objective", "reconstruction_loss"],
    "clustergan": ["generator_encoder_loss"],
}.items() for f in fs]

_DEVICE = ("device placement: with one device (a CPU) .to(None), device=None and the "
           "generator's device are the same place; the campaign's dry run on the GPU machine "
           "exercises it")
# (pattern on the mutant's added lines, reason): the first that matches explains a survivor
REASONS = [
    (r"device=None|\.to\(None\)|gdev = None|device=gdev\)|device=g\.device\)|"
     r"device=generator\.device\)|device=z\.device\)|generator is not None\) (and False|or True)"
     r"|generator is None else|device is not None\) (and False|or True)|device is None else"
     r"|torch\.(randn|rand|randint|zeros|arange)\(.*, \)",  # the device argument dropped
     _DEVICE),
    (r"replacement=False, generator|multinomial\(w\.cpu\(\), m, generator",
     "equivalent: replacement=False is torch.multinomial's default"),
    (r"int\(labels\.max\(\)\) \+ 2", "equivalent: the extra cluster has no member, a -inf "
                                      "column, and is never chosen"),
    (r"torch\.full\(\(len\(X\),\), -math\.inf(, dtype=None)?, ?\)|dtype=None\)\n?$",
     "equivalent: -inf in float32 is -inf in float64 after torch.stack's promotion"),
    (r"iters: int = 61", "equivalent: one more bisection step moves lambda by under 2^-60"),
    (r"if kl < eps_total|total_kl\(mid\)\[1\] <= eps_total",
     "equivalent: differs only when the KL equals eps exactly (measure zero)"),
    (r"v \* \(v - 1\) \* 2|v \* \(v - 1\) / 3|v = v\.astype\(None\)",
     "equivalent: ARI and the Rand index are ratios of C(n, 2) sums: a constant factor or "
     "float64 (numpy's default) cancels"),
    (r"a\.astype\(None\)|\"XXiubXX\"", "equivalent: float64 labels give the same counts; "
                                       "every integer dtype kind is in the mutated string"),
    (r"counts >= 0", "equivalent: the counts are cluster and class sizes from np.unique, "
                     "never 0"),
    (r"/ norm, 2\.0\)", "equivalent: mi / norm never exceeds 1 by rounding on these inputs "
                        "(the clip is a guard)"),
    (r"total > 1 else|else 1\.0$", "equivalent: with fewer than two pairs ARI returns 1.0 "
                                   "before 'expected' is used"),
    (r"einsum\(\"[A-Z]", "equivalent: einsum subscripts renamed consistently"),
    (r"target\.means\[k\] - torch\.einsum", "equivalent in distribution: eps and -eps are "
                                             "both N(0, I); the sampler is tested by its moments"),
    (r"keepdim=False|[Pp]\.sum\(0, \)|P\.sum\(1, \)|"
     r"Pc_ = P\.sum\(1, keepdim=True\), P\.sum\(1, keepdim=True\)",
     "equivalent on the symmetric joints IIC uses (P = P^T: row and column marginals are "
     "equal), and a (K,) row broadcasts as (1, K)"),
    (r"math\.log\(2 / math\.pi\)|math\.log\(3 \* math\.pi\)|- math\.log\(2 \* math\.pi\)"
     r"|log_softmax\(log_n, (None)?\)", "equivalent: a constant per row cancels in the "
                                        "log-softmax, which takes the last axis of a 2-D input"),
    (r"clean\[:4\]", "equivalent: zip stops at the three reconstructions"),
    (r"\) - offset\) % B\]", "equivalent: a cyclic shift by -offset, offset in 1..B-1, is "
                              "also one that moves every row"),
    (r"l >= 0\)", "equivalent: the input layer's target is the data, which has no gradient"),
]


def _mutmut(*args: str) -> str:
    exe = shutil.which("mutmut", path=str(Path(sys.executable).parent)) or "mutmut"
    return subprocess.run([exe, *args], cwd=ROOT, capture_output=True, text=True).stdout


def main(report_only: bool = False) -> int:
    if not report_only:
        shutil.rmtree(ROOT / "mutants", ignore_errors=True)
        _mutmut("run", "--max-children", "2", *SHARED)
        _mutmut("run", "--max-children", "2", *LOSSES)
    rows = [line.split() for line in _mutmut("results", "--all", "true").splitlines() if line.strip()]
    per_function: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    survivors, unexplained = [], []
    for name, *status in rows:
        name, status = name.rstrip(":"), " ".join(status)
        if status == "not checked":
            continue
        fn = name.split("__mutmut_")[0]
        per_function[fn][status] += 1
        if status != "killed":
            diff = "\n".join(l for l in _mutmut("show", name).splitlines()
                             if re.match(r"^[-+][^-+]", l))
            added = "\n".join(l for l in diff.splitlines() if l.startswith("+"))
            reason = next((r for pat, r in REASONS if re.search(pat, added, re.M)), None)
            survivors.append({"mutant": name, "status": status, "diff": diff, "reason": reason})
            if reason is None:
                unexplained.append(name)
    modules: dict[str, dict[str, int]] = defaultdict(lambda: {"killed": 0, "total": 0})
    for fn, counts in per_function.items():
        mod = fn.rsplit(".", 1)[0]
        modules[mod]["killed"] += counts.get("killed", 0)
        modules[mod]["total"] += sum(counts.values())
    for mod, m in sorted(modules.items()):
        print(f"{mod:28s} {m['killed']:4d} / {m['total']:4d} killed ({m['killed'] / m['total']:.1%})")
    write_json(ROOT / "results" / "benchmarks" / "mutation_score.json",
               {"git_commit": git_commit(), "device": device_name(torch.device("cpu")),
                "tool": "mutmut", "modules": modules,
                "functions": {k: dict(v) for k, v in sorted(per_function.items())},
                "survivors": survivors})
    for name in unexplained:
        print(f"survivor without a reason: {name}")
    return 1 if unexplained else 0


if __name__ == "__main__":
    sys.exit(main(report_only="--report-only" in sys.argv[1:]))
