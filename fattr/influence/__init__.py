"""Training-data influence: TracIn (TracInCP, TracInCPFast, random projections).

>>> tr = fattr.influence.tracin(f, checkpoints, nn.CrossEntropyLoss(reduction="sum"))
>>> scores = tr(x_train, y_train, x_test, y_test)           # (n_test, n_train)
>>> values, rows = fattr.influence.top_k(scores, 5)          # proponents
"""

from fattr.influence.self_influence import self_influence
from fattr.influence.top_k import top_k
from fattr.influence.tracin import tracin

__all__ = ["self_influence", "top_k", "tracin"]
