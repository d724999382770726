"""The injected-bug catalogue: realistic one-line bugs in the maths and the method loops,
each of which at least one unit test must catch at one thread.

    DCL_DATA_MIRROR=../shared/data .venv/bin/python tests/injected_bugs.py          # all
    DCL_DATA_MIRROR=../shared/data .venv/bin/python tests/injected_bugs.py vcami-   # by prefix

Each bug is applied alone to a copy of the tracked files (never to this checkout), and
the test files it names run there with ``OMP_NUM_THREADS=1``, stopping at the first
failure.  A bug is *caught* when they fail; the report names the first failing test.
Writes ``results/benchmarks/injected_bugs.json`` when every bug was run.  Not collected by
pytest (its name does not start with ``test_``): a full pass takes about ten minutes.

Add a bug here whenever a test is written for one (CONTRIBUTING.md, "Tests"): the
catalogue is how the suite's power is measured again after the code changes.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str          # the file, relative to the checkout
    old: str           # text that occurs exactly once in it
    new: str           # what the bug puts there
    tests: tuple[str, ...]  # pytest node ids or files that must catch it


BUGS = [
    # -- foundations -------------------------------------------------------------------
    Bug("train-random-batch-misses-last", "dcl_lib/train.py",
        "return torch.randint(n, (batch_size,), generator=g, device=g.device)",
        "return torch.randint(n - 1, (batch_size,), generator=g, device=g.device)",
        ("tests/test_train.py",)),
    Bug("train-no-shuffle", "dcl_lib/train.py",
        "perm = torch.randperm(n, generator=g, device=g.device)",
        "perm = torch.arange(n, device=g.device)",
        ("tests/test_train.py",)),
    Bug("nets-dcgan-init-0p2", "dcl_lib/nets.py",
        "def init_normal_(module: nn.Module, std: float = 0.02)",
        "def init_normal_(module: nn.Module, std: float = 0.2)",
        ("tests/test_train.py",)),
    Bug("em-no-logsumexp-shift", "dcl_lib/em.py",
        "log_px = torch.logsumexp(log_joint, dim=1)  # (N,)",
        "log_px = torch.log(torch.exp(log_joint).sum(1))  # (N,)",
        ("tests/test_em.py",)),
    Bug("gmm-eps-em-exact-m-step", "dcl_lib/methods/gmm.py",
        "pi, mu, Sigma = m_step(X, q, covariance_type, reg_covar)",
        "pi, mu, Sigma = m_step(X, log_gamma.exp(), covariance_type, reg_covar)",
        ("tests/test_gmm.py",)),
    # -- k-means -------------------------------------------------------------------------
    Bug("kmeans-reseed-nearest", "dcl_lib/methods/kmeans.py",
        "        if empty.numel() > 0:\n            far = torch.argsort(dist, descending=True)",
        "        if empty.numel() > 0:\n            far = torch.argsort(dist, descending=False)",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-reseed-nearest-bounded", "dcl_lib/methods/kmeans.py",
        "            dist = assign(X, C, x_sq=nearest.x_sq)[1]\n"
        "            far = torch.argsort(dist, descending=True)",
        "            dist = assign(X, C, x_sq=nearest.x_sq)[1]\n"
        "            far = torch.argsort(dist, descending=False)",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-transform-squared", "dcl_lib/methods/kmeans.py",
        "return _chunked_sqdist(*self._with_centres(X)).sqrt().cpu().numpy()",
        "return _chunked_sqdist(*self._with_centres(X)).cpu().numpy()",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-pp-one-trial", "dcl_lib/methods/kmeans.py",
        "n_local_trials = 2 + int(math.log(n_clusters))",
        "n_local_trials = 1",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-keeps-worst-restart", "dcl_lib/methods/kmeans.py",
        "if best is None or inertia < best[2]:",
        "if best is None or inertia > best[2]:",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-uncertified-float32", "dcl_lib/methods/kmeans.py",
        "unsure = torch.nonzero(second - first <= 2 * err).flatten()",
        "unsure = torch.nonzero(second - first < 0).flatten()",
        ("tests/test_kmeans.py",)),
    Bug("kmeans-bounds-ignore-moves", "dcl_lib/methods/kmeans.py",
        "u = torch.nextafter(u + delta[a], inf)",
        "u = torch.nextafter(u, inf)",
        ("tests/test_kmeans.py",)),
    # -- the shared autoencoder ----------------------------------------------------------
    Bug("autoencoder-corrupted-target", "dcl_lib/methods/autoencoder.py",
        "loss = F.binary_cross_entropy(x_hat, x)",
        "loss = F.binary_cross_entropy(x_hat, x_in.clamp(0, 1))",
        ("tests/test_autoencoder.py",)),
    Bug("autoencoder-resume-forgets-generator", "dcl_lib/methods/autoencoder.py",
        'state.attach({"autoencoder": model}, {"adam": opt}, {"batches": g}, hist)',
        'state.attach({"autoencoder": model}, {"adam": opt}, {}, hist)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    # -- GANMM ---------------------------------------------------------------------------
    Bug("ganmm-estep-never-refreshed", "dcl_lib/methods/ganmm.py",
        "if est is None or (it % cfg.estep_every == 0 and it > hold_until):",
        "if est is None:",
        ("tests/test_ganmm.py",)),
    Bug("ganmm-starving-threshold-n", "dcl_lib/methods/ganmm.py",
        "sizes < max(cfg.min_cluster * N / K, 1)",
        "sizes < max(cfg.min_cluster * N, 1)",
        ("tests/test_ganmm.py",)),
    # -- DEPICT --------------------------------------------------------------------------
    Bug("depict-ce-on-clean-pathway", "dcl_lib/methods/depict.py",
        "logp = torch.log_softmax(net.cluster_logits(noisy[-1]), 1)",
        "logp = torch.log_softmax(net.cluster_logits(clean[-1]), 1)",
        ("tests/test_depict.py",)),
    Bug("depict-recon-from-clean-code", "dcl_lib/methods/depict.py",
        "recon = net.decode(noisy[-1])",
        "recon = net.decode(net.encode(x)[-1])",
        ("tests/test_depict.py",)),
    Bug("depict-recon-weights-swapped", "dcl_lib/methods/depict.py",
        "w = 1.0 if l == 0 else hidden_weight",
        "w = hidden_weight if l == 0 else 1.0",
        ("tests/test_depict.py",)),
    Bug("depict-detach-default-flipped", "dcl_lib/methods/depict.py",
        "detach_targets: bool = False ",
        "detach_targets: bool = True ",
        ("tests/test_depict.py",)),
    # the official schedule (the paper profile): its early stops and its optimisers
    Bug("depict-pretraining-keeps-last-weights", "dcl_lib/methods/depict.py",
        "            net.load_state_dict(best_net)\n            hist.scalars[\"pretrain_best",
        "            pass\n            hist.scalars[\"pretrain_best",
        ("tests/test_depict.py::test_pretraining_stops_on_the_heldout_loss_and_restores_the_best_weights",)),
    Bug("depict-warmup-trains-on-heldout", "dcl_lib/methods/depict.py",
        'losses = run_epoch(init_labels, "warm-up", rows)',
        'losses = run_epoch(init_labels, "warm-up")',
        ("tests/test_depict.py::test_the_warmup_restores_its_best_weights_and_each_phase_gets_a_fresh_adam",)),
    Bug("depict-one-adam-throughout", "dcl_lib/methods/depict.py",
        "            opt.state.clear()", "            pass",
        ("tests/test_depict.py::test_the_warmup_restores_its_best_weights_and_each_phase_gets_a_fresh_adam",)),
    Bug("depict-softmax-over-batch", "dcl_lib/methods/depict.py",
        "return z, torch.softmax(net.cluster_logits(z), 1)",
        "return z, torch.softmax(net.cluster_logits(z), 0)",
        ("tests/test_depict.py",)),
    Bug("depict-log-softmax-over-batch", "dcl_lib/methods/depict.py",
        "logp = torch.log_softmax(net.cluster_logits(noisy[-1]), 1)",
        "logp = torch.log_softmax(net.cluster_logits(noisy[-1]), 0)",
        ("tests/test_depict.py",)),
    # -- DCAN ----------------------------------------------------------------------------
    Bug("dcan-refresh-keyed-on-epoch", "dcl_lib/methods/dcan.py",
        "if cfg.refresh_steps and step % cfg.refresh_steps == 0:",
        "if cfg.refresh_steps and epoch % cfg.refresh_steps == 0:",
        ("tests/test_dcan.py",)),
    Bug("dcan-kl-variance-as-sd", "dcl_lib/methods/dcan.py",
        "z_hat = m + (0.5 * logvar).exp() * eps",
        "z_hat = m + logvar.exp() * eps",
        ("tests/test_dcan.py",)),
    Bug("dcan-no-own-seeding", "dcl_lib/methods/dcan.py",
        "    torch.manual_seed(seed)\n    ae = copy.deepcopy(ae).to(device)",
        "    ae = copy.deepcopy(ae).to(device)",
        ("tests/test_dcan.py",)),
    Bug("dcan-generator-sign-flipped", "dcl_lib/methods/dcan.py",
        "cluster = nonsaturating_generator_loss(nets.D(z_hat,",
        "cluster = -nonsaturating_generator_loss(nets.D(z_hat,",
        ("tests/test_dcan.py",)),
    Bug("dcan-code-detached-before-d", "dcl_lib/methods/dcan.py",
        "cluster = nonsaturating_generator_loss(nets.D(z_hat,",
        "cluster = nonsaturating_generator_loss(nets.D(z_hat.detach(),",
        ("tests/test_dcan.py",)),
    Bug("dcan-cluster-term-dropped", "dcl_lib/methods/dcan.py",
        "loss = cfg.recon_weight * recon + cfg.weight * cluster",
        "loss = cfg.recon_weight * recon",
        ("tests/test_dcan.py",)),
    # -- ClusterGAN ----------------------------------------------------------------------
    Bug("clustergan-diversity-train-mode", "dcl_lib/methods/clustergan.py",
        "    with eval_mode(G):\n        x = G(z_n, z_c).flatten(1)",
        "    if True:\n        x = G(z_n, z_c).flatten(1)",
        ("tests/test_clustergan.py",)),
    Bug("clustergan-betas-swapped", "dcl_lib/methods/clustergan.py",
        "generator_encoder_loss(d_fake, z_n, k, zn_hat, zc_logits, cfg.beta_n, cfg.beta_c)",
        "generator_encoder_loss(d_fake, z_n, k, zn_hat, zc_logits, cfg.beta_c, cfg.beta_n)",
        ("tests/test_clustergan.py",)),
    # -- DEC -----------------------------------------------------------------------------
    Bug("dec-target-normalised-per-row", "dcl_lib/methods/dec.py",
        "w = q * q / q.sum(0, keepdim=True)",
        "w = q * q / q.sum(1, keepdim=True)",
        ("tests/test_dec.py",)),
    Bug("dec-kernel-sign", "dcl_lib/methods/dec.py",
        "logits = -(alpha + 1) / 2 * torch.log1p(d2 / alpha)",
        "logits = (alpha + 1) / 2 * torch.log1p(d2 / alpha)",
        ("tests/test_dec.py",)),
    Bug("dec-loss-reversed", "dcl_lib/methods/dec.py",
        "return (p * (torch.log(p.clamp_min(1e-30)) - torch.log(q.clamp_min(1e-30)))).sum(1).mean()",
        "return (q * (torch.log(q.clamp_min(1e-30)) - torch.log(p.clamp_min(1e-30)))).sum(1).mean()",
        ("tests/test_dec.py",)),
    Bug("dec-target-every-step", "dcl_lib/methods/dec.py",
        "        if step % cfg.update_interval == 0:  # the target",
        "        if True:  # the target",
        ("tests/test_dec.py",)),
    Bug("dec-resume-forgets-generator", "dcl_lib/methods/dec.py",
        'state.attach({"encoder": encoder, "layer": layer}, {"sgd": opt}, {"batches": g}, hist)',
        'state.attach({"encoder": encoder, "layer": layer}, {"sgd": opt}, {}, hist)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    # -- the RNG in every method's resume --------------------------------------------------
    Bug("dcan-resume-forgets-generator", "dcl_lib/methods/dcan.py",
        '{"discriminator": opt_d, "autoencoder": opt}, {"draws": g}, hist)',
        '{"discriminator": opt_d, "autoencoder": opt}, {}, hist)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    Bug("depict-resume-forgets-generator", "dcl_lib/methods/depict.py",
        'state.attach({"net": net}, {"adam": opt}, {"batches": g}, hist)',
        'state.attach({"net": net}, {"adam": opt}, {}, hist)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    Bug("ganmm-resume-forgets-generator", "dcl_lib/methods/ganmm.py",
        '{"draws": g}, hist)\n    saved = state.restore()',
        '{}, hist)\n    saved = state.restore()',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    Bug("clustergan-resume-forgets-generator", "dcl_lib/methods/clustergan.py",
        '{"draws": g}, hist)\n    start = state.restore().get("step", 0)',
        '{}, hist)\n    start = state.restore().get("step", 0)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
    # -- VCAMI ---------------------------------------------------------------------------
    Bug("vcami-cmi-encodes-x-twice", "dcl_lib/methods/vcami.py",
        "(C, m, log_s2), (_, m2, log_s2_2) = nets.encode(x), nets.encode(x_aug)",
        "(C, m, log_s2), (_, m2, log_s2_2) = nets.encode(x), nets.encode(x)",
        ("tests/test_vcami.py",)),
    Bug("vcami-gmm-codes-detached", "dcl_lib/methods/vcami.py",
        'out["gmm"] = gmm_loss(log_p[:B].exp(), m[:B], log_s2[:B], nets.mu_k, nets.log_var_k)',
        'out["gmm"] = gmm_loss(log_p[:B].exp(), m[:B].detach(), log_s2[:B].detach(), nets.mu_k, '
        'nets.log_var_k)',
        ("tests/test_vcami.py",)),
    Bug("vcami-init-mixture-train-mode", "dcl_lib/methods/vcami.py",
        "    m, log_p = encode_eval(nets, X)\n    r = log_p.exp()",
        "    m, log_p = encode_all(nets, X)\n    r = log_p.exp()",
        ("tests/test_vcami.py",)),
    Bug("vcami-negative-shift-zero", "dcl_lib/methods/vcami.py",
        "offset = torch.randint(1, max(B, 2), (1,)",
        "offset = torch.randint(0, max(B, 2), (1,)",
        ("tests/test_vcami.py",)),
    Bug("vcami-resume-forgets-generator", "dcl_lib/methods/vcami.py",
        'state.attach({"vcami": nets}, {"vcami": opt}, {"draws": g}, hist)',
        'state.attach({"vcami": nets}, {"vcami": opt}, {}, hist)',
        ("tests/test_resume.py::test_budget_stops_at_every_safe_point_and_resumes_exactly",)),
]


def _copy_checkout(dst: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                           capture_output=True,
                           check=True).stdout.decode().split("\0")
    for f in filter(None, files):
        src = ROOT / f
        if src.is_file():
            (dst / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / f)


def run_bug(bug: Bug, copy: Path) -> dict:
    target = copy / bug.path
    original = target.read_text()
    if original.count(bug.old) != 1:
        return {"bug": bug.name, "status": f"not applicable: the text occurs "
                                           f"{original.count(bug.old)} times in {bug.path}"}
    target.write_text(original.replace(bug.old, bug.new))
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", DCL_PROGRESS="0",
               PYTHONPATH=str(copy))
    t0 = time.perf_counter()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
                            *bug.tests], cwd=copy, env=env, capture_output=True, text=True,
                           timeout=900)
    finally:
        target.write_text(original)
    failed = [line.split(" ")[1] for line in r.stdout.splitlines() if line.startswith("FAILED")]
    return {"bug": bug.name, "caught": r.returncode != 0, "by": failed[:1],
            "seconds": round(time.perf_counter() - t0, 1),
            **({} if r.returncode in (0, 1) else {"pytest_exit": r.returncode})}


def main(argv: list[str]) -> int:
    chosen = [b for b in BUGS if not argv or any(b.name.startswith(a) for a in argv)]
    out = []
    with tempfile.TemporaryDirectory(prefix="dcl-bugs-") as tmp:
        copy = Path(tmp)
        _copy_checkout(copy)
        for bug in chosen:
            row = run_bug(bug, copy)
            out.append(row)
            mark = "caught " if row.get("caught") else "MISSED " if "caught" in row else "SKIPPED"
            print(f"{mark} {bug.name:42s} {' '.join(row.get('by', []))} "
                  f"{row.get('status', '')}{row.get('seconds', '')} s", flush=True)
    caught = sum(bool(r.get("caught")) for r in out)
    print(f"{caught} of {len(out)} injected bugs caught")
    if not argv:
        from dcl_lib._io import write_json
        import torch

        from dcl_lib.runner import git_commit
        from dcl_lib.train import device_name

        write_json(ROOT / "results" / "benchmarks" / "injected_bugs.json",
                   {"git_commit": git_commit(), "device": device_name(torch.device("cpu")),
                    "threads": 1, "caught": caught,
                    "total": len(out), "bugs": out})
    return 0 if caught == len(out) else 1


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main(sys.argv[1:]))
