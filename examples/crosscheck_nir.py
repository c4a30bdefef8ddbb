"""Cross-simulator check through NIR: refsnn exports a Conv-LIF network and an EC
CubaLIF RSNN, every NIR-capable simulator installed here imports them, all run the same input, and the
spikes and outputs are compared with refsnn's reference simulation (``refsnn nir run``) under the
discretisation that simulator uses. Writes ``crosscheck_out/nir/`` (networks, graphs, ``table.md``,
``results.json``) and prints the Markdown table of docs/frameworks.md.

    python examples/crosscheck_nir.py [--out crosscheck_out/nir]

Networks (small and deterministic; a few seconds each):

* ``conv``: ``refsnn train --arch c8-p-f32 --timesteps 8`` for 1 epoch on 512 mnist5k images (preset
  ``msenas``: hard reset to 0, fire on ``>``, ``r = 1``), exported with ``--dt 1e-4`` (snnTorch's
  importer assumes ``dt = 1e-4`` whatever the graph says; SpikingJelly's default). Input: 16 test
  images, direct encoding (the same image at each of the 8 steps).
* ``ec``: ``refsnn ec`` for 2 generations (64 neurons, Hopper-v5), its ``deployed.npz`` exported
  (``LI`` synapse + ``LIF`` membrane + ``LI`` rate, exact discretisation, dt 0.5 ms; module
  ``refsnn.nir.export``). Input: 4 environment steps of normalised observations ``3 N(0, 1)``, each held
  for 33 substeps, 4 samples; initial state 0 everywhere (refsnn's runner default; EC itself draws
  ``v0`` at random, which no importer can be told).

Two graphs per network: ``full`` (the graph's own output: logits / readout) and ``spikes`` (the same
graph truncated after the first spiking population, ``lif1`` / ``neurons``, so that every simulator
returns its spikes). Columns: spike mismatches over all ``T x B x neurons`` values of the ``spikes``
graph, the first step at which a spike differs, the largest output difference of the ``full`` graph
and the first step at which it exceeds ``1e-5 + 1e-4 |ref|``.
"""

import contextlib
import copy
import importlib.metadata as md
import io
import json
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from refsnn.cli import main as refsnn
from refsnn.commands.config import option, parse
from refsnn.nir.export import to_nir_graph, write_nir
from refsnn.nir.simulate import as_dict, simulate

try:
    import nir
    import torch
except ImportError as e:  # pragma: no cover - optional
    print(f"nir and torch are needed for this example: {e}")
    sys.exit(0)

T_CONV, B = 8, 16


# ---------------------------------------------------------------------------------------------
# networks, graphs, inputs
# ---------------------------------------------------------------------------------------------
def make_conv(out: Path):
    from refsnn.commands.training import TrainConfig, train
    from refsnn.nas.trained import load_run

    run = out / "train"
    if not (run / "summary.json").is_file():
        train(TrainConfig(arch="c8-p-f32", timesteps=T_CONV, epochs=1, n_train=512, n_test=64, batch_size=32,
                          quiet=True, overwrite=True, out=str(run)))
    assert refsnn(["nir", "export", str(run), str(out / "conv.nir"), "--dt", "1e-4"]) == 0
    _, ds, _ = load_run(run)
    x = np.ascontiguousarray(np.broadcast_to(ds.x_test[:B], (T_CONV,) + ds.x_test[:B].shape)).astype(np.float32)
    return nir.read(str(out / "conv.nir")), x, "lif1"


def make_ec(out: Path):
    from refsnn.commands.ec import ECConfig
    from refsnn.commands.ec import run as ec_run

    run = out / "ec"
    if not (run / "deployed.npz").is_file():
        ec_run(ECConfig(generations=2, population=8, eval_members=1, max_steps=20, neurons=64, workers=0,
                        overwrite=True, out=str(run)), log=lambda *a: None)
    assert refsnn(["nir", "export", str(run), str(out / "ec.nir")]) == 0
    g = nir.read(str(out / "ec.nir"))
    K, d = int(g.metadata["substeps"]), int(g.nodes["input"].input_type["input"][0])
    X = 3 * np.random.default_rng(0).normal(size=(4, 4, d))
    return g, np.repeat(X, K, axis=0).astype(np.float32), "neurons"


def truncated(graph, spiking: str):
    """The graph up to ``spiking``, whose spikes become the output (the ``spikes`` variant)."""
    d = copy.deepcopy(as_dict(graph))
    keep, todo = {spiking}, [spiking]
    while todo:        # every node that reaches the spiking node
        n = todo.pop()
        for a, b in d["edges"]:
            if b == n and a not in keep:
                keep.add(a)
                todo.append(a)
    nodes = {k: v for k, v in d["nodes"].items() if k in keep}
    shape = np.shape(nodes[spiking]["v_threshold"])
    nodes["output"] = {"type": "Output", "shape": np.array(shape)}
    edges = [[a, b] for a, b in d["edges"] if a in keep and b in keep] + [[spiking, "output"]]
    return to_nir_graph({"type": "NIRGraph", "nodes": nodes, "edges": edges, "metadata": d["metadata"]})


def torch_flatten(graph):
    """The same graph with ``Flatten(start_dim=1)``, as torch-based exporters write it (refsnn writes
    ``start_dim=0``: NIR's types exclude the batch axis; with ``start_dim=1`` NIR's own type check
    fails, so it is built without it)."""
    d = copy.deepcopy(as_dict(graph))
    for n in d["nodes"].values():
        if n["type"] == "Flatten":
            n["start_dim"] = 1
    return to_nir_graph(d, type_check=False)


def ec_without_scales(graph):
    """The EC graph with its ``Scale`` nodes (and the ``[x, -x]`` split) folded into the ``Linear``
    weights: ``w_in = R_in C_in^T [[I], [-I]]``, ``w_out = R_out W_out`` -- the same network up to
    rounding, with fewer node types (several importers have no ``Scale``)."""
    d = copy.deepcopy(as_dict(graph))
    n = d["nodes"]
    w_in = np.asarray(n["w_in"]["weight"]) @ np.asarray(n["split"]["weight"])
    n["w_in"] = {"type": "Linear", "weight": np.asarray(n["g_in"]["scale"])[:, None] * w_in}
    w_out = np.asarray(n["g_out"]["scale"])[:, None] * np.asarray(n["w_out"]["weight"])
    n["w_out"] = {"type": "Linear", "weight": w_out}
    for k in ("split", "g_in", "g_out"):
        del n[k]
    ren = {"g_in": "w_in", "g_out": "w_out"}
    edges = []
    for a, b in d["edges"]:
        if (a, b) in (("input", "split"), ("split", "w_in"), ("w_in", "g_in"), ("w_out", "g_out")):
            continue
        edges.append([ren.get(a, a), ren.get(b, b)])
    d["edges"] = [["input", "w_in"]] + edges
    return to_nir_graph(d)


# ---------------------------------------------------------------------------------------------
# simulators: graph, x [T, B, ...] float32, dt -> output [T, B, ...]
# ---------------------------------------------------------------------------------------------
def _stateful(m, x):
    """nirtorch-style modules: ``out, state = m(x[t], state)`` step by step."""
    outs, state = [], None
    with torch.no_grad():
        for t in range(x.shape[0]):
            o, state = m(torch.tensor(x[t]), state)
            outs.append((o[0] if isinstance(o, tuple) else o).numpy().copy())
    return np.stack(outs)


def run_snntorch(graph, x, dt):
    import snntorch.import_nir as si
    from snntorch import utils

    with contextlib.redirect_stdout(io.StringIO()):       # its importer prints a warning per node
        m = si.import_from_nir(graph)
    utils.reset(m)
    return _stateful(m, x)


def run_norse(graph, x, dt):
    import norse.torch as nt

    return _stateful(nt.from_nir(graph, dt=dt), x)


def run_spikingjelly(graph, x, dt):
    from spikingjelly.activation_based.nir_exchange import import_from_nir

    return _stateful(import_from_nir(graph, dt=dt), x)


def run_rockpool(graph, x, dt):
    from rockpool.nn.modules import from_nir

    m = from_nir(graph)
    with torch.no_grad():
        o = m(torch.tensor(np.swapaxes(x, 0, 1)))            # rockpool: [B, T, ...]
    o = o[0] if isinstance(o, tuple) else o
    return np.swapaxes(o.numpy(), 0, 1)


def run_sinabs(graph, x, dt):
    import sinabs

    m = sinabs.from_nir(graph, batch_size=x.shape[1])
    with torch.no_grad():      # sinabs squeeze layers take [B*T, ...] (batch-major)
        xs = torch.tensor(np.swapaxes(x, 0, 1).reshape((-1,) + x.shape[2:]))
        o = m(xs)
    o = o[0] if isinstance(o, tuple) else o
    return np.swapaxes(o.numpy().reshape((x.shape[1], x.shape[0]) + tuple(o.shape[1:])), 0, 1)


#: (name, distribution, runner, dt it simulates with (None: the graph's), refsnn settings compared with: the
#: discretisation the simulator implements, then -- where that differs -- the graph's own conventions)
SIMULATORS = [
    ("snnTorch", "snntorch", run_snntorch, 1e-4, [{"method": "euler"}]),
    ("Norse", "norse", run_norse, None, [{"method": "euler"}]),
    ("SpikingJelly", "spikingjelly", run_spikingjelly, None, [{"method": "euler", "threshold": ">="},
                                                              {"method": "euler", "threshold": ">"}]),
    ("Rockpool", "rockpool", run_rockpool, None, [{"method": "exact"}]),
    ("Sinabs", "sinabs", run_sinabs, None, [{"method": "exact"}]),
]
NOT_INSTALLABLE = {
    "Lava (lava-nc)": "does not install here: lava-nc 0.7-0.10 require Python < 3.11 (this venv is 3.11); its NIR "
                      "import is a script in the NIR repository (paper/nir_to_lava.py), not part of lava-nc/lava-dl",
}


def _version(dist):
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _first(err: BaseException) -> str:
    return f"{type(err).__name__}: {' '.join(str(err).split())[:180]}"


def compare(ref, out, *, spikes: bool):
    if out.shape != ref.shape:
        return {"error": f"output shape {out.shape} != refsnn's {ref.shape}"}
    if spikes:
        bad = out != ref
        t = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(1))
        return {"mismatches": int(bad.sum()), "total": int(bad.size), "first": int(t[0]) if t.size else None,
                "ref_spikes": int(ref.sum()), "sim_spikes": int(out.sum())}
    diff = np.abs(out.astype(np.float64) - ref)
    bad = diff > 1e-5 + 1e-4 * np.abs(ref)
    t = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(1))
    return {"max_abs": float(diff.max()), "first": int(t[0]) if t.size else None}


def check(runner, variants, x, dt_graph, dt_sim, match, fix_flatten):
    """Run one simulator on both variants; returns the row's results."""
    row = {}
    dt = dt_graph if dt_sim is None else dt_sim
    for kind, g in variants.items():
        kw = dict(match, dt=dt)
        ref = simulate(g, {"input": x}, **kw)["out/output"]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out = runner(g, x, dt)
            row[kind] = compare(ref, out, spikes=kind == "spikes")
        except Exception as e:  # noqa: BLE001 - every failure is a result here
            row[kind] = {"error": _first(e)}
            if fix_flatten and kind == "full":
                try:
                    out = runner(torch_flatten(g), x, dt)
                    row["full_start_dim1"] = compare(ref, out, spikes=False)
                except Exception as e2:  # noqa: BLE001
                    row["full_start_dim1"] = {"error": _first(e2)}
    row["refsnn"] = ", ".join(f"{k} {v}" for k, v in dict(match, dt=dt).items())
    return row


@dataclass
class Options:
    """The options (declared as ``refsnn``'s commands declare theirs, :mod:`refsnn.commands.config`)."""
    out: str = option("crosscheck_out/nir", "output directory (the networks, graphs and results)")


def main(argv=None):
    args = parse(Options, argv, description=__doc__.split("\n\n")[0])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    nets = {}
    for key, make in (("conv", make_conv), ("ec", make_ec)):
        g, x, spiking = make(out)
        variants = {"spikes": truncated(g, spiking), "full": g}
        for kind, v in variants.items():
            write_nir(out / f"{key}_{kind}.nir", v)
        nets[key] = (variants, x, float(g.metadata["dt"]))
        if key == "ec":
            f = ec_without_scales(g)
            v2 = {"spikes": truncated(f, spiking), "full": f}
            nets["ec, Scale folded"] = (v2, x, float(g.metadata["dt"]))
        # the graph's own discretisation: refsnn's reference, recorded through the command line
        np.savez(out / f"{key}_in.npz", input=x)
        assert refsnn(["nir", "run", str(out / f"{key}_full.nir"), str(out / f"{key}_in.npz"),
                       str(out / f"{key}_refsnn.npz")]) == 0
    versions = {"nir": _version("nir"), "torch": _version("torch")}
    results = []
    for name, dist, runner, dt_sim, matches in SIMULATORS:
        ver = _version(dist)
        versions[dist] = ver
        for key, (variants, x, dt_graph) in nets.items():
            if ver is None:
                results.append({"simulator": name, "net": key, "version": None, "note": "not installed"})
                continue
            for match in matches:
                r = check(runner, variants, x, dt_graph, dt_sim, match, fix_flatten=key == "conv")
                results.append({"simulator": name, "net": key, "version": ver, **r})
                if all("error" in v for k, v in r.items() if k != "refsnn"):
                    break      # nothing ran: one row is enough
    (out / "results.json").write_text(json.dumps({"versions": versions, "results": results}, indent=1,
                                                 default=str))
    table = render(results)
    (out / "table.md").write_text(table)
    print(table)
    for name, why in NOT_INSTALLABLE.items():
        print(f"{name}: {why}")
    return 0


def _cell(r, kind):
    c = r.get(kind)
    if c is None:
        return "-"
    if "error" in c:
        return f"fails: {c['error']}"
    if "mismatches" in c:
        return (f"{c['mismatches']}/{c['total']} (refsnn {c['ref_spikes']}, sim {c['sim_spikes']} spikes), "
                f"first step {c['first']}")
    return f"max abs {c['max_abs']:.2e}, first step {c['first']}"


def render(results):
    lines = ["| simulator | version | net | refsnn run compared with | spikes graph: mismatches, first divergent step "
             "| full graph: output difference, first step | full graph with Flatten(start_dim=1) |",
             "|---|---|---|---|---|---|---|"]
    for r in results:
        if r.get("note"):
            lines.append(f"| {r['simulator']} | - | {r['net']} | - | {r['note']} | - | - |")
            continue
        lines.append(f"| {r['simulator']} | {r['version']} | {r['net']} | {r['refsnn']} | {_cell(r, 'spikes')} | "
                     f"{_cell(r, 'full')} | {_cell(r, 'full_start_dim1')} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
