"""The training objectives, one module each; ``model.objective`` picks one by its name.

Each module registers its objective (:data:`OBJECTIVES`); a new objective is a new module here,
or a class registered with ``OBJECTIVES.register`` by the user's code.
"""

from vaelab.objectives.objective import OBJECTIVES, TrainingObjective, objective_for

__all__ = ["OBJECTIVES", "TrainingObjective", "objective_for"]
