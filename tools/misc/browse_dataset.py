"""Draw what the training pipeline feeds the model: each training image
after augmentation, with its ground-truth boxes as they are then."""
import argparse
import os.path as osp

from mmdet.structures.bbox import BaseBoxes
from mmengine.config import DictAction
from mmengine.registry import init_default_scope
from mmengine.utils import ProgressBar

from mmdet_cdetr.cli import check_cfg_options, read_config, report_user_errors
from mmdet_cdetr.registry import DATASETS, VISUALIZERS
from mmdet_cdetr.utils import ArgumentError


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Browse a data set')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--output-dir', help='directory where the drawn images are saved')
    parser.add_argument(
        '--not-show', action='store_true', help='do not show the images')
    parser.add_argument(
        '--show-interval',
        type=float,
        default=2,
        help='seconds each image is shown')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override settings of the config, key=value pairs')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    if args.not_show and args.output_dir is None:
        raise ArgumentError('nothing to do: give --output-dir or drop '
                            '--not-show')
    cfg = read_config(args.config)
    if args.cfg_options is not None:
        cfg.merge_from_dict(check_cfg_options(cfg, args.cfg_options))
    init_default_scope(cfg.get('default_scope', 'mmdet'))
    dataset = DATASETS.build(cfg.train_dataloader.dataset)
    visualizer = VISUALIZERS.build(cfg.visualizer)
    visualizer.dataset_meta = dataset.metainfo

    progress = ProgressBar(len(dataset))
    for item in dataset:
        # PackDetInputs keeps OpenCV's BGR order, the visualizer draws RGB.
        image = item['inputs'].permute(1, 2, 0).numpy()[..., ::-1]
        sample = item['data_samples'].numpy()
        if isinstance(sample.gt_instances.get('bboxes'), BaseBoxes):
            sample.gt_instances.bboxes = sample.gt_instances.bboxes.tensor
        name = osp.basename(sample.img_path)
        visualizer.add_datasample(
            name,
            image,
            data_sample=sample,
            draw_pred=False,
            show=not args.not_show,
            wait_time=args.show_interval,
            out_file=None if args.output_dir is None else osp.join(
                args.output_dir, name))
        progress.update()


if __name__ == '__main__':
    with report_user_errors():
        main(parse_args())
