from .attention_maps import (ATTENTION_PARTS, DetectionAttention,
                             RecordedForward, attention_weights,
                             collect_attention, draw_attention_grid,
                             forward_recording_attention, load_detector,
                             recording_attention)
from .training_logs import (ScalarLog, load_scalar_log, plot_curves,
                            scalar_series, train_time_summary)

__all__ = [
    'ATTENTION_PARTS', 'DetectionAttention', 'RecordedForward',
    'attention_weights', 'collect_attention', 'draw_attention_grid',
    'forward_recording_attention', 'load_detector', 'recording_attention',
    'ScalarLog', 'load_scalar_log', 'plot_curves', 'scalar_series',
    'train_time_summary'
]
