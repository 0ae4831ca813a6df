from mmengine.config import ConfigDict
from mmengine.hooks import Hook
from mmengine.model import BaseTTAModel, is_model_wrapper
from mmengine.runner import Runner

from mmdet_cdetr.converters.in_memory import is_url
from mmdet_cdetr.registry import HOOKS
from mmdet_cdetr.utils.checkpoint_file import (check_checkpoint_fits,
                                               checkpoint_to_load)


@HOOKS.register_module()
class CheckpointFitHook(Hook):
    """The checkpoint a run loads (``load_from``, ``--resume``, the one of
    ``tools/test.py``) must be one of this model, checked before it is
    loaded.

    MMEngine loads non-strictly: a checkpoint of another architecture
    (DETR, DAB-DETR) loads partly behind a generic missing-keys warning
    and evaluates to AP 0, and resuming one of another config (say another
    ``num_queries``) fails in a tensor-size ``RuntimeError``. Here it is one
    error naming the file and the first differing keys and shapes.
    http(s) URLs are checked in the download cache (the download happens
    here, once); other remote checkpoints (``s3://``) are loaded as MMEngine
    does.
    """

    def before_run(self, runner: Runner) -> None:
        path = checkpoint_to_load(
            ConfigDict(
                resume=runner._resume,
                load_from=runner._load_from,
                work_dir=runner.work_dir))
        if not path or ('://' in path and not is_url(path)):
            return
        # the model the runner loads into: mmengine unwraps DDP and TTA
        model = runner.model
        if is_model_wrapper(model) or isinstance(model, BaseTTAModel):
            model = model.module
        check_checkpoint_fits(model, path)
