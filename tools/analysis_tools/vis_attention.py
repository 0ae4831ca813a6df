"""Draw the decoder cross-attention behind the top detections of an image.

One PNG per detection, one panel per attention head: the paper's Figure 1
(heads attending to the object's extremities or its inside). Without
``--checkpoint`` the model has random weights (a smoke run).
"""
import argparse
import os
import os.path as osp

import mmcv
import torch

from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.utils import InputNotFoundError
from mmdet_cdetr.visualization import (ATTENTION_PARTS, collect_attention,
                                       draw_attention_grid, load_detector)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description='Visualise the decoder cross-attention of detections')
    parser.add_argument('image', help='image file')
    parser.add_argument('config', help='config file')
    parser.add_argument(
        '--checkpoint', help='checkpoint file (default: random weights)')
    parser.add_argument(
        '--topk', type=int, default=3, help='number of detections to draw')
    parser.add_argument(
        '--layer',
        type=int,
        help='decoder layer, 1 = first (default: the last)')
    parser.add_argument(
        '--part',
        choices=ATTENTION_PARTS,
        default='combined',
        help='attention to draw: the one the model uses (combined), or the '
        'softmax of its content (c_q.c_k) or spatial (p_q.p_k) part alone')
    parser.add_argument(
        '--out-dir',
        default='work_dirs/vis_attention',
        help='directory of the PNGs')
    parser.add_argument(
        '--device',
        default='cuda:0' if torch.cuda.is_available() else 'cpu',
        help='device used for inference')
    return parser.parse_args()


def main(args: argparse.Namespace) -> None:
    if not osp.isfile(args.image):
        raise InputNotFoundError(f'image not found: {args.image}')
    model = load_detector(args.config, args.checkpoint, args.device)
    layer = args.layer or model.decoder.num_layers
    detections = collect_attention(model, args.image, layer, args.part,
                                   args.topk)
    image = mmcv.imread(args.image, channel_order='rgb')
    classes = model.dataset_meta['classes']
    stem = osp.splitext(osp.basename(args.image))[0]
    os.makedirs(args.out_dir, exist_ok=True)
    for rank, detection in enumerate(detections, 1):
        out_file = osp.join(args.out_dir,
                            f'{stem}_det{rank}_layer{layer}_{args.part}.png')
        title = (f'{classes[detection.label]} {detection.score:.2f} '
                 f'(query {detection.query_index}): {args.part} '
                 f'cross-attention, decoder layer {layer}')
        draw_attention_grid(image, detection, title, out_file)
        print(f'saved {out_file}')


if __name__ == '__main__':
    cli_args = parse_args()
    with report_user_errors(checkpoint=cli_args.checkpoint):
        main(cli_args)
