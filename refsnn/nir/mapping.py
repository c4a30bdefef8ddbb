"""NIR's continuous-time neuron parameters <-> refsnn's discrete ones (no ``nir`` import here).

NIR (Pedersen et al. 2024, ``nir`` 1.0) states its neurons as ODEs without a time step; refsnn's
neurons are discrete maps. A discretisation with step ``dt`` turns every first-order NIR node

    tau dv/dt = (v_leak - v) + r I(t)            (LI, the membrane of LIF and CubaLIF)
    tau_syn dI/dt = -I + w_in S(t)               (the synapse of CubaLIF: r = w_in, v_leak = 0)

into ``v[k] = a v[k-1] + g I[k] + c`` with, for the two discretisations refsnn simulates
(:data:`METHODS`):

=========  =========================  ==========================  ==========================
method     decay ``a``                input gain ``g``            leak term ``c``
=========  =========================  ==========================  ==========================
``euler``  ``1 - dt/tau``             ``(dt/tau) r``              ``(dt/tau) v_leak``
``exact``  ``exp(-dt/tau)``           ``(1 - exp(-dt/tau)) r``    ``(1 - exp(-dt/tau)) v_leak``
=========  =========================  ==========================  ==========================

(``exact`` is the exact solution for an input held constant over the step, zero-order hold; a
spike is a value 1 held for one step in both.) Every constant is computed in float64 from the
node's parameters and rounded once to the compute dtype.

refsnn's Conv-LIF neuron (:mod:`refsnn.kernels.lif`, tau in steps) is the ``euler`` form with

    tau_nir = tau_steps dt,   r = 1 (decay_input=True) or r = tau_steps (decay_input=False),
    v_leak = v_reset (hard reset) or 0 (soft reset),   v_threshold = v_th,

i.e. ``H = V + (dt/tau_nir)((v_leak - V) + r X)`` is refsnn's ``H = V + (X - (V - v_r))/tau`` /
``H = V - (V - v_r)/tau + X``; under ``exact`` the same discrete neuron needs
``tau_nir = -dt / ln(1 - 1/tau_steps)`` and the same ``r``. The EC network
(:mod:`refsnn.kernels.cuba`) uses ``exact`` for every state: ``alpha_x = exp(-dt/tau_x)``, membrane
gain ``beta_m = 1 - alpha_m`` (``r = 1``, ``v_leak = v_reset``), synaptic gain ``R`` per signed spike
count (``r_syn = R / (1 - alpha_syn)``) and rate gain ``g_out = (1 - alpha_out)/dt``
(``r_out = 1/dt``).

Bit-exact round trips: an exporter writes the float64 NIR parameter whose re-discretisation by the
simulator gives *exactly* the float64 constant refsnn uses (:func:`solve`: the float64 neighbours of
the closed-form value are searched for one that maps back exactly), so ``export -> nir.read -> run``
reproduces refsnn's own numbers bit for bit rather than to an ulp. Such a parameter does not always
exist (division by ``dt`` skips float64 values when ``dt < 1``: with ``dt = 0.1`` no float64 ``t`` has
``t / 0.1 == 1.5``); then the nearest one is written and the re-derived ``tau_steps`` is one float64
ulp off -- invisible in float32 (the kernel rounds ``tau`` to float32), possibly visible in float64.
The default ``dt = 1e-3`` maps every tau tested exactly (``tests/test_nir.py``).
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

__all__ = ["METHODS", "RESETS", "THRESHOLDS", "decay", "gain", "tau_steps_euler", "solve",
           "nir_tau_for_lif", "nir_r_for_lif"]

#: discretisations of NIR's ODEs that ``refsnn nir run`` simulates
METHODS = ("euler", "exact")
#: reset after a spike: ``hard`` (NIR's definition, ``v = v_reset``), ``subtract`` (``v = v - v_th``,
#: refsnn's soft reset / SpikingJelly), ``subtract_after_decay`` (snnTorch's ``"subtract"``: the
#: threshold is removed from the next step's charged membrane, module :mod:`refsnn.kernels.lif`)
RESETS = ("hard", "subtract", "subtract_after_decay")
#: spike condition (NIR's definition is ``v > v_threshold``)
THRESHOLDS = (">", ">=")


def decay(method: str, dt: float, tau: float) -> float:
    """The float64 decay factor ``a`` of a node with time constant ``tau`` (module table)."""
    if method == "euler":
        return 1.0 - dt / tau
    return math.exp(-dt / tau)


def gain(method: str, dt: float, tau: float, r: float) -> float:
    """The float64 input gain ``g`` (module table): ``(dt/tau) r`` (euler), ``(1 - exp(-dt/tau)) r``."""
    if method == "euler":
        return (dt / tau) * r
    return (1.0 - math.exp(-dt / tau)) * r


def tau_steps_euler(dt: float, tau: float) -> float:
    """refsnn's LIF time constant in steps for a NIR ``tau`` under ``euler``: ``tau / dt``."""
    return tau / dt


def solve(f: Callable[[float], float], target: float, guess: float, *, ulps: int = 64) -> float:
    """A float64 ``x`` near ``guess`` with ``f(x) == target`` exactly (the nearest such neighbour of
    ``guess``, searched up to ``ulps`` representable steps each way); ``guess`` if there is none."""
    if f(guess) == target:
        return guess
    lo = hi = guess
    for _ in range(ulps):
        lo, hi = np.nextafter(lo, -np.inf), np.nextafter(hi, np.inf)
        for x in (float(lo), float(hi)):
            if f(x) == target:
                return x
    return guess


def nir_tau_for_lif(tau_steps: float, dt: float, method: str) -> float:
    """NIR ``tau`` (time units of ``dt``) of a refsnn LIF with time constant ``tau_steps`` steps.

    ``euler``: ``tau_steps dt``, chosen so that ``tau / dt == tau_steps`` exactly in float64 (what
    :func:`tau_steps_euler` computes on import). ``exact``: ``-dt / ln(1 - 1/tau_steps)``, the
    continuous time constant whose exact decay over ``dt`` is refsnn's ``1 - 1/tau_steps``
    (``tau_steps > 1``; refsnn's tau 1, no memory, has no finite continuous equivalent)."""
    if method == "euler":
        return solve(lambda t: tau_steps_euler(dt, t), tau_steps, tau_steps * dt)
    if tau_steps <= 1.0:
        raise ValueError(f"tau: refsnn's tau={tau_steps} (no memory) has no exact-decay NIR time constant; "
                         "export with the euler discretisation")
    guess = -dt / math.log1p(-1.0 / tau_steps)
    return solve(lambda t: decay("exact", dt, t), 1.0 - 1.0 / tau_steps, guess)


def nir_r_for_lif(tau_steps: float, decay_input: bool) -> float:
    """NIR ``r`` of a refsnn LIF: 1 with ``decay_input`` (input gain ``1/tau``), else ``tau_steps``
    (input gain 1) -- the same under both discretisations (module docstring)."""
    return 1.0 if decay_input else float(tau_steps)
