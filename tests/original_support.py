"""Loading the Evolving Connectivity authors' own JAX code for the ``original`` cross-checks.

The tests in ``test_original_ec.py`` run refsnn beside the EC reference code (Wang et al. 2023,
Apache-2.0) *unmodified*: its ``ec.py`` (the NES update, the runner) and ``networks/conn_snn.py``
(``ConnSNN``). Nothing of it is copied here; it is imported from a checkout named by the environment
variable ``REFSNN_EC_REPO``.

* ``REFSNN_EC_REPO`` unset, not a checkout, or JAX/flax/optax missing: the tests are skipped with
  the reason; with ``REFSNN_REQUIRE_ORIGINAL=1`` (CI, ``.ci/original.sh``) every such skip is a
  failure instead.
* Import shims, installed in ``sys.modules`` only for modules that cannot be imported: ``wandb``,
  ``optuna``, ``tqdm``, ``omegaconf`` (``ec.py`` imports them for logging, sweeps and its command
  line only; the stand-ins raise if anything calls them) and, when Brax v1 (``brax<0.9``, e.g.
  0.1.2) cannot be imported, ``brax.envs`` (used only by ``ec.main``) plus a small
  ``brax.training.acme.running_statistics`` / ``specs`` written here. With that stand-in
  :data:`HAVE_REAL_BRAX` is false and the observation-normaliser comparison does not run.
* ``jax_enable_x64`` is switched on so that float64 networks and updates can be compared; the
  float32 comparisons run inside ``jax.experimental.disable_x64()`` as the authors ran them. Importing
  ``ec.py`` sets JAX's default PRNG to ``unsafe_rbg`` for the whole process (as in the authors'
  runs); every key in these tests is made after that import.

Also here: the authors' network called as ``ec.py`` calls it (:class:`AuthorsRSNN`), the stand-ins
their runner needs to expose one generation (:func:`make_runner_standins`: an environment with chosen
returns, a network that records its sampled parameters) and the Gymnasium stand-in environment that
``refsnn play`` steps (:func:`register_play_env`).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import types
from pathlib import Path

import numpy as np
import pytest

ENV_REPO = "REFSNN_EC_REPO"
ENV_REQUIRE = "REFSNN_REQUIRE_ORIGINAL"

#: whether the real Brax v1 ``running_statistics`` was imported (false: the stand-in of this module)
HAVE_REAL_BRAX = False


def require_or_skip(reason: str):
    """Skip the calling test module with ``reason`` — or fail it when ``REFSNN_REQUIRE_ORIGINAL=1``."""
    if os.environ.get(ENV_REQUIRE, "") == "1":
        pytest.fail(f"{ENV_REQUIRE}=1 but the EC authors' code cannot run: {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


# ---------------------------------------------------------------------------------------------
# import shims (only for modules that are missing)
# ---------------------------------------------------------------------------------------------
def _missing(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def _unused(qualname: str):
    def fail(*args, **kwargs):
        raise RuntimeError(f"{qualname}: a stand-in of the cross-check tests (the real package is not "
                           "installed); the tested functions of ec.py never call it")
    return fail


def _stub_module(name: str, **attrs) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    mod.__getattr__ = lambda attr: _unused(f"{name}.{attr}")   # anything else: a callable that raises
    return mod


def _install_logging_shims() -> list[str]:
    """Stand-ins for ``wandb``, ``optuna``, ``tqdm``, ``omegaconf`` where they are not installed."""
    installed = []
    shims = {
        "wandb": lambda: _stub_module("wandb"),
        "optuna": lambda: _stub_module("optuna", Trial=type("Trial", (), {})),
        "tqdm": lambda: _stub_module("tqdm", tqdm=_unused("tqdm.tqdm")),
        "omegaconf": lambda: _stub_module("omegaconf", OmegaConf=type("OmegaConf", (), {
            "merge": staticmethod(_unused("OmegaConf.merge")),
            "from_cli": staticmethod(_unused("OmegaConf.from_cli"))})),
    }
    for name, make in shims.items():
        if name not in sys.modules and _missing(name):
            sys.modules[name] = make()
            installed.append(name)
    return installed


def _install_brax_shim() -> None:
    """A minimal ``brax`` for ``ec.py``'s imports when Brax v1 cannot be imported: ``brax.envs``
    (unused by the tested functions) and running statistics with Brax's interface (count, mean,
    summed variance, ``std = clip(sqrt(summed_variance / count), 1e-6, 1e6)``, ``normalize = (x -
    mean) / std``). Written here; the normaliser comparison needs the real module and is skipped."""
    import jax
    import jax.numpy as jnp
    from flax import struct

    @struct.dataclass
    class RunningStatisticsState:
        count: jnp.ndarray
        mean: jnp.ndarray
        summed_variance: jnp.ndarray
        std: jnp.ndarray

    def init_state(spec):
        dtype = jnp.float64 if jax.config.jax_enable_x64 else jnp.float32
        z = jnp.zeros(spec.shape, dtype)
        return RunningStatisticsState(jnp.zeros((), dtype), z, z, jnp.ones(spec.shape, dtype))

    def update(state, batch):
        x = batch.reshape((-1,) + state.mean.shape)
        n = state.count + x.shape[0]
        mean = state.mean + jnp.sum(x - state.mean, axis=0) / n
        sv = state.summed_variance + jnp.sum((x - state.mean) * (x - mean), axis=0)
        std = jnp.clip(jnp.sqrt(jnp.maximum(sv, 0) / n), 1e-6, 1e6)
        return RunningStatisticsState(n, mean, sv, std)

    def normalize(batch, state):
        return (batch - state.mean) / state.std

    class Array:
        def __init__(self, shape, dtype):
            self.shape, self.dtype = tuple(shape), dtype

    brax = _stub_module("brax")
    envs = _stub_module("brax.envs")
    training = _stub_module("brax.training")
    acme = _stub_module("brax.training.acme")
    rs = _stub_module("brax.training.acme.running_statistics", RunningStatisticsState=RunningStatisticsState,
                      init_state=init_state, update=update, normalize=normalize)
    specs = _stub_module("brax.training.acme.specs", Array=Array)
    brax.envs, brax.training, training.acme = envs, training, acme
    acme.running_statistics, acme.specs = rs, specs
    for mod in (brax, envs, training, acme, rs, specs):
        sys.modules[mod.__name__] = mod


# ---------------------------------------------------------------------------------------------
# loading
# ---------------------------------------------------------------------------------------------
def load() -> types.SimpleNamespace:
    """Import the authors' code (or skip/fail, module docstring). Returns a namespace with ``jax``,
    ``jnp``, ``optax``, ``ec`` (their ``ec.py``), ``ConnSNN``, ``running_statistics``, ``repo``."""
    global HAVE_REAL_BRAX
    repo = os.environ.get(ENV_REPO, "")
    if not repo:
        require_or_skip(f"{ENV_REPO} is not set (the path of the EC authors' EvolvingConnectivity checkout)")
    path = Path(repo).resolve()
    if not (path / "ec.py").is_file() or not (path / "networks" / "conn_snn.py").is_file():
        require_or_skip(f"{ENV_REPO}={repo}: no ec.py and networks/conn_snn.py there")
    for name in ("jax", "flax", "optax", "chex"):
        if _missing(name):
            require_or_skip(f"{name} is not installed (the EC authors' code needs jax, flax, optax; "
                            f".ci/original.sh installs the pinned versions)")
    for name in ("networks", "utils", "ec"):
        mod = sys.modules.get(name)
        if mod is not None and not str(getattr(mod, "__file__", "") or "").startswith(str(path)):
            require_or_skip(f"a module {name!r} from {getattr(mod, '__file__', '?')} is already imported; it would "
                            f"shadow the authors' {name}")
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
    _install_logging_shims()
    try:
        import brax.envs  # noqa: F401  (ec.py imports it at module level)
        from brax.training.acme import running_statistics, specs  # noqa: F401
        HAVE_REAL_BRAX = True
    except ImportError:
        for name in [m for m in sys.modules if m == "brax" or m.startswith("brax.")]:
            del sys.modules[name]
        _install_brax_shim()
        HAVE_REAL_BRAX = False
    import jax
    import jax.numpy as jnp
    import optax

    try:
        ec = importlib.import_module("ec")            # sets jax_default_prng_impl = "unsafe_rbg"
        conn_snn = importlib.import_module("networks.conn_snn")
    except Exception as e:   # e.g. a JAX/flax too new for the authors' code
        require_or_skip(f"importing the EC authors' ec.py from {path} failed: {type(e).__name__}: {e}")
    jax.config.update("jax_enable_x64", True)
    from brax.training.acme import running_statistics
    return types.SimpleNamespace(jax=jax, jnp=jnp, optax=optax, ec=ec, ConnSNN=conn_snn.ConnSNN,
                                 running_statistics=running_statistics, repo=path)


# ---------------------------------------------------------------------------------------------
# the authors' network, called as ec.py calls it
# ---------------------------------------------------------------------------------------------
class AuthorsRSNN:
    """``ConnSNN`` with one connectivity per member, applied through ``jax.jit(jax.vmap(apply))`` with
    the axes of ``ec._evaluate_step`` (params per member, fixed weights shared, carry and input per
    member). ``dtype`` float32 runs with x64 disabled (the authors' setting), float64 with it on."""

    def __init__(self, O, *, n_neurons, exc_ratio, sim_time, dt, obs_dim, act_dim, dtype):
        jnp = O.jnp
        self.O = O
        self.dtype = np.dtype(dtype)
        self.net = O.ConnSNN(out_dims=act_dim, num_neurons=n_neurons, excitatory_ratio=exc_ratio,
                             sim_time=sim_time, dt=dt, neuron_dtype=jnp.dtype(self.dtype))
        with self._x64():
            k = O.jax.random.PRNGKey(0)
            carry = self.net.initial_carry(k, 1)
            variables = self.net.init({"params": k, "fixed_weights": k}, carry,
                                      jnp.zeros((1, obs_dim), self.dtype))
        self.fixed_weights = variables["fixed_weights"]
        self._apply = O.jax.jit(O.jax.vmap(self.net.apply, ({"params": 0, "fixed_weights": None}, 0, 0)))

    def _x64(self):
        from jax.experimental import disable_x64, enable_x64
        return enable_x64() if self.dtype == np.float64 else disable_x64()

    def __call__(self, C_in, C_h, C_out, carry, x):
        """One env step: ``C_*`` bool ``(B, ...)``, ``carry = (v_m, i_syn, rate, spike int8)``, ``x``
        ``(B, obs)``; returns the new carry and the raw output (before ec.py's clip) as NumPy."""
        jnp = self.O.jnp
        with self._x64():
            params = {"kernel_in": jnp.asarray(C_in), "kernel_h": jnp.asarray(C_h), "kernel_out": jnp.asarray(C_out)}
            carry = tuple(jnp.asarray(c) for c in carry)
            new, out = self._apply({"params": params, "fixed_weights": self.fixed_weights}, carry,
                                   jnp.asarray(x, self.dtype))
            return tuple(np.asarray(c) for c in new), np.asarray(out)


# ---------------------------------------------------------------------------------------------
# stand-ins for the authors' runner: one generation with chosen returns, its population recorded
# ---------------------------------------------------------------------------------------------
def make_runner_standins(O, *, obs_dim: int, act_dim: int, returns, episode_len: int = 2):
    """``(env, network_factory)`` for ``ec._runner_init`` / ``ec._runnner_run``.

    The environment (Brax's batched interface: ``reset(keys)``, ``step(state, action)``,
    ``observation_size``) ends every member's episode after ``episode_len`` steps with the return
    ``returns[i]`` for member ``i`` (the reset pool's order, which is the population's), so the
    fitness that ``ec._runnner_run`` ranks is exactly ``returns``. The network class ``factory(N,
    dtype)`` has ``ConnSNN``'s parameters (``kernel_in (2 obs, N)``, ``kernel_h``, ``kernel_out``,
    bool) and copies the member's parameters into its carry; its ``carry_metrics`` hands the carry
    back in ``metrics``, which is how the sampled population leaves the jitted runner."""
    import flax.linen as nn
    from flax import struct

    jnp = O.jnp
    table = tuple(float(r) for r in returns)

    @struct.dataclass
    class State:
        obs: object
        reward: object
        done: object
        t: object
        idx: object

    class Env:
        observation_size = obs_dim
        action_size = act_dim

        def reset(self, keys):
            n = keys.shape[0]
            obs = jnp.tile(jnp.linspace(-1.0, 1.0, obs_dim, dtype=jnp.float32), (n, 1))
            return State(obs, jnp.zeros(n, jnp.float32), jnp.zeros(n, bool), jnp.zeros(n, jnp.int32),
                         jnp.arange(n, dtype=jnp.int32))

        def step(self, state, act):
            t = state.t + 1
            done = t >= episode_len
            reward = jnp.where(done, jnp.asarray(table, jnp.float32)[state.idx], 0.0)
            return state.replace(reward=reward, done=done, t=t)

    def factory(n_neurons: int, dtype):
        class RecordingNetwork(nn.Module):
            out_dims: int = act_dim

            @nn.compact
            def __call__(self, carry, x):
                self.variable("fixed_weights", "dummy", lambda: None)
                p = {"kernel_in": self.param("kernel_in", nn.initializers.zeros, (2 * x.shape[-1], n_neurons),
                                             jnp.bool_),
                     "kernel_h": self.param("kernel_h", nn.initializers.zeros, (n_neurons, n_neurons), jnp.bool_),
                     "kernel_out": self.param("kernel_out", nn.initializers.zeros, (n_neurons, self.out_dims),
                                              jnp.bool_)}
                new = {k: jnp.broadcast_to(v, carry[k].shape) for k, v in p.items()}
                return new, jnp.zeros(x.shape[:-1] + (self.out_dims,), dtype)

            def initial_carry(self, key, batch_size):
                return {"kernel_in": jnp.zeros((batch_size, 2 * obs_dim, n_neurons), bool),
                        "kernel_h": jnp.zeros((batch_size, n_neurons, n_neurons), bool),
                        "kernel_out": jnp.zeros((batch_size, n_neurons, act_dim), bool)}

            def carry_metrics(self, carry):
                return {f"population.{k}": v for k, v in carry.items()}

        return RecordingNetwork()

    return Env(), factory


# ---------------------------------------------------------------------------------------------
# the Gymnasium stand-in that `refsnn play` steps
# ---------------------------------------------------------------------------------------------
#: actions the play stand-in received, per episode seed: ``{env_seed: [action, ...]}``
PLAY_ACTIONS: dict[int, list] = {}


def play_observations(env_seed: int, obs_dim: int, n_steps: int) -> np.ndarray:
    """The observations the play stand-in emits for ``env_seed``: ``(n_steps + 1, obs_dim)`` float32
    values (reset first), a function of the seed only (the actions do not change them)."""
    rng = np.random.default_rng([int(env_seed), 7])
    return (rng.standard_normal((n_steps + 1, obs_dim)) * 2.0 + 0.5).astype(np.float32)


def register_play_env(obs_dim: int, act_dim: int, max_steps: int) -> str:
    """Register (once) a Gymnasium environment that emits :func:`play_observations`, records each
    action in :data:`PLAY_ACTIONS` and rewards ``sum(action)``; returns its id."""
    import gymnasium as gym

    env_id = f"RefsnnOriginalStandIn-o{obs_dim}a{act_dim}-v0"
    if env_id in gym.registry:
        return env_id

    class PlayStandIn(gym.Env):
        metadata = {"render_modes": []}

        def __init__(self):
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (obs_dim,), np.float32)
            self.action_space = gym.spaces.Box(-1.0, 1.0, (act_dim,), np.float32)
            self._obs, self._t, self._seed = None, 0, None

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            self._seed, self._t = int(seed), 0
            self._obs = play_observations(self._seed, obs_dim, max_steps)
            PLAY_ACTIONS[self._seed] = []
            return self._obs[0], {}

        def step(self, action):
            PLAY_ACTIONS[self._seed].append(np.array(action, dtype=np.float32))
            self._t += 1
            return self._obs[self._t], float(np.sum(action)), False, False, {}

    gym.register(id=env_id, entry_point=PlayStandIn, max_episode_steps=max_steps)
    return env_id
