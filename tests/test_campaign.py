"""The GPU campaign's code path, rehearsed on the CPU (--dry-run), and the collect
step's provenance checks."""
import json
import tarfile

import pytest

from dcl_lib import campaign
from dcl_lib.campaign import (TARGETS, VARIANTS, Job, check_provenance, collect, outstanding, plan,
                              run_campaign)
from dcl_lib.runner import git_commit


def test_plan_priority_and_outstanding(tmp_path):
    jobs = plan()
    tiers = [j.tier for j in jobs]
    assert tiers == sorted(tiers)
    assert [j.name for j in jobs if j.tier == 0] == ["depict-mnist-seed0", "clustergan-mnist-seed0",
                                                     "vcami-mnist-seed0", "ganmm-raw-mnist-seed0",
                                                     "depict-agglo-mnist-seed0",
                                                     "vcami-gpu-mnist-seed0",
                                                     "vcami-gpu-lc8-mnist-seed0",
                                                     "vcami-gpu-b512-mnist-seed0",
                                                     "vcami-gpu-lr3-mnist-seed0",
                                                     "vcami-gpu-aa-mnist-seed0",
                                                     "vcami-gpu-ew3-mnist-seed0",
                                                     "vcami-gpu-aa-mild-mnist-seed0",
                                                     "vcami-gpu-aa-lc2-mnist-seed0",
                                                     "vcami-gpu-aa-oc50-mnist-seed0",
                                                     "vcami-gpu-aa-mild-oc50-mnist-seed0",
                                                     "vcami-gpu-aa-wide-mnist-seed0",
                                                     "vcami-gpu-aa-b512-mnist-seed0",
                                                     "vcami-gpu-aa-lr3-mnist-seed0",
                                                     "vcami-gpu-aa-cmi-mnist-seed0"]
    # erasing was planned (VARIANTS) and dropped after the probe: no longer owed
    assert "vcami-gpu-aa-erase8" in VARIANTS and "vcami-gpu-aa-erase8" not in TARGETS
    # a VCAMI variant's fields reach its command, its name is its target's
    aa = next(j for j in jobs if j.name == "vcami-gpu-aa-mnist-seed0")
    assert (aa.method, aa.tag, aa.sets, aa.target) == ("vcami", "gpu-aa", (("views", "aug-aug"),),
                                                       "vcami-gpu-aa")
    mild = next(j for j in jobs if j.name == "vcami-gpu-aa-mild-mnist-seed0")
    assert dict(mild.sets) == {"views": "aug-aug", "rotate": 10.0, "zoom": 0.1, "shear": 5.0,
                               "translate": 2.0} and mild.tag == "gpu-aa-mild"
    oc = next(j for j in jobs if j.name == "vcami-gpu-aa-mild-oc50-mnist-seed0")
    assert dict(oc.sets) == {**dict(mild.sets), "overcluster": 50} and oc.tag == "gpu-aa-mild-oc50"
    assert {j.n for j in jobs if j.kind == "bench"} == {100_000, 1_000_000}
    # DEPICT's USPS starts as the official code starts it: from the agglomerative partition
    usps = [j for j in jobs if j.dataset == "usps"]
    assert [(j.method, j.tag, j.tier) for j in usps] == [("depict", "agglo", 3)]
    assert ("init", "agglomerative") in usps[0].sets
    (tmp_path / "depict").mkdir()
    (tmp_path / "depict" / "mnist-all-full-seed0.json").write_text("{}")
    names = [j.name for j in outstanding(tmp_path)]
    assert "depict-mnist-seed0" not in names and "clustergan-mnist-seed0" in names
    # a variant has its own file: the embedded GANMM's results do not stand in for it
    raw = next(j for j in jobs if j.name == "ganmm-raw-mnist-seed0")
    assert raw.method == "ganmm" and raw.result_path(tmp_path).name == "mnist-all-full-seed0-raw.json"
    (tmp_path / "ganmm").mkdir()
    (tmp_path / "ganmm" / "mnist-all-full-seed0.json").write_text("{}")
    assert "ganmm-raw-mnist-seed0" in [j.name for j in outstanding(tmp_path)]


def test_a_variant_job_sets_its_fields_and_tag():
    from pathlib import Path
    from dcl_lib.campaign import _command
    raw = next(j for j in plan() if j.name == "ganmm-raw-mnist-seed0")
    cmd = _command(raw, Path("/w"), 300, dry=False)
    assert cmd[cmd.index("--tag") + 1] == "raw" and "variant='raw'" in cmd
    dry = _command(raw, Path("/w"), 300, dry=True)
    assert dry[dry.index("--tag") + 1] == "raw-dry-mnist" and "variant='raw'" in dry
    assert "raw_hidden=16" in dry  # the tiny settings of its own DRY entry
    agglo = next(j for j in plan() if j.name == "depict-agglo-mnist-seed0")
    dry = _command(agglo, Path("/w"), 300, dry=True)
    assert "init='agglomerative'" in dry and "channels=4" in dry  # its method's DRY entry


@pytest.mark.skipif(git_commit().endswith("+dirty"), reason="collect refuses results of a dirty tree")
def test_dry_run_then_collect(tmp_path):
    jobs = [j for j in plan() if j.name in ("depict-mnist-seed0", "clustergan-mnist-seed0",
                                            "vcami-mnist-seed0")]
    jobs.append(Job("bench", "gmm-em-n100000", 1, n=100_000))
    # The window is generous: the dry runs take about 30 s on an idle 2-core machine but
    # several times that on a loaded CI runner, and each finishes as soon as its tiny
    # schedule is done (the window only caps them).  The kill path has its own test.
    summary = run_campaign(tmp_path / "out", budget_s=300, parallel=2, dry_run=True, jobs=jobs)
    files = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert files == ["campaign-1.tar", "summary.json"] and len(files) <= 8
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert [r["status"] for r in summary["runs"]] == ["done"] * 4, summary
    assert all(r.get("acc", 1) > 0 for r in summary["runs"])
    with tarfile.open(tmp_path / "out" / "campaign-1.tar") as tar:
        names = tar.getnames()
    assert any(n.endswith("-dry-mnist.pt") for n in names) and any(n.startswith("logs/") for n in names)
    results = tmp_path / "results"
    report = collect(tmp_path / "out", results)
    assert not report["refused"], report
    assert len([f for f in report["copied"] if f.endswith(".json")]) == 4
    # a dry run is a variant (its tag): the tree keeps its JSON, not its export
    assert not (results / "depict" / "digits-all-full-seed0-dry-mnist.pt").exists()
    rec = json.loads((results / "depict" / "digits-all-full-seed0-dry-mnist.json").read_text())
    assert rec["checkpoint"] is None and rec["checkpoint_dropped"]["name"].endswith(".pt")
    assert any("depict/digits-all-full-seed0-dry-mnist.pt" in d for d in report["dropped"])
    again = collect(tmp_path / "out", results)  # the same files again: duplicates
    assert not again["copied"] and all("exists already" in r for r in again["refused"])


def test_a_run_past_the_window_is_killed_and_the_rest_not_started(tmp_path, monkeypatch):
    import sys
    monkeypatch.setattr(campaign, "_command",
                        lambda job, work, left, dry: [sys.executable, "-c", "import time; time.sleep(120)"])
    jobs = [j for j in plan() if j.name in ("depict-mnist-seed0", "clustergan-mnist-seed0")]
    summary = run_campaign(tmp_path / "out", budget_s=12, parallel=1, dry_run=True, jobs=jobs)
    assert summary["wall_s"] < 60, summary
    assert [r["status"] for r in summary["runs"]] == ["killed at the window's end"]
    assert summary["runs"][0]["wall_s"] < 15 and "log_tail" in summary["runs"][0]
    assert summary["not_started"] == ["clustergan-mnist-seed0"]


def test_provenance_refuses_dirty_unknown_and_unparsable():
    sha = git_commit().split("+")[0]
    good = {"git_commit": sha, "device": "cpu", "command":
            "python -m dcl_lib run kmeans --dataset digits --profile quick --seed 0 --split all"}
    assert check_provenance(good, "g") == []
    assert "dirty tree" in check_provenance({**good, "git_commit": sha + "+dirty"}, "d")[0]
    assert "not in this repository" in check_provenance({**good, "git_commit": "0" * 40}, "u")[0]
    assert "no device" in check_provenance({**good, "device": ""}, "n")[0]
    bad = {**good, "command": good["command"] + " --set n_init=2.5"}
    assert "today's CLI refuses" in check_provenance(bad, "c")[0]
    old = {**good, "command": good["command"].replace("kmeans", "nosuch")}
    assert "unknown method" in check_provenance(old, "m")[0]


def test_prepare_refuses_a_dirty_tree(monkeypatch):
    class R:
        stdout = " M dcl_lib/train.py\n"
        returncode = 0
    monkeypatch.setattr(campaign, "_git", lambda *a: R())
    with pytest.raises(ValueError, match="commit first"):
        campaign.prepare()


def _result(path, stopped_at=None, created="2026-11-26T00:00:00"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"stopped_at": stopped_at, "created": created}))


def test_a_run_cut_by_its_budget_is_outstanding_in_its_place(tmp_path):
    _result(tmp_path / "depict" / "mnist-all-full-seed0.json", stopped_at=208)
    _result(tmp_path / "clustergan" / "mnist-all-full-seed0.json")  # complete
    _result(tmp_path / "vcami" / "mnist-all-full-seed0.json")  # complete
    _result(tmp_path / "ganmm" / "mnist-all-full-seed0-raw.json")  # complete
    _result(tmp_path / "depict" / "mnist-all-full-seed0-agglo.json")  # complete
    for method, _, tag in campaign.VARIANTS.values():  # every VCAMI variant's seed 0: complete
        if method == "vcami":
            _result(tmp_path / "vcami" / f"mnist-all-full-seed0-{tag}.json")
    names = [j.name for j in outstanding(tmp_path)]
    assert "clustergan-mnist-seed0" not in names and "vcami-mnist-seed0" not in names
    assert names[0] == "depict-mnist-seed0" and names[1] == "gmm-em-n100000"


def test_select_keeps_the_order_given_and_refuses_unknown_or_committed_jobs(tmp_path):
    from dcl_lib.campaign import select
    names = ["vcami-gpu-mnist-seed1", "ganmm-raw-mnist-seed0", "vcami-gpu-mnist-seed0"]
    jobs = select(names, tmp_path)
    assert [j.name for j in jobs] == names
    gpu = jobs[0]
    assert (gpu.method, gpu.tag, gpu.sets) == ("vcami", "gpu", ())
    assert gpu.result_path(tmp_path).name == "mnist-all-full-seed1-gpu.json"
    with pytest.raises(ValueError, match="not in the plan: vcami-mnist-seed7"):
        select(["vcami-mnist-seed7"], tmp_path)
    _result(tmp_path / "ganmm" / "mnist-all-full-seed0-raw.json")  # complete
    with pytest.raises(ValueError, match="committed already"):
        select(names, tmp_path)


def test_prepare_names_the_selected_jobs_in_the_device_command(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    for folder in ("MNIST/raw", "USPS", "FashionMNIST/raw"):
        (mirror / folder).mkdir(parents=True)
        (mirror / folder / "a.gz").write_bytes(b"x" * 100)
    monkeypatch.setenv("DCL_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(campaign, "ROOT", tmp_path / "repo")
    monkeypatch.setattr(campaign, "tree_bytes", lambda: 1000)
    monkeypatch.setattr(campaign, "outstanding", lambda results=None: [
        j for j in plan() if j.name in ("vcami-gpu-mnist-seed0", "depict-usps-seed0")])

    class R:
        stdout, returncode = "", 0
    monkeypatch.setattr(campaign, "_git", lambda *a: R())
    cmd = campaign.prepare(only=["vcami-gpu-mnist-seed0"], parallel=4)
    assert cmd.splitlines()[-1].endswith("--parallel 4 --only vcami-gpu-mnist-seed0")
    assert "staged: mnist;" in cmd  # only what the selected job needs
    assert not (tmp_path / "repo" / ".device_data" / "USPS").exists()


@pytest.mark.skipif(git_commit().endswith("+dirty"), reason="collect checks the commit")
def test_collect_replaces_a_cut_run_and_refuses_to_replace_a_complete_one(tmp_path):
    sha = git_commit()
    new = {"git_commit": sha, "device": "NVIDIA H200", "created": "2026-11-27T00:00:00",
           "stopped_at": None, "command": "python -m dcl_lib run kmeans --dataset digits "
                                          "--profile full --seed 0 --split all"}
    src = tmp_path / "src" / "kmeans" / "digits-all-full-seed0.json"
    src.parent.mkdir(parents=True)
    src.write_text(json.dumps(new))
    dst = tmp_path / "results" / "kmeans" / "digits-all-full-seed0.json"
    _result(dst, stopped_at=100)
    report = collect(tmp_path / "src", tmp_path / "results")
    assert report["copied"] == ["kmeans/digits-all-full-seed0.json"], report
    assert json.loads(dst.read_text())["stopped_at"] is None
    again = collect(tmp_path / "src", tmp_path / "results")  # now complete: a duplicate
    assert not again["copied"] and "exists already" in again["refused"][0]


def test_prepare_stages_only_what_fits_under_the_travel_limit(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    for folder, size in (("MNIST/raw", 3000), ("USPS", 2000), ("FashionMNIST/raw", 5000)):
        (mirror / folder).mkdir(parents=True)
        (mirror / folder / "a.gz").write_bytes(b"x" * size)
    root = tmp_path / "repo"
    (root / ".device_data" / "FashionMNIST" / "raw").mkdir(parents=True)  # a previous window's
    monkeypatch.setenv("DCL_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(campaign, "ROOT", root)
    monkeypatch.setattr(campaign, "tree_bytes", lambda: 1000)

    class R:
        stdout, returncode = "", 0
    monkeypatch.setattr(campaign, "_git", lambda *a: R())
    cmd = campaign.prepare(("mnist", "fashion-mnist", "usps"), limit=2**20 + 6500)
    assert (root / ".device_data" / "MNIST" / "raw" / "a.gz").exists()
    assert (root / ".device_data" / "USPS" / "a.gz").exists()
    assert not (root / ".device_data" / "FashionMNIST" / "raw").exists()
    assert "left behind" in cmd and "fashion-mnist" in cmd.splitlines()[0]
    assert "python -m dcl_lib campaign" in cmd.splitlines()[-1]


def test_prepare_parks_the_checkpoints_when_they_and_the_data_do_not_fit(tmp_path, monkeypatch):
    mirror = tmp_path / "mirror"
    (mirror / "MNIST/raw").mkdir(parents=True)
    (mirror / "MNIST/raw" / "a.gz").write_bytes(b"x" * 3000)
    root = tmp_path / "repo"
    ck, js = root / "results" / "m" / "a.pt", root / "results" / "m" / "a.json"
    ck.parent.mkdir(parents=True)
    ck.write_bytes(b"w" * 5000)
    js.write_text("{}")
    monkeypatch.setenv("DCL_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(campaign, "ROOT", root)
    monkeypatch.setattr(campaign, "tree_bytes", lambda: 1000 + (5000 if ck.exists() else 0))

    class R:
        returncode = 0

        def __init__(self, args):
            self.stdout = "results/m/a.json\0results/m/a.pt\0" if args[0] == "ls-files" else ""
    monkeypatch.setattr(campaign, "_git", lambda *a: R(a))
    cmd = campaign.prepare(("mnist",), limit=2**20 + 6000)  # 1000 + 5000 + 3000 do not fit
    assert not ck.exists() and (root / ".device_parked" / "results" / "m" / "a.pt").exists()
    assert js.exists()  # only checkpoints are parked
    assert (root / ".device_data" / "MNIST" / "raw" / "a.gz").exists()
    assert "parked 1 committed checkpoints" in cmd and "left behind" not in cmd
    (tmp_path / "returned").mkdir()
    report = collect(tmp_path / "returned", root / "results")  # after the window
    assert report["restored"] == ["1 parked checkpoints"] and ck.read_bytes() == b"w" * 5000
    assert not (root / ".device_parked").exists()
    # room for both: nothing is parked
    cmd = campaign.prepare(("mnist",), limit=2**20 + 10_000)
    assert ck.exists() and "parked" not in cmd


def test_a_run_whose_archives_were_not_carried_is_not_started(tmp_path, monkeypatch):
    monkeypatch.setenv("DCL_DATA_MIRROR", str(tmp_path / "empty"))
    jobs = [Job("run", "depict-usps-seed0", 3, "depict", "usps", 0)]
    summary = run_campaign(tmp_path / "out", budget_s=30, jobs=jobs)
    assert summary["no_data"] == ["depict-usps-seed0"] and summary["runs"] == []


def test_the_commit_named_by_the_launcher_wins_over_git_metadata(monkeypatch):
    # on the device the copy's git metadata can describe another commit than its files
    monkeypatch.setenv("DCL_GIT_COMMIT", "a" * 40)
    assert git_commit() == "a" * 40
    monkeypatch.delenv("DCL_GIT_COMMIT")
    assert git_commit() != "a" * 40


def test_the_em_benchmark_is_outstanding_until_measured_with_today_s_chunks(tmp_path):
    from dcl_lib.campaign import _bench_chunk_rows

    (tmp_path / "benchmarks").mkdir()
    path = tmp_path / "benchmarks" / "gmm_em_cuda_n1000000.json"
    names = lambda: [j.name for j in outstanding(tmp_path) if j.kind == "bench"]  # noqa: E731
    assert "gmm-em-n1000000" in names()  # no result yet
    path.write_text(json.dumps({"chunk_rows": 524}))  # measured with the old, CPU-sized chunks
    assert "gmm-em-n1000000" in names()
    path.write_text(json.dumps({"chunk_rows": _bench_chunk_rows()}))
    assert "gmm-em-n1000000" not in names()
