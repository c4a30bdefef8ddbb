"""Cases ``surrogate.*``: the surrogate gradients and primitives and the Heaviside step
(SPEC §2.2, :mod:`refsnn.kernels.surrogate`), Numba kernels checked against the NumPy forms."""
from __future__ import annotations

import numpy as np

from refsnn.kernels import surrogate as sg
from refsnn.kernels.surrogate import DEFAULT_ALPHA, NAMES
from refsnn.vectors.case import Case
from refsnn.vectors.tolerances import EXACT

PREFIXES = ("surrogate.",)


def surrogate_compute(params, inp):
    return {"grad": sg.grad_nb(params["surrogate"], inp["x"], params["alpha"]),
            "primitive": sg.primitive_nb(params["surrogate"], inp["x"], params["alpha"]),
            "heaviside_gt": sg.heaviside(inp["x"], ">"), "heaviside_ge": sg.heaviside(inp["x"], ">=")}


def _surrogate_oracle(params, inp):
    return {"grad": sg.grad(params["surrogate"], inp["x"], params["alpha"]),
            "primitive": sg.primitive(params["surrogate"], inp["x"], params["alpha"]),
            "heaviside_gt": sg.heaviside(inp["x"], ">"), "heaviside_ge": sg.heaviside(inp["x"], ">=")}


def cases() -> list[Case]:
    """The ``surrogate.*`` cases, in manifest order."""
    out = []
    for dtype in ("float32", "float64"):
        for sname in NAMES:
            a = DEFAULT_ALPHA[sname]

            def make(rng, dtype=dtype, a=a):
                # a grid across the support (incl. 0 and the kinks +-1/a, +-1/(2a)) plus random points
                grid = np.array([0.0, 1 / a, -1 / a, 0.5 / a, -0.5 / a, 2.0, -2.0, 0.125, -0.125])
                return {"x": np.concatenate([grid, rng.uniform(-1.5, 1.5, 31)]).astype(dtype)}

            out.append(Case(
                f"surrogate.{sname}.{dtype}", "2.2", "SPEC §2.2 table: grad(x), primitive(x), Heaviside",
                f"surrogate {sname!r} (alpha {a}) derivative and primitive at x = H - v_th; "
                "heaviside_gt = [x > 0], heaviside_ge = [x >= 0]",
                {"surrogate": sname, "alpha": a, "dtype": dtype}, make, surrogate_compute,
                {"heaviside_gt": EXACT, "heaviside_ge": EXACT}, oracle=_surrogate_oracle))
    return out
