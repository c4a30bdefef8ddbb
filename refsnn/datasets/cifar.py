"""CIFAR-10/100 "python version" batches through a strict pickle parser (SPEC §1, §4.3).

The official files (https://www.cs.toronto.edu/~kriz/cifar.html, "CIFAR-10 python version",
"CIFAR-100 python version") are Python-2 pickles (protocol 2) of dicts:

* CIFAR-10 ``data_batch_1`` .. ``data_batch_5``, ``test_batch``: ``{b"batch_label": bytes,
  b"labels": list[int] (n,), b"data": uint8 ndarray (n, 3072), b"filenames": list[bytes]}``
* CIFAR-100 ``train``, ``test``: the same with ``b"fine_labels"`` (0..99) and ``b"coarse_labels"``
  (0..19) instead of ``b"labels"``.

Each row of ``data`` is a 32x32 colour image stored channel-planar (1024 red, 1024 green, 1024
blue values, each plane row-major), so ``data.reshape(n, 3, 32, 32)`` is NCHW.

Design: no unpickler runs on these files
-----------------------------------------
``pickle.Unpickler`` (even with a restrictive ``find_class``) calls whatever the file names with
arguments the file chooses, and applies ``BUILD`` to any object on its stack: an allowed
``bytearray``/``list``/``numpy.ndarray`` becomes a memory bomb, an allowed function has its
attributes rewritten. So this module never unpickles. :func:`read_batch` reads the file into
memory and *parses* its opcodes itself (:func:`_parse`), accepting only what Python 2's cPickle
and Python 3's pickle (protocols 2 to 5, with NumPy 1.x or 2.x) write for a CIFAR batch:

* ``PROTO`` 2..5 first, ``FRAME``, ``STOP`` at the last byte; ``MARK``, the memo (``PUT``/``GET``
  binary forms, ``MEMOIZE``);
* values: ``None``, booleans, ints of at most 8 bytes, bytes (Python 2 ``str`` opcodes read as
  bytes, as ``encoding="bytes"`` does), str, bytearray (protocol-5 in-band buffers), tuples,
  lists and dicts filled by ``APPEND(S)``/``SETITEM(S)``; dict keys must be bytes, str or int;
* globals are looked up in :data:`ALLOWED_GLOBALS` and become inert tokens, never the real
  callables; ``REDUCE`` accepts exactly these calls, with their arguments checked:
  ``_codecs.encode(str, "latin1")`` and ``bytes()`` (how Python 3 writes bytes at protocol 2),
  ``numpy.dtype(name, align, copy)`` for an integer type name,
  ``_reconstruct(numpy.ndarray, (0,), b"b")`` (an array placeholder, nothing allocated) and, at
  protocol 5, ``_frombuffer(buffer, dtype, shape, order)``;
* ``BUILD`` only once on such a dtype (state: byte order, no fields/subarray/metadata) or such an
  array placeholder (state: ``(version, shape, dtype, fortran, raw bytes)``); any other ``BUILD``,
  every other opcode (``INST``/``OBJ``/``NEWOBJ``, persistent ids, extensions, out-of-band
  protocol-5 buffers, which a single file cannot hold, ...) and any other global are refused.

Why a file cannot make it allocate more than the file justifies: every length read from the file
(strings, frames) is checked against the bytes that remain *before* slicing; ints are at most 8
bytes; an array is only ever a view of a bytes payload present in the file, accepted when the
shape's element count times the item size equals the payload length exactly; lists, tuples, dicts
and the memo grow by one entry per opcode (they hold references, so shared references cost
nothing), and the number of opcodes is capped by a fixed allowance plus one per 64 file bytes
(genuine batches use a few per 3,072-byte image); nothing is ever converted recursively. The
result must then be exactly the documented structure: a dict with bytes keys, ``b"data"`` a uint8
array ``(n, 3072)``, the label key a list/tuple of plain ints (or a 1-D integer array) of length
``n`` in range. Any failure is a ``ValueError`` naming the file: :class:`RefusedPickleError` for a
feature outside the accepted subset, a plain ``ValueError`` for truncated or malformed data.
"""
from __future__ import annotations

import math
import pickletools
import struct
from pathlib import Path

import numpy as np

CIFAR10_TRAIN = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST = ("test_batch",)
CIFAR100_TRAIN = ("train",)
CIFAR100_TEST = ("test",)
SUBDIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
LABEL_KEYS = {b"labels": 10, b"fine_labels": 100, b"coarse_labels": 20}
"""Label keys of the batch dicts -> number of classes (labels must lie in 0..k-1)."""

ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): "_reconstruct",  # NumPy 1.x (and Python 2)
    ("numpy._core.multiarray", "_reconstruct"): "_reconstruct",  # NumPy 2.x
    ("numpy.core.numeric", "_frombuffer"): "_frombuffer",  # protocol 5, NumPy 1.x
    ("numpy._core.numeric", "_frombuffer"): "_frombuffer",  # protocol 5, NumPy 2.x
    ("numpy", "ndarray"): "ndarray",
    ("numpy", "dtype"): "dtype",
    ("_codecs", "encode"): "encode",  # Python 3 bytes at protocol 2
    ("__builtin__", "bytes"): "bytes",  # Python 3 empty bytes at protocol 2
    ("builtins", "bytes"): "bytes",
}
"""The only globals a batch may name -> the inert token that stands for it while parsing."""

_INT_DTYPES = ("u1", "i1", "u2", "i2", "u4", "i4", "u8", "i8")
_FREE_OPCODES = 1 << 14  # opcode allowance of any file ...
_BYTES_PER_OPCODE = 64  # ... plus one opcode per this many bytes of it
_MAX_NDIM = 32


class RefusedPickleError(ValueError):
    """A batch file used a pickle feature outside the CIFAR subset; nothing was executed."""


class _Token:
    """An allowed global while parsing: a name, never the callable itself."""

    __slots__ = ("kind", "qualname")

    def __init__(self, kind: str, qualname: str):
        self.kind, self.qualname = kind, qualname


class _Dtype:
    """``numpy.dtype(name, ...)``; ``dtype`` is set by its one ``BUILD``."""

    __slots__ = ("name", "dtype")

    def __init__(self, name: str):
        self.name, self.dtype = name, None


class _Array:
    """An array placeholder; ``array`` is set by its one ``BUILD`` (or by ``_frombuffer``)."""

    __slots__ = ("array",)

    def __init__(self, array=None):
        self.array = array


def _kind(obj) -> str:
    """A short description of a parsed value for messages (never its repr: it may be huge)."""
    if isinstance(obj, _Token):
        return obj.qualname
    if isinstance(obj, _Dtype):
        return "numpy dtype"
    if isinstance(obj, _Array):
        a = obj.array
        return "unbuilt numpy array" if a is None else f"{a.dtype} array {a.shape}"
    return type(obj).__name__


def _text(obj) -> str | None:
    """``obj`` as a short ASCII string if it is str or bytes (Python 2 ``str``), else None."""
    if isinstance(obj, bytes) and len(obj) <= 16:
        try:
            return obj.decode("ascii")
        except UnicodeDecodeError:
            return None
    return obj if isinstance(obj, str) and len(obj) <= 16 else None


def _is_int(x) -> bool:
    return type(x) is int or type(x) is bool


class _Parser:
    """One pass over the opcodes of ``buf``; see the module docstring for what is accepted."""

    def __init__(self, buf: bytes, source: str):
        self.buf, self.source, self.pos = buf, source, 0
        self.mv = memoryview(buf)
        self.at = 0  # offset of the opcode being parsed (for messages)

    # -- errors and raw reads --------------------------------------------------------------------
    def refuse(self, what: str) -> RefusedPickleError:
        return RefusedPickleError(f"{self.source}: refused {what} (byte {self.at}); a CIFAR python "
                                  f"batch holds only a dict of bytes, int lists and a uint8 numpy "
                                  f"array, so this file is not one (or is malicious)")

    def bad(self, what: str) -> ValueError:
        return ValueError(f"{self.source}: not a readable CIFAR python batch: {what} "
                          f"(byte {self.at})")

    def view(self, n: int) -> memoryview:
        """The next ``n`` bytes without copying them, once ``n`` is known to fit in the file."""
        if n < 0 or n > len(self.buf) - self.pos:
            raise self.bad(f"truncated: {n} bytes announced, {len(self.buf) - self.pos} left")
        self.pos += n
        return self.mv[self.pos - n:self.pos]

    def take(self, n: int) -> bytes:
        return bytes(self.view(n))

    def unpack(self, fmt: str) -> int:
        return struct.unpack(fmt, self.view(struct.calcsize(fmt)))[0]

    def line(self) -> str:
        end = self.buf.find(b"\n", self.pos, self.pos + 256)
        if end < 0:
            raise self.bad("GLOBAL argument without a newline within 256 bytes")
        out = self.buf[self.pos:end]
        self.pos = end + 1
        try:
            return out.decode("ascii")
        except UnicodeDecodeError:
            raise self.bad("non-ASCII GLOBAL argument") from None

    # -- the parse -------------------------------------------------------------------------------
    def run(self):  # noqa: C901 - one branch per accepted opcode reads best as one loop
        buf = self.buf
        if len(buf) < 2 or buf[0] != 0x80:
            raise self.bad("no PROTO opcode at the start (not a pickle of protocol 2..5)")
        if not 2 <= buf[1] <= 5:
            raise self.refuse(f"pickle protocol {buf[1]} (CIFAR batches use 2..5)")
        self.pos = 2
        stack: list = []
        metastack: list[list] = []
        memo: dict[int, object] = {}
        budget = _FREE_OPCODES + len(buf) // _BYTES_PER_OPCODE

        def pop():
            if not stack:
                raise self.bad("stack underflow")
            return stack.pop()

        def top():
            if not stack:
                raise self.bad("stack underflow")
            return stack[-1]

        def pop_mark() -> list:
            nonlocal stack
            if not metastack:
                raise self.bad("no MARK to pop to")
            items, stack = stack, metastack.pop()
            return items

        for _ in range(budget):
            if self.pos >= len(buf):
                raise self.bad("truncated: no STOP opcode")
            self.at = self.pos
            op = buf[self.pos]
            self.pos += 1
            if op == 0x95:  # FRAME: framing is transparent; only its length is checked
                n = self.unpack("<Q")
                if n > len(buf) - self.pos:
                    raise self.bad(f"truncated: frame of {n} bytes, {len(buf) - self.pos} left")
            elif op == 0x2E:  # STOP
                if metastack or len(stack) != 1:
                    raise self.bad("STOP with an unbalanced stack")
                if self.pos != len(buf):
                    raise self.bad(f"{len(buf) - self.pos} bytes after STOP")
                return stack[0]
            elif op == 0x28:  # MARK
                metastack.append(stack)
                stack = []
            elif op == 0x7D:  # EMPTY_DICT
                stack.append({})
            elif op == 0x5D:  # EMPTY_LIST
                stack.append([])
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(())
            elif op == 0x4E:  # NONE
                stack.append(None)
            elif op in (0x88, 0x89):  # NEWTRUE, NEWFALSE
                stack.append(op == 0x88)
            elif op == 0x4B:  # BININT1
                stack.append(self.unpack("<B"))
            elif op == 0x4D:  # BININT2
                stack.append(self.unpack("<H"))
            elif op == 0x4A:  # BININT
                stack.append(self.unpack("<i"))
            elif op == 0x8A:  # LONG1
                n = self.unpack("<B")
                if n > 8:
                    raise self.refuse(f"an integer of {n} bytes")
                stack.append(int.from_bytes(self.take(n), "little", signed=True))
            elif op in (0x55, 0x43):  # SHORT_BINSTRING (Python 2 str, read as bytes), SHORT_BINBYTES
                stack.append(self.take(self.unpack("<B")))
            elif op == 0x54:  # BINSTRING (Python 2 str, read as bytes)
                stack.append(self.take(self.unpack("<i")))
            elif op == 0x42:  # BINBYTES
                stack.append(self.take(self.unpack("<I")))
            elif op == 0x8E:  # BINBYTES8
                stack.append(self.take(self.unpack("<Q")))
            elif op == 0x96:  # BYTEARRAY8 (protocol-5 in-band buffer)
                stack.append(bytearray(self.view(self.unpack("<Q"))))
            elif op in (0x8C, 0x58, 0x8D):  # SHORT_BINUNICODE, BINUNICODE, BINUNICODE8
                raw = self.view(self.unpack({0x8C: "<B", 0x58: "<I", 0x8D: "<Q"}[op]))
                try:
                    stack.append(str(raw, "utf-8", "surrogatepass"))
                except UnicodeDecodeError:
                    raise self.bad("invalid UTF-8 in a string") from None
            elif op in (0x71, 0x72, 0x94):  # BINPUT, LONG_BINPUT, MEMOIZE
                i = len(memo) if op == 0x94 else self.unpack("<B" if op == 0x71 else "<I")
                memo[i] = top()
            elif op in (0x68, 0x6A):  # BINGET, LONG_BINGET
                i = self.unpack("<B" if op == 0x68 else "<I")
                if i not in memo:
                    raise self.bad(f"memo index {i} was never stored")
                stack.append(memo[i])
            elif op == 0x63:  # GLOBAL
                module = self.line()
                stack.append(self.glob(module, self.line()))
            elif op == 0x93:  # STACK_GLOBAL
                name, module = pop(), pop()
                if not (isinstance(module, str) and isinstance(name, str)):
                    raise self.bad("STACK_GLOBAL of non-strings")
                stack.append(self.glob(module, name))
            elif op == 0x52:  # REDUCE
                args, func = pop(), pop()
                stack.append(self.reduce(func, args))
            elif op == 0x62:  # BUILD
                state = pop()
                self.build(top(), state)
            elif op == 0x74:  # TUPLE
                items = pop_mark()  # (rebinds stack: not inside stack.append(...))
                stack.append(tuple(items))
            elif op in (0x85, 0x86, 0x87):  # TUPLE1, TUPLE2, TUPLE3
                n = op - 0x84
                if len(stack) < n:
                    raise self.bad("stack underflow")
                items = tuple(stack[-n:])
                del stack[-n:]
                stack.append(items)
            elif op in (0x61, 0x65):  # APPEND, APPENDS
                items = [pop()] if op == 0x61 else pop_mark()
                target = top()
                if type(target) is not list:
                    raise self.refuse(f"APPEND to a {_kind(target)}")
                target.extend(items)
            elif op in (0x73, 0x75):  # SETITEM, SETITEMS
                items = [pop(), pop()][::-1] if op == 0x73 else pop_mark()
                target = top()
                if type(target) is not dict or len(items) % 2:
                    raise self.refuse(f"SETITEM on a {_kind(target)} or an odd item count")
                for k, v in zip(items[::2], items[1::2]):
                    if type(k) not in (bytes, str, int):
                        raise self.refuse(f"a dict key of type {_kind(k)}")
                    target[k] = v
            elif op in (0x97, 0x98):  # NEXT_BUFFER, READONLY_BUFFER
                raise self.refuse("an out-of-band protocol-5 buffer (not stored in the file; "
                                  "pickle the batch without buffer_callback)")
            else:
                info = pickletools.code2op.get(chr(op))
                raise self.refuse(f"opcode {info.name if info else 'unknown'} (0x{op:02x})")
        raise self.refuse(f"more than {budget} opcodes for a file of {len(buf)} bytes")

    # -- the calls a CIFAR batch makes -----------------------------------------------------------
    def glob(self, module: str, name: str) -> _Token:
        kind = ALLOWED_GLOBALS.get((module, name))
        if kind is None:
            raise self.refuse(f"the global {module[:80]}.{name[:80]}: only "
                              f"{', '.join(sorted({f'{m}.{n}' for m, n in ALLOWED_GLOBALS}))}")
        return _Token(kind, f"{module}.{name}")

    def reduce(self, func, args):
        if not isinstance(func, _Token):
            raise self.refuse(f"REDUCE of a {_kind(func)}")
        if type(args) is not tuple:
            raise self.refuse(f"REDUCE of {func.qualname} with {_kind(args)} arguments")
        kind = func.kind
        if kind == "encode":
            if len(args) != 2 or not isinstance(args[0], str) or args[1] not in ("latin1", "latin-1"):
                raise self.refuse("_codecs.encode other than encode(str, 'latin1')")
            try:
                return args[0].encode("latin-1")
            except UnicodeEncodeError:
                raise self.bad("_codecs.encode of a non-latin1 string") from None
        if kind == "bytes":
            if args != ():
                raise self.refuse("bytes(...) with arguments (only bytes() is written)")
            return b""
        if kind == "dtype":
            name = _text(args[0]) if len(args) == 3 else None
            if name not in _INT_DTYPES or not (_is_int(args[1]) and _is_int(args[2])):
                raise self.refuse("numpy.dtype other than dtype(integer type code, align, copy)")
            return _Dtype(name)
        if kind == "_reconstruct":
            if not (len(args) == 3 and isinstance(args[0], _Token) and args[0].kind == "ndarray"
                    and type(args[1]) is tuple and len(args[1]) == 1 and type(args[1][0]) is int
                    and args[1][0] == 0 and _text(args[2]) == "b"):
                raise self.refuse("_reconstruct other than _reconstruct(numpy.ndarray, (0,), b'b')")
            return _Array()
        if kind == "_frombuffer":
            if len(args) != 4 or not isinstance(args[0], (bytes, bytearray)) \
                    or _text(args[3]) not in ("C", "F"):
                raise self.refuse("_frombuffer other than _frombuffer(buffer, dtype, shape, order)")
            return _Array(self.array(args[2], args[1], args[0], _text(args[3]) == "F"))
        raise self.refuse(f"a call of {func.qualname}")

    def build(self, inst, state) -> None:
        if isinstance(inst, _Dtype) and inst.dtype is None:
            # (version 3, byte order, subarray, names, fields, elsize, alignment, flags) [+ metadata]
            ok = type(state) is tuple and (
                (len(state) == 8 and state[0] == 3) or (len(state) == 9 and state[0] == 4
                                                         and state[8] is None))
            order = _text(state[1]) if ok else None
            itemsize = int(inst.name[1])
            if not ok or state[2:5] != (None, None, None) or state[5:8] != (-1, -1, 0) \
                    or order not in (("|",) if itemsize == 1 else ("<", ">", "=")):
                raise self.refuse(f"the state of numpy.dtype({inst.name!r}): only a plain integer "
                                  f"type with its byte order")
            inst.dtype = np.dtype(("" if order == "|" else order) + inst.name)
        elif isinstance(inst, _Array) and inst.array is None:
            # (version 1, shape, dtype, is_fortran, raw bytes), or the same without the version
            if type(state) is tuple and len(state) == 5 and type(state[0]) is int and state[0] == 1:
                state = state[1:]
            if type(state) is not tuple or len(state) != 4 or not _is_int(state[2]) \
                    or not isinstance(state[3], (bytes, bytearray)):
                raise self.refuse("an array state other than (version, shape, dtype, fortran, "
                                  "raw bytes)")
            inst.array = self.array(state[0], state[1], state[3], bool(state[2]))
        else:
            raise self.refuse(f"BUILD (setting the state) of a {_kind(inst)}")

    def array(self, shape, dtype, raw, fortran: bool) -> np.ndarray:
        """A view of ``raw`` (bytes present in the file) as ``shape``; its size must match exactly."""
        if not isinstance(dtype, _Dtype) or dtype.dtype is None:
            raise self.refuse(f"an array whose dtype is a {_kind(dtype)}")
        if type(shape) is not tuple or len(shape) > _MAX_NDIM \
                or not all(type(d) is int and d >= 0 for d in shape):
            raise self.refuse("an array shape other than a tuple of non-negative ints")
        need = math.prod(shape) * dtype.dtype.itemsize
        if need != len(raw):
            raise self.bad(f"an array {shape} of {dtype.dtype} needs {need} bytes, the file holds "
                           f"{len(raw)}")
        try:  # a zero-size array may still name dimensions NumPy cannot represent
            return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order="F" if fortran else "C")
        except ValueError as e:
            raise self.bad(f"array shape {shape}: {e}") from None


def _parse(buf: bytes, source: str):
    """The object a CIFAR batch pickle ``buf`` describes (arrays as ``_Array``); see the module doc."""
    return _Parser(buf, source).run()


def _batch_from_bytes(buf: bytes, source: str, label_key: bytes):
    """Parse and check a batch file's bytes -> (data uint8 (n, 3072), a view of a payload of
    ``buf``; labels int64 (n,)); ``ValueError`` naming ``source`` unless exactly a CIFAR batch."""
    k = LABEL_KEYS[label_key]
    obj = _parse(buf, source)
    if type(obj) is not dict or b"data" not in obj or label_key not in obj:
        if type(obj) is dict:  # at most 8 keys, each cut to 40 characters: they may be huge
            cut = [repr(key[:40] if isinstance(key, (bytes, str)) else key) for key in list(obj)[:8]]
            keys = f"[{', '.join(cut)}]"
        else:
            keys = _kind(obj)
        raise ValueError(f"{source}: expected a dict with keys b'data' and {label_key!r}, got {keys}")
    data, labels = obj[b"data"], obj[label_key]
    a = data.array if isinstance(data, _Array) else None
    if a is None or a.dtype != np.uint8 or a.ndim != 2 or a.shape[1] != 3072:
        raise ValueError(f"{source}: b'data' should be a uint8 array (n, 3072), got {_kind(data)}")
    n = a.shape[0]
    if type(labels) in (list, tuple):
        ints = all(type(v) is int for v in labels)
        if len(labels) != n or not ints:
            raise ValueError(f"{source}: {label_key!r} should be a list of {n} integers, got a "
                             f"{type(labels).__name__} of {len(labels)} "
                             f"{'integers' if ints else 'values'}")
        y = np.array(labels, dtype=np.int64)  # ints of at most 8 bytes: they fit
    elif isinstance(labels, _Array) and labels.array is not None and labels.array.ndim == 1 \
            and labels.array.dtype.kind in "iu" and len(labels.array) == n:
        y = labels.array
    else:
        raise ValueError(f"{source}: {label_key!r} should be a list of {n} integers, got "
                         f"{_kind(labels)}")
    if n and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"{source}: {label_key!r} outside 0..{k - 1} (min {y.min()}, "
                         f"max {y.max()})")
    return a, y.astype(np.int64)


def read_batch(path, label_key: bytes) -> tuple[np.ndarray, np.ndarray]:
    """One batch file -> images uint8 (n, 3, 32, 32), labels int64 (n,), both fresh arrays.

    ``label_key`` is one of :data:`LABEL_KEYS` (``b"labels"`` for CIFAR-10, ``b"fine_labels"`` or
    ``b"coarse_labels"`` for CIFAR-100); labels must lie in 0..k-1 for that key's k.
    ``FileNotFoundError`` if ``path`` is not a file, otherwise ``ValueError`` naming it.
    """
    if label_key not in LABEL_KEYS:
        raise ValueError(f"label_key: expected one of {sorted(LABEL_KEYS)}, got {label_key!r}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        buf = path.read_bytes()
    except OSError as e:
        raise ValueError(f"{path}: cannot read the CIFAR batch: {e.strerror or e}") from None
    data, labels = _batch_from_bytes(buf, str(path), label_key)
    del buf  # the pixels are a view of their own payload: free the file before copying them
    return np.array(data, dtype=np.uint8, order="C").reshape(-1, 3, 32, 32), labels


def _resolve_dir(root: Path, kind: str, names: tuple[str, ...]) -> Path:
    if not root.is_dir():
        raise FileNotFoundError(f"{kind}:{root}: no such directory")
    for d in (root, root / SUBDIRS[kind]):
        if all((d / n).is_file() for n in names):
            return d
    raise FileNotFoundError(
        f"{kind}:{root}: expected the files {', '.join(names)} of the '{kind}' python version in "
        f"{root} or {root / SUBDIRS[kind]}; refsnn never downloads them (get them from "
        f"https://www.cs.toronto.edu/~kriz/cifar.html)")


def load_cifar_arrays(kind: str, root) -> dict[str, np.ndarray]:
    """``x_train``/``x_test`` uint8 (N, 3, 32, 32), ``y_train``/``y_test`` int64 of a CIFAR dir.

    ``kind`` is ``"cifar10"`` or ``"cifar100"`` (fine labels); ``root`` holds the batch files
    directly or in the archive's own subdirectory (``cifar-10-batches-py``/``cifar-100-python``).
    """
    if kind == "cifar10":
        train, test, key = CIFAR10_TRAIN, CIFAR10_TEST, b"labels"
    elif kind == "cifar100":
        train, test, key = CIFAR100_TRAIN, CIFAR100_TEST, b"fine_labels"
    else:
        raise ValueError(f"kind: expected 'cifar10' or 'cifar100', got {kind!r}")
    d = _resolve_dir(Path(root), kind, train + test)
    out = {}
    for split, names in (("train", train), ("test", test)):
        parts = [read_batch(d / n, key) for n in names]
        out[f"x_{split}"] = np.concatenate([p[0] for p in parts])
        out[f"y_{split}"] = np.concatenate([p[1] for p in parts])
    return out
