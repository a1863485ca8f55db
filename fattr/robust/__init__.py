"""Adversarial robustness: attacks as pure functions over (params, x, target).

>>> adv = fattr.robust.pgd(f, 0.1, 0.02, 10, bounds=(0.0, 1.0))(params, x, labels)
>>> (f(params, adv).argmax(1) == labels).float().mean()     # accuracy under attack
"""

from fattr.robust.attack_comparator import Summary, attack_comparator
from fattr.robust.fgsm import fgsm
from fattr.robust.min_param_perturbation import MinPerturbation, min_param_perturbation
from fattr.robust.pgd import pgd

__all__ = ["MinPerturbation", "Summary", "attack_comparator", "fgsm", "min_param_perturbation",
           "pgd"]
