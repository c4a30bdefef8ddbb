"""Cases ``ec.gru_cell.*``, ``ec.lstm_cell.*``, ``ec.ppo_update.*``: the EC paper's baselines — one step
of the ES-GRU / ES-LSTM policy cells (:mod:`refsnn.kernels.rnn`, PyTorch's weight layouts) and one
PPO update of the SG-RSNN on fixed data (:mod:`refsnn.ec.ppo`: loss, its gradient through the
surrogate-gradient BPTT of :mod:`refsnn.kernels.cuba_bptt`, gradient-norm clip, one Adam step)."""
from __future__ import annotations

import numpy as np

from refsnn.ec import ppo
from refsnn.kernels import rnn
from refsnn.kernels.cuba import CubaConfig
from refsnn.vectors.case import Case

PREFIXES = ("ec.gru_cell.", "ec.lstm_cell.", "ec.ppo_update.")

_B, _I, _H = 3, 5, 4


def _cell_inputs(gates: int, dtype, lstm: bool):
    def make(rng):
        d = {"x": rng.normal(0, 1, (_B, _I)), "h": rng.normal(0, 0.5, (_B, _H)),
             "w_ih": rng.normal(0, 1, (_B, gates * _H, _I)), "w_hh": rng.normal(0, 1, (_B, gates * _H, _H)),
             "b_ih": rng.normal(0, 0.5, (_B, gates * _H)), "b_hh": rng.normal(0, 0.5, (_B, gates * _H))}
        if lstm:
            d["c"] = rng.normal(0, 1, (_B, _H))
        d["w_ih"][0, 0] = 30.0          # saturated gates (exp overflow in float32)
        return {k: v.astype(dtype) for k, v in d.items()}
    return make


def _gru(params, inp):
    return {"h": rnn.gru_cell(inp["x"], inp["h"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])}


def _gru_oracle(params, inp):
    return {"h": rnn.gru_cell_ref(inp["x"], inp["h"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])}


def _lstm(params, inp):
    h, c = rnn.lstm_cell(inp["x"], inp["h"], inp["c"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])
    return {"h": h, "c": c}


def _lstm_oracle(params, inp):
    h, c = rnn.lstm_cell_ref(inp["x"], inp["h"], inp["c"], inp["w_ih"], inp["w_hh"], inp["b_ih"], inp["b_hh"])
    return {"h": h, "c": c}


_NET = {"n_neurons": 6, "dt": 0.5, "sim_time": 2.0, "sparsity": 1.0, "dale": True}
_M, _L, _OBS, _A = 4, 5, 3, 2


def _ppo_inputs(rng):
    N = _NET["n_neurons"]
    p = ppo.init_params(CubaConfig(**_NET), _OBS, _A, 0, dtype=np.float64)
    p["w_v"] = rng.normal(0, 1, N)
    p["log_std"] = rng.normal(0, 0.3, _A)
    mask = np.zeros((_M, _L), bool)
    mask[1, 3] = True                   # an episode starts inside window 1
    d = {f"param.{k}": v for k, v in p.items()}
    d.update({"obs": rng.normal(0, 1, (_M, _L, _OBS)), "state.v": rng.uniform(0, 1, (_M, N)),
              "state.i_syn": rng.normal(0, 0.5, (_M, N)), "state.rate": rng.uniform(0, 0.05, (_M, N)),
              "state.s": (rng.random((_M, N)) < 0.3).astype(float), "reset.mask": mask,
              "reset.v0": rng.uniform(0, 1, (_M, _L, N)), "actions": rng.normal(0, 1, (_M, _L, _A)),
              "logp": rng.normal(-2.5, 0.5, (_M, _L)), "adv": rng.normal(0, 1, (_M, _L)),
              "ret": rng.normal(0, 1, (_M, _L)), "value": rng.normal(0, 1, (_M, _L))})
    return d


def _ppo_compute(params, inp):
    cfg = CubaConfig(**params["net"])
    s = ppo.PPOSettings(n_envs=1, n_steps=_L, window=_L, minibatch_windows=_M, epochs=1, **params["ppo"])
    p = {k: inp[f"param.{k}"] for k in ppo.PARAM_KEYS}
    batch = {"obs": inp["obs"], "state": tuple(inp[f"state.{n}"] for n in ("v", "i_syn", "rate", "s")),
             "resets": (inp["reset.mask"], inp["reset.v0"]), "actions": inp["actions"], "logp": inp["logp"],
             "adv": inp["adv"], "ret": inp["ret"], "value": inp["value"]}
    loss, g, _ = ppo.loss_and_grads(cfg, _OBS, p, batch, s)
    zeros = {k: np.zeros(v.shape) for k, v in p.items()}
    new, (m, v, t), _ = ppo.update(cfg, _OBS, p, (zeros, dict(zeros), 0), batch, s, 0, 0)
    out = {"loss": np.array(loss)}
    out.update({f"grad.{k}": g[k] for k in ppo.PARAM_KEYS})
    out.update({f"new.{k}": new[k] for k in ppo.PARAM_KEYS})
    return out


def cases() -> list[Case]:
    """The baseline cases, in manifest order."""
    out = []
    for dtype in (np.float32, np.float64):
        tag = np.dtype(dtype).name
        out.append(Case(f"ec.gru_cell.{tag}", "5.5",
                        "r = sig(W_ir x + b_ir + W_hr h + b_hr); z = sig(W_iz x + b_iz + W_hz h + b_hz); "
                        "n = tanh(W_in x + b_in + r (W_hn h + b_hn)); h' = (1 - z) n + z h (PyTorch GRUCell; "
                        "gate blocks r, z, n stacked in w_ih (3H, I), w_hh (3H, H))",
                        f"one GRU step of 3 members with their own weights (I=5, H=4), {tag}, one saturated gate",
                        {}, _cell_inputs(3, dtype, False), _gru, oracle=_gru_oracle))
        out.append(Case(f"ec.lstm_cell.{tag}", "5.5",
                        "i, f, o = sig(.), g = tanh(.) of W_i* x + b_i* + W_h* h + b_h* (blocks i, f, g, o as "
                        "PyTorch LSTMCell); c' = f c + i g; h' = o tanh(c')",
                        f"one LSTM step of 3 members with their own weights (I=5, H=4), {tag}, one saturated gate",
                        {}, _cell_inputs(4, dtype, True), _lstm, oracle=_lstm_oracle))
    out.append(Case("ec.ppo_update.float64", "5.5",
                    "refsnn.ec.ppo module docstring: L = mean max(-A ratio, -A clip(ratio, 1-c, 1+c)) + vf/2 mean "
                    "max((V-R)^2, (V_old + clip(V - V_old, -c, c) - R)^2) - ent sum(log_std + log(2 pi e)/2), "
                    "A normalised; network: refsnn.kernels.cuba_bptt (spiking, atan surrogate, detached reset); "
                    "then g *= min(1, max_norm / (|g| + 1e-6)); one Adam step (lr, 0.9, 0.999, eps 1e-5)",
                    "one SG-RSNN PPO update on 4 windows of 5 env steps (N=6, K=4 substeps, 3 observations, "
                    "2 actions; an episode reset inside window 1): loss, its gradient, the new parameters",
                    {"net": _NET, "ppo": {"lr": 3e-4, "clip": 0.2, "ent_coef": 0.01, "vf_coef": 0.5,
                                          "max_grad_norm": 0.5, "surrogate": "atan", "detach_reset": True}},
                    _ppo_inputs, _ppo_compute))
    return out
