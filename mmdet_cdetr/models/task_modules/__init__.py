from .group_hungarian_assigner import GroupHungarianAssigner

__all__ = ['GroupHungarianAssigner']
