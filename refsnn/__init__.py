"""refsnn: reference NumPy/Numba implementation of two spiking-network papers.

* MSE-NAS (Pan et al., arXiv 2304.10749): multi-scale evolutionary architecture search for deep
  SNNs with the training-free BIE fitness, then STBP training.
* Evolving Connectivity (Wang et al., arXiv 2305.17650): recurrent SNNs whose 1-bit connections are
  Bernoulli samples of a probability matrix trained by natural evolution strategies.

The normative description is SPEC.md; every public function states its equation, shapes and dtypes.
"""
__version__ = "0.1.0"
