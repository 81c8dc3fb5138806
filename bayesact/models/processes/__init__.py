"""Process models on GPyTorch kernels: GP, Student-t process and scale mixtures of GPs."""

from bayesact.models.processes.burr import BurrXII
from bayesact.models.processes.classifier import StudentTProcessClassifier
from bayesact.models.processes.gp import GP
from bayesact.models.processes.scale_mixture import ScaleMixtureProcess
from bayesact.models.processes.student_t import StudentTProcess

__all__ = ["GP", "BurrXII", "ScaleMixtureProcess", "StudentTProcess", "StudentTProcessClassifier"]
