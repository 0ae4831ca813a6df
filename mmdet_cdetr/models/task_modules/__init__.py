from .group_hungarian_assigner import GroupHungarianAssigner
from .hungarian_assigner import HungarianAssigner, finite_cost

__all__ = ['GroupHungarianAssigner', 'HungarianAssigner', 'finite_cost']
