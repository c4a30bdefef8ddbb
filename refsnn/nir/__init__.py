"""NIR (Neuromorphic Intermediate Representation) exchange: export refsnn networks as NIR graphs and
simulate NIR graphs with refsnn's kernels (optional extra ``refsnn[nir]``).

* :mod:`refsnn.nir.mapping` -- NIR's continuous-time parameters <-> refsnn's discrete ones (equations);
* :mod:`refsnn.nir.export` -- trained Conv-LIF networks and EC deployed RSNNs -> NIR graphs;
* :mod:`refsnn.nir.simulate` -- NIR graph + input -> spikes and membrane traces per node;
* :mod:`refsnn.nir.graph` -- the checks of a graph (structure, parameters, shapes) before it runs;
* :mod:`refsnn.nir.reader` -- a NIR file -> dict form, reading only what the simulation uses, within
  the read budget of :mod:`refsnn.io`.

Only :func:`refsnn.nir.export.to_nir_graph` / :func:`refsnn.nir.export.write_nir` import ``nir``
(:mod:`refsnn.nir.reader` uses ``h5py``, which comes with it); everything else works on NIR's dict
form, so the core runs without it.
"""
