"""Bit-packed connectivity and spikes of the EC RSNN (SPEC §5.3).

The layout read by :func:`refsnn.kernels.cuba.cuba_env_step_packed` and
:func:`refsnn.kernels.cuba.packed_matvec` (all names re-exported by :mod:`refsnn.kernels.cuba`).
Neurons ``0..n_exc-1`` are excitatory, ``n_exc..N-1`` inhibitory; each part is packed on its own,
little-endian, 64 neurons per uint64 word::

    (WE, WI) = (ceil(n_exc / 64), ceil((N - n_exc) / 64))              # n_words
    bit b of word w <  WE  <->  neuron 64 w + b                         # excitatory part
    bit b of word w >= WE  <->  neuron n_exc + 64 (w - WE) + b          # inhibitory part

* connectivity (:func:`pack_hidden`): ``C_h`` bool ``(..., N_pre, N_post)`` is stored *transposed*
  and word-major, ``Chp[..., w, j]`` = the words of the presynaptic partners of postsynaptic neuron
  ``j``: bit ``b`` of ``Chp[..., w, j]`` is ``C_h[..., i, j]`` for the neuron ``i`` of ``(w, b)``;
* spikes (:func:`pack_spikes`): ``sbits[m, w]`` with bit ``b`` set iff neuron ``i(w, b)`` spiked
  (``s != 0``); :func:`unpack_spikes` returns them with Dale's sign, ``+1`` excitatory, ``-1``
  inhibitory.

The unused high bits of the last word of each part are 0 (the popcounts would otherwise count
neurons that do not exist; :func:`_check_spike_padding` refuses spike words that break this).
Unpacking is the exact inverse of packing (``unpack_hidden(pack_hidden(C, n_exc), N, n_exc) == C``).

Plain NumPy (``np.packbits`` / ``np.unpackbits``), used once per connectivity sample or state
conversion, not inside the substep loop; the Numba kernels that read the words are in
:mod:`refsnn.kernels.cuba`.
"""
from __future__ import annotations

import numpy as np

from refsnn._checks import FLOAT_DTYPES, check_array, check_int

__all__ = ["n_words", "pack_hidden", "unpack_hidden", "pack_spikes", "unpack_spikes"]


def n_words(n_exc: int, n_neurons: int) -> tuple[int, int]:
    """``(WE, WI)``: uint64 words for the excitatory and the inhibitory part of a packed row."""
    return (n_exc + 63) // 64, (n_neurons - n_exc + 63) // 64


def _check_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype: expected float32 or float64, got {dtype!r}") from None
    if dt not in FLOAT_DTYPES:
        raise TypeError(f"dtype: expected float32 or float64, got {dt}")
    return dt


def _pack_bits_last(bits: np.ndarray, n_words_: int) -> np.ndarray:
    """Pack a bool array's last axis (length L <= 64 n_words_) little-endian into uint64 words."""
    lead = bits.shape[:-1]
    L = bits.shape[-1]
    padded = np.zeros(lead + (n_words_ * 64,), dtype=np.uint8)
    padded[..., :L] = bits
    by = np.packbits(padded.reshape(lead + (n_words_, 64)), axis=-1, bitorder="little")
    return np.ascontiguousarray(by).view("<u8").reshape(lead + (n_words_,)).astype(np.uint64)


def _unpack_bits_last(words: np.ndarray, L: int) -> np.ndarray:
    lead = words.shape[:-1]
    by = np.ascontiguousarray(words.astype("<u8")).view(np.uint8).reshape(lead + (words.shape[-1], 8))
    bits = np.unpackbits(by, axis=-1, bitorder="little").reshape(lead + (words.shape[-1] * 64,))
    return bits[..., :L].astype(bool)


def pack_hidden(C_h: np.ndarray, n_exc: int) -> np.ndarray:
    """Pack recurrent connectivity ``C_h`` (bool ``(..., N_pre, N_post)``) to uint64 ``(..., WE+WI, N_post)``.

    Column ``j`` of ``C_h`` (the presynaptic partners of neuron ``j``) becomes the words
    ``Chp[..., :, j]``, split at presynaptic ``n_exc`` (module docstring). Stored word-major so the
    kernel's loop over postsynaptic neurons is contiguous."""
    C_h = check_array("C_h", C_h, ndim_min=2, dtypes=(np.dtype(bool),))
    N = C_h.shape[-2]
    if C_h.shape[-1] != N:
        raise ValueError(f"C_h: expected a square (..., N, N) matrix, got shape {C_h.shape}")
    n_exc = check_int("n_exc", n_exc, lo=0, hi=N)
    we, wi = n_words(n_exc, N)
    ct = np.swapaxes(C_h, -1, -2)  # (..., post, pre)
    words = np.concatenate([_pack_bits_last(ct[..., :n_exc], we), _pack_bits_last(ct[..., n_exc:], wi)],
                           axis=-1)    # (..., post, W)
    return np.ascontiguousarray(np.swapaxes(words, -1, -2))


def unpack_hidden(Chp: np.ndarray, n_neurons: int, n_exc: int) -> np.ndarray:
    """Inverse of :func:`pack_hidden`: bool ``(..., N_pre, N_post)``."""
    Chp = check_array("Chp", Chp, ndim_min=2, dtypes=(np.dtype(np.uint64),))
    n_neurons = check_int("n_neurons", n_neurons, lo=1)
    n_exc = check_int("n_exc", n_exc, lo=0, hi=n_neurons)
    we, wi = n_words(n_exc, n_neurons)
    if Chp.shape[-2:] != (we + wi, n_neurons):
        raise ValueError(f"Chp: expected shape (..., {we + wi}, {n_neurons}), got {Chp.shape}")
    Chp = np.swapaxes(Chp, -1, -2)
    ct = np.concatenate([_unpack_bits_last(Chp[..., :we], n_exc),
                         _unpack_bits_last(Chp[..., we:], n_neurons - n_exc)], axis=-1)
    return np.ascontiguousarray(np.swapaxes(ct, -1, -2))


def pack_spikes(s: np.ndarray, n_exc: int) -> np.ndarray:
    """Signed spikes ``s`` (float ``(B, N)``, nonzero = spike) -> uint64 ``(B, WE+WI)`` words."""
    s = check_array("s", s, ndim=2)
    N = s.shape[1]
    n_exc = check_int("n_exc", n_exc, lo=0, hi=N)
    we, wi = n_words(n_exc, N)
    b = s != 0
    return np.concatenate([_pack_bits_last(b[:, :n_exc], we), _pack_bits_last(b[:, n_exc:], wi)], axis=-1)


def unpack_spikes(sbits: np.ndarray, n_neurons: int, n_exc: int, dtype=np.float32) -> np.ndarray:
    """uint64 spike words -> signed float spikes ``(B, N)``: +1 excitatory, -1 inhibitory, 0 silent."""
    sbits = check_array("sbits", sbits, ndim=2, dtypes=(np.dtype(np.uint64),))
    n_neurons = check_int("n_neurons", n_neurons, lo=1)
    n_exc = check_int("n_exc", n_exc, lo=0, hi=n_neurons)
    dtype = _check_dtype(dtype)
    we, wi = n_words(n_exc, n_neurons)
    if sbits.shape[1] != we + wi:
        raise ValueError(f"sbits: expected {we + wi} words per row, got shape {sbits.shape}")
    b = np.concatenate([_unpack_bits_last(sbits[:, :we], n_exc),
                        _unpack_bits_last(sbits[:, we:], n_neurons - n_exc)], axis=1)
    sign = np.ones(n_neurons, dtype=dtype)
    sign[n_exc:] = -1
    return (b * sign).astype(dtype)


def _check_spike_padding(name: str, sbits: np.ndarray, n_exc: int, n_neurons: int) -> None:
    """The unused high bits of the last E word and the last I word must be 0: the popcounts would
    count them as spikes of neurons that do not exist (``B x (WE+WI)`` words, a negligible pass)."""
    we, wi = n_words(n_exc, n_neurons)
    for w, used in ((we - 1, n_exc - 64 * (we - 1)), (we + wi - 1, n_neurons - n_exc - 64 * (wi - 1))):
        if w < 0 or used >= 64 or (w == we - 1 and we == 0) or (w == we + wi - 1 and wi == 0):
            continue
        if (sbits[:, w] >> np.uint64(used)).any():
            raise ValueError(f"{name}: bits set beyond the last neuron of a word (word {w} uses {used} "
                             f"bits for N={n_neurons}, n_exc={n_exc}); pack spikes with pack_spikes")
