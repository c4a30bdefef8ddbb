"""``refsnn nir export RUN_DIR OUT.nir`` / ``refsnn nir run GRAPH.nir INPUT.npz OUT.npz``: the NIR exchange.

``export`` writes the network of a run directory as a NIR graph (``nir.write``, HDF5, atomically):

* a ``refsnn train`` run (``config.json`` + ``checkpoint.npz``): the last checkpoint's network with
  BatchNorm folded into the convolutions, time step ``--dt`` (default 1e-3 s) and the time constants
  written for ``--discretisation`` (``auto`` = ``euler``, refsnn's LIF exactly); the run is rebuilt with
  :func:`refsnn.nas.trained.load_run`, so its dataset must be available (for the input shape);
* a ``refsnn ec`` run (``deployed.npz``, ``--best``: ``best_deployed.npz``): the deployed 1-bit RSNN,
  under EC's own ``exact`` discretisation (dt 0.5 ms).

Node mapping and metadata: :mod:`refsnn.nir.export`; parameter equations: :mod:`refsnn.nir.mapping`.

``run`` reads a NIR graph (:func:`refsnn.nir.reader.read_nir`: only the datasets the simulation uses,
within the read budget of :mod:`refsnn.io`) and ``INPUT.npz`` -- ``input`` (or one array per ``Input``
node, by name) of shape ``[T, B, *shape]``, float32 or float64, optionally initial states ``v/<node>``
/ ``i/<node>`` of shape ``[B, *shape]`` -- simulates it with refsnn's kernels
(:mod:`refsnn.nir.simulate`) and writes ``OUT.npz``: ``spikes/<node>``, ``v/<node>``, ``h/<node>``,
``i/<node>``, ``out/<node>`` per node, plus the discretisation used (``discretisation``, ``reset``,
``threshold``, ``dt``). ``--discretisation``, ``--reset``, ``--threshold`` and ``--dt`` override the
graph's metadata (``auto``: the metadata, else euler, hard, ``>``; ``dt`` has no default). Any other
array in ``INPUT.npz`` is an error; every problem with the graph is one error naming GRAPH.nir.

Without the optional ``nir`` package both actions fail with exit status 2 naming the extra
(``pip install 'refsnn[nir]'``).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn._checks import check_choice, check_float
from refsnn.commands.config import option
from refsnn.ec.deploy import from_deployed_arrays
from refsnn.io import atomic_savez, load_npz
from refsnn.nas.trained import load_run
from refsnn.nir import mapping
from refsnn.nir.export import ec_to_nir, network_to_nir, require_nir, to_nir_graph, write_nir
from refsnn.nir.reader import read_nir
from refsnn.nir.simulate import settings, simulate

__all__ = ["NIRConfig", "CONFIG", "export", "run", "main"]


@dataclass
class NIRConfig:
    """Options of ``refsnn nir``."""
    action: str = option(help="export: run directory -> NIR graph; run: simulate a NIR graph", positional=True,
                         choices=("export", "run"), metavar="ACTION")
    source: str = option(help="export: RUN_DIR of 'refsnn train' or 'refsnn ec'; run: GRAPH.nir",
                         positional=True, metavar="RUN_DIR|GRAPH.nir")
    target: str = option(help="export: OUT.nir; run: INPUT.npz", positional=True, metavar="OUT.nir|INPUT.npz")
    output: str | None = option(None, "run: OUT.npz", positional=True, metavar="OUT.npz")
    discretisation: str = option("auto", "export (train runs): euler | exact time constants; run: the "
                                 "discretisation (auto: the graph's metadata, else euler)",
                                 choices=("auto",) + mapping.METHODS)
    reset: str = option("auto", "run: reset after a spike (auto: the graph's metadata, else NIR's hard reset)",
                        choices=("auto",) + mapping.RESETS)
    threshold: str = option("auto", "run: spike condition (auto: the graph's metadata, else NIR's '>')",
                            choices=("auto",) + mapping.THRESHOLDS)
    dt: float | None = option(None, "export (train runs): time step written to the graph (default 1e-3); run: "
                                    "override the graph's dt")
    best: bool = option(False, "export (ec runs): best_deployed.npz instead of deployed.npz")

    def __post_init__(self):
        check_choice("action", self.action, ("export", "run"))
        check_choice("discretisation", self.discretisation, ("auto",) + mapping.METHODS)
        check_choice("reset", self.reset, ("auto",) + mapping.RESETS)
        check_choice("threshold", self.threshold, ("auto",) + mapping.THRESHOLDS)
        if self.dt is not None:
            check_float("dt", self.dt, lo=0.0, lo_open=True)
        if self.action == "run" and self.output is None:
            raise ValueError("output: 'refsnn nir run' needs GRAPH.nir INPUT.npz OUT.npz")
        if self.action == "export" and self.output is not None:
            raise ValueError(f"output: 'refsnn nir export' takes RUN_DIR OUT.nir, got an extra {self.output!r}")
        if self.action == "export" and (self.reset != "auto" or self.threshold != "auto"):
            raise ValueError("reset: --reset/--threshold apply to 'run'; an export records the run's own")


CONFIG = NIRConfig


def _auto(v):
    return None if v == "auto" else v


def export(cfg: NIRConfig) -> dict:
    """Write ``cfg.target`` from the run directory ``cfg.source``; returns the graph's dict form."""
    require_nir()
    run_dir = Path(cfg.source)
    if not run_dir.is_dir():
        raise FileNotFoundError(f"source: no run directory {run_dir}")
    deployed = run_dir / ("best_deployed.npz" if cfg.best else "deployed.npz")
    if deployed.is_file():
        if cfg.discretisation == "euler" or cfg.dt is not None:
            raise ValueError("discretisation: an EC network is exported under its own exact discretisation "
                             "(dt 0.5 ms); --discretisation euler and --dt apply to train runs")
        conf, params = from_deployed_arrays(load_npz(deployed))
        desc = ec_to_nir(conf, params, extra_metadata={"run_dir": str(run_dir), "file": deployed.name})
    elif cfg.best:
        raise FileNotFoundError(f"source: no {deployed.name} in {run_dir} (--best is for 'refsnn ec' runs)")
    elif (run_dir / "checkpoint.npz").is_file() and (run_dir / "config.json").is_file():
        net, ds, tcfg = load_run(run_dir)
        desc = network_to_nir(net, tuple(ds.input_shape), dt=1e-3 if cfg.dt is None else cfg.dt,
                              method=_auto(cfg.discretisation) or "euler",
                              extra_metadata={"run_dir": str(run_dir), "architecture": str(tcfg.arch),
                                              "timesteps": int(tcfg.timesteps), "neuron_preset": tcfg.neuron,
                                              "data": tcfg.data})
    else:
        raise FileNotFoundError(f"source: {run_dir} holds neither an 'refsnn ec' deployed.npz nor an "
                                "'refsnn train' config.json + checkpoint.npz")
    write_nir(cfg.target, to_nir_graph(desc))
    return desc


def run(cfg: NIRConfig) -> dict[str, np.ndarray]:
    """Simulate ``cfg.source`` on ``cfg.target``'s input; writes and returns ``cfg.output``'s arrays. Every
    problem with the graph is a ``ValueError``/``TypeError`` naming GRAPH.nir, with the input INPUT.npz."""
    require_nir()
    src, target = Path(cfg.source), Path(cfg.target)
    if not src.is_file():
        raise FileNotFoundError(f"source: no NIR file {src}")
    graph = read_nir(src)               # only what the simulation uses, within the read budget
    arrays = load_npz(target)
    other = sorted(k for k in arrays if "/" in k and not k.startswith(("v/", "i/")))
    if other:
        raise ValueError(f"{target}: arrays {other} are neither inputs (<Input node> or 'input') nor initial "
                         "states (v/<node>, i/<node>)")
    inputs = {k: v for k, v in arrays.items() if "/" not in k}
    init = {k: v for k, v in arrays.items() if k.startswith(("v/", "i/"))}
    kw = dict(method=_auto(cfg.discretisation), reset=_auto(cfg.reset), threshold=_auto(cfg.threshold), dt=cfg.dt)
    try:
        st = settings(graph, **kw)
        out = simulate(graph, inputs, initial_state=init, **kw)
    except (ValueError, TypeError) as e:
        about_input = str(e).startswith(("inputs", "initial_state"))
        raise type(e)(f"{target if about_input else src}: {e}") from None
    out.update({"discretisation": np.array(st["method"]), "reset": np.array(st["reset"]),
                "threshold": np.array(st["threshold"]), "dt": np.array(st["dt"])})
    atomic_savez(cfg.output, out)
    return out


def main(cfg: NIRConfig) -> int:
    if cfg.action == "export":
        desc = export(cfg)
        kinds = {}
        for n in desc["nodes"].values():
            kinds[n["type"]] = kinds.get(n["type"], 0) + 1
        m = desc["metadata"]
        print(f"wrote {cfg.target}: {len(desc['nodes'])} nodes ({', '.join(f'{v} {k}' for k, v in kinds.items())}), "
              f"dt {m['dt']:g} {m['time_unit']}, {m['discretisation']} discretisation, reset {m['reset']}, "
              f"threshold '{m['threshold']}'")
    else:
        out = run(cfg)
        n_sp = {k[7:]: int(v.sum()) for k, v in out.items() if k.startswith("spikes/")}
        print(f"wrote {cfg.output}: {str(out['discretisation'])} discretisation, dt {float(out['dt']):g}, reset "
              f"{str(out['reset'])}, threshold '{str(out['threshold'])}'; spikes per node: "
              + (", ".join(f"{k} {v}" for k, v in n_sp.items()) or "none"))
    return 0
