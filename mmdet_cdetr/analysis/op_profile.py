"""Where a step's time goes, by class of operator.

One call of the step runs under PyTorch's profiler. Each operator's self
time (its duration less its children's) goes to the class of its outermost
classified caller, so the bias copy inside ``addmm`` counts as a matrix
product and everything under ``Optimizer.step`` as the optimiser; the
backward pass's nodes (``AddmmBackward0``, ...) are classified by name like
the forward operators. What no operator covers (Python, the Hungarian
matching in scipy, the data pipeline) is its own row.
"""
import time
from typing import Callable, Dict, List, Optional, Tuple

from torch.profiler import ProfilerActivity, profile

# (class, name fragments), checked in order; names are compared in lower case
# without underscores ('NativeBatchNormBackward0' ~ 'native_batch_norm').
OP_CLASSES: List[Tuple[str, Tuple[str, ...]]] = [
    ('optimiser', ('optimizer.', 'fusedadam')),
    ('convolution', ('conv', )),
    ('matrix product', ('mm', 'linear', 'matmul')),
    ('attention, softmax', ('scaleddotproduct', 'attention', 'softmax')),
    ('normalisation', ('batchnorm', 'layernorm', 'groupnorm')),
    ('copy, concatenation, layout', ('copy', 'cat', 'clone', 'contiguous',
                                     'index', 'stack', 'pad', 'where')),
]
ELEMENTWISE = 'elementwise, reductions, other operators'
OUTSIDE = 'outside operators (Python, scipy matching, data)'


def op_class(name: str) -> Optional[str]:
    """The class of an operator or autograd node name, None if unknown."""
    key = name.lower().replace('_', '')
    for cls, fragments in OP_CLASSES:
        if any(fragment in key for fragment in fragments):
            return cls
    return None


def profile_by_op_class(fn: Callable[[], None]) -> Dict[str, float]:
    """Seconds of one call of ``fn`` per operator class (sums to its
    wall-clock time, profiler overhead included)."""
    from torch._C._profiler import _EventType
    start = time.perf_counter()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn()
    wall = time.perf_counter() - start
    seconds: Dict[str, float] = {}
    stack = [
        (node, None)
        for node in prof.profiler.kineto_results.experimental_event_tree()
        if node.tag == _EventType.TorchOp
    ]
    covered = sum(node.duration_time_ns for node, _ in stack) / 1e9
    while stack:
        node, inherited = stack.pop()
        cls = inherited or op_class(node.name)
        children = [
            child for child in node.children if child.tag == _EventType.TorchOp
        ]
        own = node.duration_time_ns - sum(c.duration_time_ns for c in children)
        key = cls or ELEMENTWISE
        seconds[key] = seconds.get(key, 0.) + max(own, 0) / 1e9
        stack.extend((child, cls) for child in children)
    seconds[OUTSIDE] = max(wall - covered, 0.)
    return seconds


def format_profile(profiles: Dict[str, Dict[str, float]]) -> str:
    """Markdown table: one column per profiled step (``model step``), one
    row per class, milliseconds and share of the step."""
    classes = [cls for cls, _ in OP_CLASSES] + [ELEMENTWISE, OUTSIDE]
    names = list(profiles)
    rows = [
        '| operator class | ' + ' | '.join(f'{name} ms (share)'
                                           for name in names) + ' |',
        '|---|' + '---|' * len(names)
    ]
    for cls in classes:
        cells = []
        for name in names:
            total = sum(profiles[name].values())
            value = profiles[name].get(cls, 0.)
            cells.append(f'{value * 1e3:.0f} ({value / total:.0%})')
        rows.append(f'| {cls} | ' + ' | '.join(cells) + ' |')
    return '\n'.join(rows)
