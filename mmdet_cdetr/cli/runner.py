"""The flags ``tools/train.py``, ``tools/test.py`` and
``tools/deployment/test_onnx.py`` share, the config they give, and
MMEngine's runner built from it."""
import argparse
import os.path as osp

from mmengine.config import Config, DictAction
from mmengine.registry import RUNNERS
from mmengine.runner import Runner

from mmdet_cdetr.utils.checkpoint_file import (check_checkpoint_file,
                                               checkpoint_to_load)
from .config_check import check_cfg_options, read_config
from .distributed import prepare_cpu_distributed
from .work_dir_lock import ensure_writable


def add_runner_args(parser: argparse.ArgumentParser) -> None:
    """The flags mmdet's train.py and test.py share."""
    parser.add_argument('--work-dir', help='the dir to save logs and results')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher')
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)


def _config_being_read(err: SyntaxError, default: str) -> str:
    """The file (the config or one of its bases) mmengine was reading when
    it parsed text without a file name and raised ``err``."""
    filename, frame = default, err.__traceback__
    while frame is not None:
        if frame.tb_frame.f_code.co_name == '_file2dict':
            filename = frame.tb_frame.f_locals.get('filename', filename)
        frame = frame.tb_next
    return osp.normpath(filename)


def load_config(args: argparse.Namespace) -> Config:
    """The config of ``args.config`` with the shared flags applied."""
    try:
        cfg = read_config(args.config)
    except SyntaxError as err:
        if err.filename in (None, '<unknown>') and err.lineno:
            err.filename = _config_being_read(err, args.config)
        raise
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(check_cfg_options(cfg, args.cfg_options))
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs',
                                osp.splitext(osp.basename(args.config))[0])
    return cfg


def build_runner(cfg: Config) -> Runner:
    """MMEngine's runner for ``cfg`` (also on CPU-only distributed runs),
    after checking its work dir and the checkpoint it will load."""
    ensure_writable(cfg.work_dir)
    checkpoint = checkpoint_to_load(cfg)
    if checkpoint and '://' not in checkpoint:
        check_checkpoint_file(checkpoint)
    prepare_cpu_distributed(cfg)
    if 'runner_type' in cfg:
        return RUNNERS.build(cfg)
    return Runner.from_cfg(cfg)
