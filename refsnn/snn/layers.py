"""Multi-step layers over whole time-major sequences (SPEC §4.1, SpikingJelly multi-step style).

Every layer maps arrays of shape ``[T', B, ...]`` to ``[T', B, ...]`` with a hand-written
``forward`` and ``backward``. ``backward`` uses what the last ``forward`` cached, so the pattern is
strictly ``forward`` then ``backward`` (one pending step per layer).

Static tensors (direct encoding)
--------------------------------
A tensor whose leading (time) axis has length ``T' = 1`` while the network runs ``T > 1`` steps is
*static*: it holds the same value at every step (direct-encoded images and everything stateless
computed from them, e.g. the first conv + BN). Stateless layers fold ``T'`` into the batch, so a
static tensor costs one step instead of T; the first stateful layer (LIF) broadcasts it to T steps,
and its backward sums the gradient over T (the gradient of a broadcast is the sum). Mathematically
this is identical to feeding T copies; only the summation order of the first layers' weight
gradients differs (sum over T first). BatchNorm's running variance uses the unbiased factor of the
*broadcast* tensor, ``n = T*B*H*W``, so running statistics equal those of the T-copies network.

Layers
------
========================  =======================================================================
:class:`Conv2d`           ``y = conv(x)`` per step (SPEC §3; cross-correlation, PyTorch layout)
:class:`BatchNorm2d`      BN over ``(T*B, H, W)`` per channel (SPEC §3), running stats, train/eval
:class:`LIF`              the multi-step LIF neuron (SPEC §2.1), time loop inside the kernel
:class:`Rectify`          E/I rectifier ``y = sign * relu(x)`` (SPEC §6.2), or ``y = sign * x``
:class:`AvgPool2d`        ``k x k`` average pooling, stride ``k`` (SPEC §3)
:class:`GlobalAvgPool`    mean over ``H, W``: ``[T, B, C, H, W] -> [T, B, C]``
:class:`Flatten`          ``[T, B, ...] -> [T, B, F]``
:class:`Linear`           ``y = x @ W.T + b`` per step (SPEC §1 layout)
:class:`Add`              node sum ``y = sum_i x_i`` (a population's input current, SPEC §6.2)
:class:`Concat`           channel concatenation (axis 2 of ``[T, B, C, ...]``; cell outputs §6.2)
========================  =======================================================================

Parameters live in ``layer.params`` (name -> array), their gradients (written by ``backward``,
overwritten each step) in ``layer.grads``, non-trainable state (BN running statistics) in
``layer.buffers``. Initialisation (:func:`kaiming_uniform`) follows PyTorch's defaults: weights
``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (Kaiming-uniform with ``a = sqrt(5)``), biases the same bound,
BN ``gamma = 1, beta = 0``, running mean 0 and variance 1.
"""
from __future__ import annotations

import math

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_float, check_int
from refsnn.kernels.batchnorm import batchnorm2d_backward, batchnorm2d_forward
from refsnn.kernels.conv import Conv2dWorkspace, conv2d_backward, conv2d_forward
from refsnn.kernels.lif import PRESETS, LIFParams, lif_backward, lif_forward
from refsnn.kernels.linear import linear_backward, linear_forward
from refsnn.kernels.pool import avgpool2d_backward, avgpool2d_forward, global_avgpool_backward, global_avgpool_forward
from refsnn.kernels.rectify import rectify_backward, rectify_forward

__all__ = [
    "Layer", "Conv2d", "BatchNorm2d", "LIF", "Rectify", "AvgPool2d", "GlobalAvgPool", "Flatten",
    "Linear", "Add", "Concat", "kaiming_uniform", "unbroadcast_time",
]


def _dtype(dtype) -> np.dtype:
    d = np.dtype(dtype)
    if d not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {d}")
    return d


def _rng(rng) -> np.random.Generator:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"rng: expected a numpy.random.Generator (e.g. default_rng(SeedSequence(seed))), "
                        f"got {type(rng).__name__}")
    return rng


def kaiming_uniform(rng: np.random.Generator, shape, fan_in: int, dtype=np.float32) -> np.ndarray:
    """PyTorch's default weight init: ``U(-b, b)``, ``b = gain * sqrt(3 / fan_in)``, gain
    ``sqrt(2 / (1 + a^2))`` with ``a = sqrt(5)``, i.e. ``b = 1 / sqrt(fan_in)``.

    Drawn in float64 from ``rng`` and cast, so float32 and float64 networks built from the same
    seed hold the same (rounded) values.
    """
    b = 1.0 / math.sqrt(fan_in)
    return rng.uniform(-b, b, size=shape).astype(_dtype(dtype))


def unbroadcast_time(g: np.ndarray, lead: int) -> np.ndarray:
    """Gradient with respect to a tensor of leading length ``lead`` (1 = static) from ``g``."""
    if g.shape[0] == lead:
        return g
    if lead != 1:
        raise ValueError(f"cannot reduce a gradient with {g.shape[0]} steps to {lead}")
    return g.sum(axis=0, keepdims=True)


def _fold(x: np.ndarray) -> np.ndarray:
    """``[T', B, ...] -> [T'*B, ...]`` (a view when possible)."""
    return x.reshape((x.shape[0] * x.shape[1],) + x.shape[2:])


class Layer:
    """Base class. Subclasses set ``n_inputs`` (``None`` = any number >= 1) and implement
    ``forward(*xs, T)`` and ``backward(dy, need_dx) -> tuple`` (one entry per input, ``None`` where
    ``need_dx[i]`` is False)."""

    n_inputs: int | None = 1

    def __init__(self, dtype=np.float32):
        self.dtype = _dtype(dtype)
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self.training = True
        self.relaxed = False

    def forward(self, *xs, T: int):  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, dy, need_dx):  # pragma: no cover - interface
        raise NotImplementedError

    def _check_in(self, name, x, ndim):
        x = check_array(name, x, ndim=ndim, dtypes=(self.dtype,), finite=False)
        return x

    def extra_repr(self) -> str:
        return ""

    def __repr__(self):
        return f"{type(self).__name__}({self.extra_repr()})"

    def clear(self) -> None:
        """Drop what forward cached (frees memory once backward is done)."""
        for k in [k for k in vars(self) if k.startswith("_c_")]:
            setattr(self, k, None)


# ------------------------------------------------------------------------------------------------
class Conv2d(Layer):
    """2-D convolution applied at every step (SPEC §3), T folded into the batch.

    ``y[t, b, o, p, q] = bias[o] + sum_{c,i,j} w[o, c, i, j] xpad[t, b, c, p*s + i, q*s + j]``.

    Parameters
    ----------
    in_channels, out_channels, kernel_size : int
    stride, padding : int
    bias : bool
        Default False (conv is followed by BN everywhere in MSE-NAS).
    rng : numpy.random.Generator
        For the Kaiming-uniform initialisation (``fan_in = in_channels * k * k``).

    Shapes: ``x [T', B, C, H, W] -> y [T', B, O, Ho, Wo]``.

    Memory: the layer owns a :class:`refsnn.kernels.conv.Conv2dWorkspace` (``self.workspace``) that
    it alone passes to the conv kernels, so the im2col matrix and the other work arrays are reused
    from one step to the next instead of being faulted in afresh. The workspace keeps one set of
    arrays per input shape for the last 4 shapes used (training batches and evaluation batches,
    including a smaller last batch of each, can all be kept): per shape, with ``N = T'*B`` and
    ``s`` the item size, the im2col matrix ``N*Ho*Wo*C*k*k*s`` bytes (``k*k`` times the input for
    stride 1), plus arrays of about the size of the input and the output (padded input, the
    output and its gradient in NHWC order, the padded input gradient) and a chunk of at most
    about 8 MiB. ``self.workspace.clear()`` releases them; ``self.workspace.nbytes`` tells the total.
    """

    def __init__(self, in_channels, out_channels, kernel_size, *, stride=1, padding=0, bias=False,
                 rng, dtype=np.float32):
        super().__init__(dtype)
        self.cin = check_int("in_channels", in_channels, lo=1)
        self.cout = check_int("out_channels", out_channels, lo=1)
        self.k = check_int("kernel_size", kernel_size, lo=1)
        self.stride = check_int("stride", stride, lo=1)
        self.padding = check_int("padding", padding, lo=0)
        rng = _rng(rng)
        fan_in = self.cin * self.k * self.k
        self.params["w"] = kaiming_uniform(rng, (self.cout, self.cin, self.k, self.k), fan_in, self.dtype)
        if bias:
            self.params["b"] = kaiming_uniform(rng, (self.cout,), fan_in, self.dtype)
        self._c_ctx = None
        self.workspace = Conv2dWorkspace()

    def extra_repr(self):
        return (f"{self.cin}, {self.cout}, k={self.k}, stride={self.stride}, padding={self.padding}, "
                f"bias={'b' in self.params}")

    def forward(self, x, *, T):
        x = self._check_in("x", x, 5)
        if x.shape[2] != self.cin:
            raise ValueError(f"x: expected {self.cin} channels (axis 2 of [T, B, C, H, W]), got shape {x.shape}")
        self._c_ctx = None   # superseded by this forward (frees its im2col if the workspace dropped it)
        y, ctx = conv2d_forward(_fold(x), self.params["w"], self.params.get("b"),
                                stride=self.stride, padding=self.padding, check_finite=False,
                                workspace=self.workspace)
        self._c_ctx = ctx
        return y.reshape(x.shape[:2] + y.shape[1:])

    def backward(self, dy, need_dx=(True,)):
        dx, dw, db = conv2d_backward(_fold(dy), self._c_ctx, need_dx=bool(need_dx[0]),
                                     check_finite=False, workspace=self.workspace)
        self.grads["w"] = dw
        if db is not None:
            self.grads["b"] = db
        self._c_ctx = None
        return (None if dx is None else dx.reshape(dy.shape[:2] + dx.shape[1:]),)


# ------------------------------------------------------------------------------------------------
class BatchNorm2d(Layer):
    """BatchNorm over ``(T*B, H, W)`` per channel (SPEC §3; threshold-dependent BN style).

    Training: ``y = gamma (x - mu) / sqrt(var + eps) + beta`` with ``mu, var`` (biased) over all
    steps, samples and pixels; running stats ``r_mu <- (1 - m) r_mu + m mu``,
    ``r_var <- (1 - m) r_var + m var n/(n - 1)`` (PyTorch's convention, ``n = T*B*H*W``).
    Evaluation: ``y = gamma (x - r_mu) / sqrt(r_var + eps) + beta``. ``eps = 1e-5``, ``m = 0.1``.

    Shapes: ``x [T', B, C, H, W] -> y`` of the same shape.
    """

    def __init__(self, channels, *, eps=1e-5, momentum=0.1, dtype=np.float32):
        super().__init__(dtype)
        self.c = check_int("channels", channels, lo=1)
        self.eps = check_float("eps", eps, lo=0.0, lo_open=True)
        self.momentum = check_float("momentum", momentum, lo=0.0, hi=1.0)
        self.params["gamma"] = np.ones(self.c, self.dtype)
        self.params["beta"] = np.zeros(self.c, self.dtype)
        self.buffers["running_mean"] = np.zeros(self.c, self.dtype)
        self.buffers["running_var"] = np.ones(self.c, self.dtype)
        self._c_ctx = None

    def extra_repr(self):
        return f"{self.c}, eps={self.eps:g}, momentum={self.momentum:g}"

    def forward(self, x, *, T):
        x = self._check_in("x", x, 5)
        if x.shape[2] != self.c:
            raise ValueError(f"x: expected {self.c} channels (axis 2 of [T, B, C, H, W]), got shape {x.shape}")
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        xf = _fold(x)
        static = self.training and x.shape[0] == 1 and T > 1
        # Static input: the batch statistics of the broadcast tensor equal those of one copy, so the
        # kernel's mean update is right; only the unbiased factor of the running variance differs
        # (n = T*B*H*W, not B*H*W), so the kernel updates a scratch copy and rv is updated here
        # from the batch variance var = 1/invstd^2 - eps (float64, from the kernel's context).
        rv_k = rv.copy() if static else rv
        y, ctx = batchnorm2d_forward(xf, self.params["gamma"], self.params["beta"], rm, rv_k,
                                     training=self.training, momentum=self.momentum, eps=self.eps,
                                     check_finite=False)
        if static:
            invstd = getattr(ctx, "invstd", None)
            if invstd is not None:
                var = 1.0 / np.square(np.asarray(invstd, np.float64)) - self.eps
            else:  # pragma: no cover - another kernel implementation
                var = xf.astype(np.float64).var(axis=(0, 2, 3))
            n = T * xf.shape[0] * xf.shape[2] * xf.shape[3]
            m = self.momentum  # same operation order as the kernel's update
            rv *= (1.0 - m)
            rv += (m * var * (n / (n - 1))).astype(self.dtype)
        self._c_ctx = ctx
        return y.reshape(x.shape)

    def backward(self, dy, need_dx=(True,)):
        dx, dg, db = batchnorm2d_backward(_fold(dy), self._c_ctx, check_finite=False)
        self.grads["gamma"], self.grads["beta"] = dg, db
        self._c_ctx = None
        return (dx.reshape(dy.shape),)


# ------------------------------------------------------------------------------------------------
class LIF(Layer):
    """Multi-step LIF population (SPEC §2.1) over ``[T, B, ...]``: :func:`refsnn.kernels.lif.lif_forward`.

    A static input (leading length 1) is broadcast to ``T`` steps; the backward then sums over T.
    ``relaxed`` (set by the network) replaces the Heaviside by the surrogate's primitive (SPEC §4.1).
    Outputs live in buffers reused across calls: a forward's spikes stay valid until the next
    forward of the same layer with the same shape.
    """

    def __init__(self, params: LIFParams = PRESETS["msenas"], *, dtype=np.float32):
        super().__init__(dtype)
        if not isinstance(params, LIFParams):
            raise TypeError(f"params: expected refsnn.kernels.lif.LIFParams, got {type(params).__name__}")
        self.lif = params
        self._bufs: dict = {}
        self._c_h = None
        self._c_lead = None
        self.last_spikes = None

    def extra_repr(self):
        p = self.lif
        return f"tau={p.tau:g}, v_th={p.v_th:g}, v_reset={p.v_reset}, {p.surrogate}"

    def _buf(self, key, shape):
        b = self._bufs.get(key)
        if b is None or b.shape != shape:
            b = np.empty(shape, self.dtype)
            self._bufs[key] = b
        return b

    def forward(self, x, *, T):
        x = self._check_in("x", x, None)
        if x.ndim < 2:
            raise ValueError(f"x: expected [T, B, ...], got shape {x.shape}")
        self._c_lead = x.shape[0]
        shape = (T,) + x.shape[1:]
        if x.shape[0] != T:
            if x.shape[0] != 1:
                raise ValueError(f"x: expected {T} (or 1, static) steps, got shape {x.shape}")
            xb = self._buf("x", shape)
            xb[...] = x
            x = xb
        elif not x.flags.c_contiguous:
            x = np.ascontiguousarray(x)
        s, h = lif_forward(x, self.lif, relaxed=self.relaxed,
                           out=(self._buf("s", shape), self._buf("h", shape)))
        self._c_h = h
        self.last_spikes = s
        return s

    def backward(self, dy, need_dx=(True,)):
        dy = np.ascontiguousarray(dy)
        gx = lif_backward(dy, self._c_h, self.lif, relaxed=self.relaxed, out=self._buf("gx", dy.shape))
        return (unbroadcast_time(gx, self._c_lead),)

    def clear(self):
        self._c_h = None


# ------------------------------------------------------------------------------------------------
class Rectify(Layer):
    """E/I rectifier of an MSE-NAS edge (SPEC §6.2): ``y = sign * relu(x)`` (``relu=True``) or
    ``y = sign * x``; ``sign = +1`` excitatory (E), ``-1`` inhibitory (I) presynaptic population.

    Backward: ``dx = sign * dy * [x > 0]`` (``relu``), ``dx = sign * dy`` otherwise.
    """

    def __init__(self, sign: int = 1, *, relu: bool = True, dtype=np.float32):
        super().__init__(dtype)
        if sign not in (1, -1):
            raise ValueError(f"sign: expected +1 (excitatory) or -1 (inhibitory), got {sign!r}")
        self.sign = int(sign)
        self.relu = bool(relu)
        self._c_mask = None

    def extra_repr(self):
        return f"sign={self.sign:+d}, relu={self.relu}"

    def forward(self, x, *, T):
        x = self._check_in("x", x, None)
        if self.relu:
            y, self._c_mask = rectify_forward(x, self.sign)     # one fused Numba pass
        else:
            y = x.copy()
            if self.sign < 0:
                np.negative(y, out=y)
        return y

    def backward(self, dy, need_dx=(True,)):
        if self.relu:
            dx = rectify_backward(dy, self._c_mask, self.sign)
        else:
            dx = dy.copy()
            if self.sign < 0:
                np.negative(dx, out=dx)
        self._c_mask = None
        return (dx,)


# ------------------------------------------------------------------------------------------------
class AvgPool2d(Layer):
    """``k x k`` average pooling with stride ``k`` per step (SPEC §3); trailing rows/columns that do
    not fill a window are dropped (floor), as in PyTorch.

    ``y[t, b, c, p, q] = mean_{i,j < k} x[t, b, c, p k + i, q k + j]``;
    ``[T', B, C, H, W] -> [T', B, C, H//k, W//k]``.
    """

    def __init__(self, k: int = 2, *, dtype=np.float32):
        super().__init__(dtype)
        self.k = check_int("k", k, lo=1)
        self._c_shape = None

    def extra_repr(self):
        return f"k={self.k}"

    def forward(self, x, *, T):
        x = self._check_in("x", x, 5)
        H, W = x.shape[3:]
        if H < self.k or W < self.k:
            raise ValueError(f"x: spatial size {(H, W)} smaller than the pooling window {self.k}")
        self._c_shape = x.shape
        k = self.k
        xf = _fold(x)
        if H % k or W % k:  # floor: drop the rows/columns that do not fill a window
            xf = xf[:, :, :H - H % k, :W - W % k]
        y = avgpool2d_forward(xf, k, check_finite=False)
        return y.reshape(x.shape[:2] + y.shape[1:])

    def backward(self, dy, need_dx=(True,)):
        shape = self._c_shape
        dx = avgpool2d_backward(np.ascontiguousarray(_fold(dy)), self.k, check_finite=False)
        H, W = shape[3:]
        if dx.shape[2:] != (H, W):  # windows dropped by the floor get zero gradient
            full = np.zeros((dx.shape[0], dx.shape[1], H, W), self.dtype)
            full[:, :, :dx.shape[2], :dx.shape[3]] = dx
            dx = full
        return (dx.reshape(shape),)


class GlobalAvgPool(Layer):
    """Mean over ``H, W`` per step: ``y[t, b, c] = mean_{h,w} x[t, b, c, h, w]``;
    ``[T', B, C, H, W] -> [T', B, C]`` (the MSE-NAS head, SPEC §6.3)."""

    def forward(self, x, *, T):
        x = self._check_in("x", x, 5)
        self._c_shape = x.shape
        y = global_avgpool_forward(_fold(x), check_finite=False)
        return y.reshape(x.shape[:3])

    def backward(self, dy, need_dx=(True,)):
        shape = self._c_shape
        dx = global_avgpool_backward(np.ascontiguousarray(_fold(dy)), shape[3:], check_finite=False)
        return (dx.reshape(shape),)


class Flatten(Layer):
    """``[T', B, d1, d2, ...] -> [T', B, d1*d2*...]`` (C order, as PyTorch's ``flatten(2)`` of the
    time-major tensor, i.e. ``flatten(1)`` per step)."""

    def forward(self, x, *, T):
        x = self._check_in("x", x, None)
        self._c_shape = x.shape
        return x.reshape(x.shape[:2] + (-1,))

    def backward(self, dy, need_dx=(True,)):
        return (dy.reshape(self._c_shape),)


# ------------------------------------------------------------------------------------------------
class Linear(Layer):
    """``y[t, b] = W x[t, b] + bias`` (SPEC §1: ``W (out, in)``), T folded into the batch.

    Shapes: ``x [T', B, in] -> y [T', B, out]``. Initialisation: PyTorch's (``fan_in = in``).
    """

    def __init__(self, in_features, out_features, *, bias=True, rng, dtype=np.float32):
        super().__init__(dtype)
        self.fin = check_int("in_features", in_features, lo=1)
        self.fout = check_int("out_features", out_features, lo=1)
        rng = _rng(rng)
        self.params["w"] = kaiming_uniform(rng, (self.fout, self.fin), self.fin, self.dtype)
        if bias:
            self.params["b"] = kaiming_uniform(rng, (self.fout,), self.fin, self.dtype)
        self._c_x = None

    def extra_repr(self):
        return f"{self.fin}, {self.fout}, bias={'b' in self.params}"

    def forward(self, x, *, T):
        x = self._check_in("x", x, 3)
        if x.shape[2] != self.fin:
            raise ValueError(f"x: expected {self.fin} features (axis 2 of [T, B, F]), got shape {x.shape}")
        xf = np.ascontiguousarray(_fold(x))
        self._c_x = xf
        y = linear_forward(xf, self.params["w"], self.params.get("b"))
        return y.reshape(x.shape[:2] + (self.fout,))

    def backward(self, dy, need_dx=(True,)):
        dx, dw, db = linear_backward(np.ascontiguousarray(_fold(dy)), self._c_x, self.params["w"],
                                     "b" in self.params, need_dx=bool(need_dx[0]))
        self.grads["w"] = dw
        if db is not None:
            self.grads["b"] = db
        self._c_x = None
        return (None if dx is None else dx.reshape(dy.shape[:2] + (self.fin,)),)


# ------------------------------------------------------------------------------------------------
class Add(Layer):
    """Node sum ``y = sum_i x_i`` (a LIF population's input current is the sum of its incoming
    edges, SPEC §6.2). Static inputs broadcast over T; their gradient is summed over T."""

    n_inputs = None

    def forward(self, *xs, T):
        if not xs:
            raise ValueError("xs: Add needs at least one input")
        xs = [self._check_in(f"xs[{i}]", x, None) for i, x in enumerate(xs)]
        self._c_leads = [x.shape[0] for x in xs]
        tail = xs[0].shape[1:]
        for i, x in enumerate(xs):
            if x.shape[1:] != tail:
                raise ValueError(f"xs[{i}]: expected shape [T, {', '.join(map(str, tail))}], got {x.shape}")
        y = xs[0].copy() if len(xs) == 1 else xs[0] + xs[1]
        for x in xs[2:]:
            y = y + x if y.shape[0] < x.shape[0] else np.add(y, x, out=y)
        return y

    def backward(self, dy, need_dx=None):
        return tuple(unbroadcast_time(dy, lead) for lead in self._c_leads)


class Concat(Layer):
    """Channel concatenation ``y = cat(x_1, ..., x_n)`` along axis 2 (``C`` of ``[T, B, C, ...]``);
    the output of a cell with two output populations (SPEC §6.2)."""

    n_inputs = None

    def forward(self, *xs, T):
        if not xs:
            raise ValueError("xs: Concat needs at least one input")
        xs = [self._check_in(f"xs[{i}]", x, None) for i, x in enumerate(xs)]
        lead = max(x.shape[0] for x in xs)
        self._c_leads = [x.shape[0] for x in xs]
        self._c_sizes = [x.shape[2] for x in xs]
        for i, x in enumerate(xs):
            if x.ndim < 3 or x.shape[1] != xs[0].shape[1] or x.shape[3:] != xs[0].shape[3:]:
                raise ValueError(f"xs[{i}]: shape {x.shape} cannot be concatenated with {xs[0].shape} "
                                 "along the channel axis")
        xs = [x if x.shape[0] == lead else np.broadcast_to(x, (lead,) + x.shape[1:]) for x in xs]
        return np.concatenate(xs, axis=2)

    def backward(self, dy, need_dx=None):
        out, c0 = [], 0
        for lead, c in zip(self._c_leads, self._c_sizes):
            out.append(unbroadcast_time(dy[:, :, c0:c0 + c], lead))
            c0 += c
        return tuple(out)
