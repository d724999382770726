"""Loop helpers shared by every training method: plain functions and small objects,
not a framework.  Each method writes its own loop (the loop is what the book teaches)
from these parts:

* the device, seeding and seeded ``torch.Generator`` s on the training device;
* :func:`make_adam` (fused kernels on CUDA), minibatch index streams drawn on the
  device (:func:`minibatches`, :func:`random_batch`), batched no-grad inference
  (:func:`batched`) and :func:`eval_mode`;
* :class:`History` (standard keys ``step``, ``seconds``, ``acc``, ``loss/<name>``)
  and :class:`LossWindow`, which carries **the one NaN/inf rule**: losses stay
  tensors on the device inside a logging window (an epoch, or the steps between two
  evaluations), and at the end of each window their means are computed with one
  host synchronisation and checked; a non-finite mean stops training with
  :class:`NonFiniteLossError` naming the loss, the step, the window and what to try;
* :class:`TrainState`: an atomic, periodic training state (networks, optimisers,
  every generator's state, progress, history) for an exact resume, separate from
  the compact weight export of :func:`compact_state`;
* progress bars, atomic checkpoints, compact (half / int8) weights.
"""
from __future__ import annotations

import contextlib
import hashlib
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

import numpy as np
import torch

from ._io import atomic_path

__all__ = [
    "cosine_lr",
    "set_lr",
    "CONV_EVAL_BATCH",
    "INT8_MIN_NUMEL",
    "History",
    "LossWindow",
    "NonFiniteLossError",
    "TrainState",
    "TrainStateError",
    "batched",
    "check_finite",
    "compact_state",
    "device_name",
    "eval_mode",
    "get_device",
    "load_checkpoint",
    "load_compact_state",
    "make_adam",
    "minibatches",
    "progress",
    "on_device",
    "random_batch",
    "rng_state",
    "save_checkpoint",
    "seed_everything",
    "seeded_generator",
    "set_rng_state",
    "SHARED_FROM",
    "tensors_sha256",
]


# ---------------------------------------------------------------------------
# Device, seeds, generators
# ---------------------------------------------------------------------------

def get_device(device: str | torch.device | None = None) -> torch.device:
    """The device to use: the one asked for, else ``$DCL_DEVICE``, else CUDA when
    available, else CPU."""
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return dev
    env = os.environ.get("DCL_DEVICE")
    if env:
        return get_device(env)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def device_name(device: torch.device) -> str:
    """Human-readable device name for results files."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return f"cpu ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"


def on_device(module: torch.nn.Module, device: str | torch.device) -> torch.nn.Module:
    """``module`` moved to ``device``; on a CPU its 4-D (convolution) weights are stored
    channels-last (NHWC), the layout in which oneDNN's convolutions and max pooling run
    fastest there.  Measured on 2 AVX2 cores, each alone: VCAMI's encoder evaluates MNIST
    about 1.9x as fast, 30 ClusterGAN quick iterations run about 1.3x as fast (chapter 05's
    training cell under nbval, with the rest of the suite: 323 s before, 294 s after).
    The outputs are the same up to float rounding; a convolution's output follows its
    weight's layout, so callers need not convert their images.  On a GPU the layout is
    left as it is."""
    device = torch.device(device)
    module = module.to(device)
    return module.to(memory_format=torch.channels_last) if device.type == "cpu" else module


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch (CPU and CUDA); return a CPU torch Generator.

    Also asks cuDNN for deterministic kernels.  On CPU the same seed then
    gives the same result; on GPU some kernels stay non-deterministic.
    """
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    return seeded_generator(seed)


def seeded_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    Random numbers drawn with it are made where the training runs, so on a GPU
    no step waits for a host-to-device copy of an index or noise tensor.
    """
    return torch.Generator(device=torch.device(device)).manual_seed(int(seed))


# ---------------------------------------------------------------------------
# Optimiser, minibatches, inference
# ---------------------------------------------------------------------------

def make_adam(params: Iterable[torch.nn.Parameter], lr: float, device: str | torch.device,
              betas: tuple[float, float] = (0.9, 0.999), **kw) -> torch.optim.Adam:
    """Adam, with the fused kernel on CUDA (one launch per step instead of one per tensor).

    On CPU the default implementation is used, so CPU results do not depend on it."""
    fused = {"fused": True} if torch.device(device).type == "cuda" else {}
    return torch.optim.Adam(params, lr=lr, betas=betas, **fused, **kw)


def cosine_lr(base: float, step: int, total: int) -> float:
    """The learning rate at step ``step`` (0-based) of ``total``: ``base`` at step 0,
    falling as half a cosine towards 0 at step ``total``.  A pure function of the step,
    so a resumed run continues the same schedule without a scheduler's state."""
    if total <= 0 or not 0 <= step <= total:
        raise ValueError(f"cosine_lr needs 0 <= step <= total and total > 0, got step {step}, "
                         f"total {total}")
    return base * 0.5 * (1.0 + math.cos(math.pi * step / total))


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Set every parameter group's learning rate."""
    for group in opt.param_groups:
        group["lr"] = lr


def minibatches(n: int, batch_size: int, g: torch.Generator) -> list[torch.Tensor]:
    """One epoch of minibatch indices: a permutation of ``range(n)`` drawn with ``g`` on
    its device, cut into consecutive pieces of ``batch_size`` (the last one shorter)."""
    perm = torch.randperm(n, generator=g, device=g.device)
    return [perm[s:s + batch_size] for s in range(0, n, batch_size)]


def random_batch(n: int, batch_size: int, g: torch.Generator) -> torch.Tensor:
    """``batch_size`` indices drawn uniformly with replacement (GAN critic steps)."""
    return torch.randint(n, (batch_size,), generator=g, device=g.device)


@contextlib.contextmanager
def eval_mode(*nets: torch.nn.Module | None) -> Iterator[None]:
    """Put the networks in evaluation mode for the block; restore each one's mode after.

    ``None`` entries are ignored, so optional networks can be passed as they are."""
    modes = [(m, [s.training for s in m.modules()]) for m in nets if m is not None]
    for m, _ in modes:
        m.eval()
    try:
        yield
    finally:
        for m, flags in modes:
            for sub, flag in zip(m.modules(), flags):
                sub.training = flag


# Batches for evaluating a convolutional network on a CPU: the largest activation of the
# book's encoders at 256 images (256 x 32 x 28 x 28 floats, 25.7 MB) stays below glibc's
# 32 MiB mmap threshold, so each batch reuses the memory the last one freed (dcl_lib._alloc)
CONV_EVAL_BATCH = 256


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], Any], X: torch.Tensor, batch_size: int = 2048,
            nets: Iterable[torch.nn.Module | None] = ()) -> Any:
    """``fn`` applied to ``X`` in slices of ``batch_size`` rows without gradients, the
    outputs concatenated; ``fn`` may return a tensor or a tuple of tensors.

    ``nets`` are held in evaluation mode for the call (and restored after)."""
    with eval_mode(*nets):
        outs = [fn(X[s:s + batch_size]) for s in range(0, len(X), batch_size)]
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def progress(iterable: Iterable | None = None, total: int | None = None, desc: str = "",
             verbose: bool = True, **kw):
    """A tqdm progress bar, shown when ``verbose`` and ``$DCL_PROGRESS`` is not ``0``."""
    from tqdm import tqdm  # the text bar: works in terminals and notebooks without widgets

    disable = not verbose or os.environ.get("DCL_PROGRESS", "1") == "0"
    return tqdm(iterable, total=total, desc=desc, disable=disable, leave=False,
                dynamic_ncols=True, **kw)


# ---------------------------------------------------------------------------
# The NaN/inf rule, and the history of a run
# ---------------------------------------------------------------------------

class NonFiniteLossError(FloatingPointError):
    """A training loss became NaN or infinite."""


def check_finite(value: torch.Tensor | float, name: str, step: int,
                 hint: str = "lower the learning rate or check the input scaling",
                 where: str | None = None, unit: str = "step") -> None:
    """Stop training as soon as a loss is NaN/inf, saying which, when and what to try."""
    v = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if not math.isfinite(v):
        at = f" ({where})" if where else ""
        raise NonFiniteLossError(f"loss {name!r} became {v} at {unit} {step}{at}; {hint}.")


class CapturedStep:
    """A training step captured once as a CUDA graph and replayed ever after.

    Small networks on a GPU are launch-bound: one ClusterGAN iteration (five critic steps
    with their gradient penalties and one generator/encoder step) issues hundreds of
    kernel launches, and one CUDA graph replays them with one (measured on an H200:
    33 -> 10 ms per iteration at batch 64, ``benchmarks/clustergan_gpu_speed.py``).

    ``fn()`` returns a tuple of tensors, draws its random numbers from the default CUDA
    generator (graphs track its offsets) and steps optimisers made with
    ``capturable=True``.  The first ``warmup`` calls run eagerly on a side stream (as
    capture requires), the next one is captured and replayed, every later call
    replays.  The returned tensors are clones: the next replay overwrites the graph's.
    Anything restored into the networks or optimisers must be restored before the
    capture (the graph holds their memory addresses).
    """

    def __init__(self, fn: Callable[[], tuple[torch.Tensor, ...]], warmup: int = 3) -> None:
        self.fn, self.warmup, self.calls = fn, warmup, 0
        self.graph: torch.cuda.CUDAGraph | None = None
        self.outputs: tuple[torch.Tensor, ...] = ()

    def __call__(self) -> tuple[torch.Tensor, ...]:
        self.calls += 1
        if self.calls <= self.warmup:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                out = self.fn()
            torch.cuda.current_stream().wait_stream(side)
            return out
        if self.graph is None:
            self.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self.graph):  # records; runs nothing
                self.outputs = tuple(self.fn())
        self.graph.replay()
        return tuple(o.clone() for o in self.outputs)


class LossWindow:
    """Detached loss tensors of one logging window, averaged and checked at its end.

    ``add(critic=loss)`` keeps the tensor on its device (no host sync per step);
    ``means(step, hint)`` makes one sync, checks every mean with :func:`check_finite`
    and starts a new window.  ``weight`` gives a weighted mean (e.g. the batch size).
    ``unit="epoch"``: the window is one epoch (the error then names the epoch).
    """

    def __init__(self, unit: str = "step") -> None:
        self.unit = unit
        self._values: dict[str, list[torch.Tensor]] = {}
        self._weights: dict[str, list[float]] = {}
        self.first_step: int | None = None

    def add(self, step: int | None = None, weight: float = 1.0, **losses: torch.Tensor) -> None:
        if self.first_step is None:
            self.first_step = step
        for k, v in losses.items():
            self._values.setdefault(k, []).append(v.detach())
            self._weights.setdefault(k, []).append(float(weight))

    def means(self, step: int, hint: str = "lower the learning rate or check the input scaling"
              ) -> dict[str, float]:
        names = list(self._values)
        if not names:
            return {}
        stacked = torch.stack([torch.stack(self._values[k]).double().mul(
            torch.tensor(self._weights[k], dtype=torch.float64, device=self._values[k][0].device)
        ).sum() / sum(self._weights[k]) for k in names]).tolist()  # one host sync
        window = ("mean over the epoch's minibatches" if self.unit == "epoch"
                  else f"mean over steps {self.first_step}..{step}")
        for k, v in zip(names, stacked):
            check_finite(v, k, step, hint=hint, where=window, unit=self.unit)
        self.__init__(self.unit)
        return dict(zip(names, stacked))


class History:
    """What a training loop logs at each evaluation, as lists of scalars.

    Standard keys: ``step`` (the loop's own unit: epoch or generator step),
    ``seconds`` (training time so far, resumed runs included), ``acc`` (NaN when no
    labels are given), ``loss/<name>``; a method may log any other series (cluster
    sizes, a diagnostic).  ``stopped_at`` is the step at which a time budget cut
    the run (``None`` when it ran its schedule).
    """

    def __init__(self, y: torch.Tensor | np.ndarray | None = None) -> None:
        self.series: dict[str, list] = {"step": [], "seconds": [], "acc": []}
        self.scalars: dict[str, Any] = {"stopped_at": None}
        self._y = y
        self._t0 = time.perf_counter()

    # -- logging ---------------------------------------------------------
    def elapsed(self) -> float:
        return time.perf_counter() - self._t0

    def acc(self, labels) -> float:
        """ACC of ``labels`` against the evaluation labels, NaN without them."""
        if self._y is None:
            return float("nan")
        from .metrics import cluster_acc

        return cluster_acc(self._y, labels)

    def log(self, step: int, labels=None, losses: Mapping[str, float] | None = None,
            **series: Any) -> None:
        """Append one evaluation: ``labels`` give ``acc``, ``losses`` become ``loss/<name>``."""
        row = {"step": int(step), "seconds": self.elapsed(),
               "acc": self.acc(labels) if labels is not None else float("nan")}
        row.update({f"loss/{k}": float(v) for k, v in (losses or {}).items()})
        row.update(series)
        for k, v in row.items():
            self.series.setdefault(k, []).append(v)

    def last(self, key: str, default=None):
        s = self.series.get(key)
        return s[-1] if s else default

    def __getitem__(self, key: str):
        return self.series[key] if key in self.series else self.scalars[key]

    def __contains__(self, key: str) -> bool:
        return key in self.series or key in self.scalars

    # -- time to accuracy ---------------------------------------------------
    def time_to_acc(self, target: float) -> dict[str, float | int | None]:
        """The first evaluation whose ACC reached ``target``: its seconds and step
        (``None`` when never reached)."""
        for t, s, a in zip(self.series["seconds"], self.series["step"], self.series["acc"]):
            if a is not None and a >= target:
                return {"target": target, "seconds": t, "step": s}
        return {"target": target, "seconds": None, "step": None}

    # -- (de)serialisation ----------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {**self.series, **self.scalars}

    def load(self, d: Mapping[str, Any]) -> None:
        """Continue from a saved :meth:`to_dict` (a resumed run): the clock goes on from
        ``d["elapsed"]`` (else from the last logged ``seconds``)."""
        d = dict(d)
        elapsed = d.pop("elapsed", None)
        for k, v in d.items():
            if isinstance(v, list):
                self.series[k] = list(v)
            else:
                self.scalars[k] = v
        if elapsed is None and self.series["seconds"]:
            elapsed = self.series["seconds"][-1]
        if elapsed is not None:
            self._t0 = time.perf_counter() - float(elapsed)


# ---------------------------------------------------------------------------
# RNG states and checkpoints
# ---------------------------------------------------------------------------

def rng_state() -> dict[str, Any]:
    """Every global RNG state needed for an exact resume, in a weights_only-safe form."""
    version, internal, gauss_next = random.getstate()
    state = {
        "python": list(internal),
        "python_version": version,
        "python_gauss": gauss_next,
        "numpy": _numpy_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _numpy_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached": float(cached)}


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    random.setstate((state["python_version"], tuple(int(v) for v in state["python"]),
                     state["python_gauss"]))
    ns = state["numpy"]
    np.random.set_state((ns["name"], ns["keys"].numpy().astype(np.uint32), ns["pos"],
                         ns["has_gauss"], ns["cached"]))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write ``state`` atomically: to a temporary file, then rename.

    A run killed mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    with atomic_path(path, suffix=".tmp") as tmp:
        torch.save(state, tmp)
    return path


SHARED_FROM = "__shared_from__"


def tensors_sha256(state: dict[str, torch.Tensor]) -> str:
    """A hash of a dict of tensors: every key, dtype, shape and byte, in key order."""
    h = hashlib.sha256()
    for k in sorted(state):
        v = state[k].detach().cpu().contiguous()
        h.update(f"{k}|{v.dtype}|{tuple(v.shape)}|".encode())
        h.update(v.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu"
                    ) -> dict[str, Any]:
    """Load a checkpoint with ``weights_only=True`` (no arbitrary code runs).

    An entry ``{"__shared_from__": "../other/file.pt", "key": "encoder", "sha256": ...}``
    stands for entry ``key`` of that other checkpoint (a path relative to this one's
    folder): two committed runs that share a network store it once.  It is replaced by
    the entry it names, after checking its :func:`tensors_sha256`."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no checkpoint at {path}")
    ck = torch.load(path, map_location=map_location, weights_only=True)
    for k, v in list(ck.items()) if isinstance(ck, dict) else ():
        if isinstance(v, dict) and SHARED_FROM in v:
            source = path.parent / v[SHARED_FROM]
            if not source.exists():
                raise FileNotFoundError(f"{path.name}: its entry {k!r} is stored in {source}, "
                                        "which is missing")
            entry = torch.load(source, map_location=map_location, weights_only=True)[v["key"]]
            if tensors_sha256(entry) != v["sha256"]:
                raise ValueError(f"{path.name}: entry {k!r} of {source} is not the one it "
                                 "shared (its sha256 differs)")
            ck[k] = entry
    return ck


# ---------------------------------------------------------------------------
# The training state of a run: exact resume
# ---------------------------------------------------------------------------

class TrainStateError(ValueError):
    """A training state file that cannot be resumed from (truncated, foreign, other run)."""


class TrainState:
    """An atomic, periodic snapshot of a training run, for an exact resume.

    A method's loop calls :meth:`attach` once with its networks, optimisers and
    ``torch.Generator`` s and its :class:`History`, then :meth:`restore` (``{}`` for a
    fresh run, else the progress it saved: phase, step, any tensors) and, at each
    safe point (end of an epoch, an evaluation), :meth:`maybe_save` with its progress.
    The global RNGs (torch CPU/CUDA, numpy, python) are saved too.

    ``path=None`` disables saving (the default in notebooks); ``every_s`` is the
    minimum time between two saves (0: at every safe point); ``budget_s`` stops the
    run at the first safe point after that much training time (:meth:`out_of_time`),
    saving the state so that a later ``--resume`` continues it.  ``identity`` (method,
    config, seed, data) must match the file's on resume, or :class:`TrainStateError`
    says what differs.
    """

    FORMAT = "dcl-train-state/1"

    def __init__(self, path: str | os.PathLike | None = None, every_s: float = 60.0,
                 identity: Mapping[str, Any] | None = None, resume: bool = False,
                 budget_s: float | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self.every_s, self.identity, self.resume, self.budget_s = every_s, dict(identity or {}), \
            resume, budget_s
        self.resumed_from: dict[str, Any] | None = None
        self.stopped_at: int | None = None
        self.saves = 0
        self._objects: dict[str, dict] = {}
        self._history: History | None = None
        self._t_start = time.perf_counter()
        self._t_saved = self._t_start

    # -- what a loop calls ---------------------------------------------------
    def attach(self, modules: Mapping[str, torch.nn.Module | None] = (),
               optimizers: Mapping[str, torch.optim.Optimizer] = (),
               generators: Mapping[str, torch.Generator] = (), history: History | None = None
               ) -> "TrainState":
        self._objects = {"modules": {k: v for k, v in dict(modules).items() if v is not None},
                         "optimizers": dict(optimizers), "generators": dict(generators)}
        self._history = history
        return self

    def restore(self) -> dict[str, Any]:
        """Load the saved state into the attached objects; return its progress dict."""
        if not (self.resume and self.path is not None and self.path.exists()):
            return {}
        snap = self._read()
        objs = self._objects
        for group in ("modules", "optimizers", "generators"):
            missing = set(objs[group]) ^ set(snap[group])
            if missing:
                raise TrainStateError(f"{self.path}: the saved {group} {sorted(snap[group])} do not "
                                      f"match this run's {sorted(objs[group])}")
        for k, m in objs["modules"].items():
            m.load_state_dict(snap["modules"][k])
        for k, o in objs["optimizers"].items():
            o.load_state_dict(snap["optimizers"][k])
        for k, g in objs["generators"].items():
            g.set_state(snap["generators"][k])
        set_rng_state(snap["rng"])
        if self._history is not None:
            self._history.load({**snap["history"], "elapsed": snap["elapsed"]})
        # what the run says it resumed from: the progress' plain values (not its tensors,
        # nor the containers of them a loop may save, such as a best network's weights)
        self.resumed_from = {"elapsed": snap["elapsed"], **{
            k: v for k, v in snap["progress"].items()
            if v is None or isinstance(v, (bool, int, float, str))}}
        return dict(snap["progress"])

    def out_of_time(self) -> bool:
        """True once this process has trained for ``budget_s`` seconds."""
        return self.budget_s is not None and time.perf_counter() - self._t_start > self.budget_s

    def maybe_save(self, force: bool = False, **progress: Any) -> bool:
        """Save if ``every_s`` has passed since the last save (or ``force``)."""
        if self.path is None:
            return False
        now = time.perf_counter()
        if not force and now - self._t_saved < self.every_s:
            return False
        objs = self._objects
        h = self._history
        snap = {
            "format": self.FORMAT,
            "identity": self.identity,
            "modules": {k: m.state_dict() for k, m in objs.get("modules", {}).items()},
            "optimizers": {k: o.state_dict() for k, o in objs.get("optimizers", {}).items()},
            "generators": {k: g.get_state() for k, g in objs.get("generators", {}).items()},
            "rng": rng_state(),
            "progress": progress,
            "history": h.to_dict() if h is not None else {},
            "elapsed": h.elapsed() if h is not None else now - self._t_start,
        }
        save_checkpoint(self.path, snap)
        self._t_saved = time.perf_counter()
        self.saves += 1
        return True

    def checkpoint(self, at: int, final: bool = False, **progress: Any) -> bool:
        """At a safe point of the loop (step or epoch ``at``): save if due; return True
        when the time budget is spent and the run should stop here (the state is then
        saved for a resume).  ``final``: the schedule's last step, nothing to stop."""
        if not final and self.out_of_time():
            self.stop(at, **progress)
            return True
        self.maybe_save(**progress)
        return False

    def stop(self, at: int, **progress: Any) -> None:
        """The budget ran out at step ``at``: record it and save the state to resume from."""
        self.stopped_at = at
        if self._history is not None:
            self._history.scalars["stopped_at"] = at
        self.maybe_save(force=True, **progress)

    def remove(self) -> None:
        """Delete the state file (the run completed: its weights are exported)."""
        if self.path is not None and self.path.exists():
            self.path.unlink()

    # -- reading -----------------------------------------------------------
    def _read(self) -> dict[str, Any]:
        try:
            snap = torch.load(self.path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, not a torch file, unpickling refused
            raise TrainStateError(
                f"cannot read the training state {self.path} ({type(exc).__name__}: {exc}); it is "
                f"truncated or not a training state. Delete it to start the run over.") from exc
        if not isinstance(snap, dict) or snap.get("format") != self.FORMAT:
            fmt = snap.get("format") if isinstance(snap, dict) else type(snap).__name__
            raise TrainStateError(f"{self.path} is not a dcl training state (format {fmt!r}, expected "
                                  f"{self.FORMAT!r}). Delete it to start the run over.")
        saved = snap.get("identity", {})
        diff = [f"{k}: saved {saved.get(k)!r}, now {v!r}" for k, v in self.identity.items()
                if saved.get(k) != v]
        if diff:
            raise TrainStateError(f"{self.path} belongs to another run ({'; '.join(diff)}). "
                                  f"Delete it or run without --resume.")
        return snap


# ---------------------------------------------------------------------------
# Compact weights: the small exports committed beside results
# ---------------------------------------------------------------------------

_SCALE = ".int8_scale"  # suffix of the per-row scales of an int8-stored matrix
_SCALE12 = ".int12_scale"  # and of a 12-bit-stored one
# the runner exports' threshold: the large fully connected matrices as int8 rows,
# convolutions and biases in half precision
INT8_MIN_NUMEL = 65536


def _pack12(q: torch.Tensor) -> torch.Tensor:
    """Integers in [0, 4095] (any shape) as 12-bit pairs: three bytes per two values."""
    q = q.flatten().to(torch.int32)
    if q.numel() % 2:
        q = torch.cat([q, q.new_zeros(1)])
    a, b = q[0::2], q[1::2]
    return torch.stack([a & 0xFF, (a >> 8) | ((b & 0xF) << 4), b >> 4], 1).flatten().to(torch.uint8)


def _unpack12(p: torch.Tensor, numel: int) -> torch.Tensor:
    """The inverse of :func:`_pack12`: ``numel`` integers in [0, 4095] (int32)."""
    p = p.to(torch.int32).view(-1, 3)
    a = p[:, 0] | ((p[:, 1] & 0xF) << 8)
    b = (p[:, 1] >> 4) | (p[:, 2] << 4)
    return torch.stack([a, b], 1).flatten()[:numel]


def compact_state(module: torch.nn.Module, int8_min_numel: int | None = None,
                  int12_min_numel: int | None = None) -> dict[str, torch.Tensor]:
    """A module's weights for a small checkpoint.

    Floating tensors are stored in half precision; other buffers (BatchNorm's
    step counter) as they are.  With ``int8_min_numel``, every weight of at least
    that many entries and 2 or more dimensions is stored as int8 per output row
    (``round(w / s)``, ``s = max|w_row| / 127``) with its float32 scales under
    ``<key>.int8_scale``: a quarter of float32's size, each entry within s / 2.
    With ``int12_min_numel`` such weights are stored in 12 bits per entry instead
    (``s = max|w_row| / 2047``, packed three bytes to two entries, scales under
    ``<key>.int12_scale``): three quarters of half precision's size, sixteen times
    finer than int8 (for networks whose codes must stay put, such as the shared
    autoencoder's: int8 moved its runs' metrics by up to 1e-3, 12 bits by 1.5e-4).
    :func:`load_compact_state` undoes every form.
    """
    out = {}
    for k, v in module.state_dict().items():
        v = v.detach().cpu()
        big = v.is_floating_point() and v.dim() >= 2
        if int12_min_numel is not None and big and v.numel() >= int12_min_numel:
            out[k], out[k + _SCALE12] = _int12_rows(v)
        elif int8_min_numel is not None and big and v.numel() >= int8_min_numel:
            rows = v.float().flatten(1)
            scale = (rows.abs().amax(1, keepdim=True) / 127).clamp_min(torch.finfo(torch.float32).tiny)
            out[k] = torch.round(rows / scale).to(torch.int8).view_as(v)
            out[k + _SCALE] = scale.squeeze(1)
        else:
            out[k] = v.half() if v.is_floating_point() else v
    return out


def _int12_rows(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    rows = v.float().flatten(1)
    scale = (rows.abs().amax(1, keepdim=True) / 2047).clamp_min(torch.finfo(torch.float32).tiny)
    q = torch.round(rows / scale).clamp(-2047, 2047).to(torch.int32) + 2048
    return _pack12(q), scale.squeeze(1)


def load_compact_state(module: torch.nn.Module, state: dict[str, torch.Tensor],
                       strict: bool = True) -> torch.nn.Module:
    """Load :func:`compact_state` output into ``module`` (cast to its dtypes); returns it.
    ``strict=False``: keys of ``module`` that ``state`` lacks keep their values (a part
    left out of the export, such as training-only critics); the caller checks which."""
    ref = module.state_dict()
    full = {}
    for k, v in state.items():
        if k.endswith(_SCALE) or k.endswith(_SCALE12):
            continue
        if k + _SCALE in state:  # int8 rows times their scales
            v = (v.float().flatten(1) * state[k + _SCALE][:, None]).view_as(v)
        elif k + _SCALE12 in state:  # 12-bit rows times their scales
            shape = ref[k].shape
            q = _unpack12(v, shape.numel()).float() - 2048
            v = (q.view(shape[0], -1) * state[k + _SCALE12][:, None]).view(shape)
        full[k] = v.to(ref[k].dtype)
    module.load_state_dict(full, strict=strict)
    return module
