"""Small data sets and models that need no download (scikit-learn's bundled digits).

Used by the demo, the examples, the tests and the metrics' retraining benchmarks; kept apart
from `fattr.run` (the command line and the distributed runner) so that importing them never
pulls in torch.distributed.
"""
