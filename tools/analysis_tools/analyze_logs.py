"""Plot training curves and summarise training time from MMEngine's json
scalar logs (``work_dir/<timestamp>/vis_data/<timestamp>.json``).

``plot_curve`` draws one panel per key against the epoch with several runs
overlaid (e.g. DETR vs Conditional DETR); ``cal_train_time`` prints the time
per iteration, as mmdet's tool of the same name.
"""
import argparse

from mmdet_cdetr.cli import report_user_errors
from mmdet_cdetr.utils import ArgumentError
from mmdet_cdetr.visualization import (load_scalar_log, plot_curves,
                                       train_time_summary)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Analyse json logs')
    tasks = parser.add_subparsers(dest='task', required=True)
    plot = tasks.add_parser('plot_curve', help='plot curves against epoch')
    plot.add_argument('json_logs', nargs='+', help='json scalar logs')
    plot.add_argument(
        '--keys',
        nargs='+',
        default=['bbox_mAP'],
        help='scalars to plot, e.g. loss loss_cls lr bbox_mAP')
    plot.add_argument(
        '--legend',
        nargs='+',
        help='one name per log (default: the work dir of each run)')
    plot.add_argument('--title', help='title of the figure')
    plot.add_argument('--out', required=True, help='output PNG file')
    timing = tasks.add_parser(
        'cal_train_time', help='average time per training iteration')
    timing.add_argument('json_logs', nargs='+', help='json scalar logs')
    timing.add_argument(
        '--include-outliers',
        action='store_true',
        help='include the first record of every epoch')
    return parser.parse_args()


def plot_curve(args: argparse.Namespace) -> None:
    legend = args.legend or [None] * len(args.json_logs)
    if len(legend) != len(args.json_logs):
        raise ArgumentError(f'--legend has {len(legend)} names for '
                            f'{len(args.json_logs)} logs')
    logs = [
        load_scalar_log(p, name) for p, name in zip(args.json_logs, legend)
    ]
    plot_curves(logs, args.keys, args.out, args.title)
    print(f'saved {args.out}')


def cal_train_time(args: argparse.Namespace) -> None:
    for path in args.json_logs:
        summary = train_time_summary(
            load_scalar_log(path), args.include_outliers)
        print(f'-----Analyze train time of {path}-----')
        print(f'slowest epoch {summary["slowest_epoch"]}, average time is '
              f'{summary["slowest_time"]:.4f} s/iter')
        print(f'fastest epoch {summary["fastest_epoch"]}, average time is '
              f'{summary["fastest_time"]:.4f} s/iter')
        print(f'time std over epochs is {summary["std_over_epochs"]:.4f}')
        print(f'average iter time: {summary["mean_iter_time"]:.4f} s/iter')
        print(f'estimated training time of {summary["epochs"]} epochs: '
              f'{summary["total_hours"]:.2f} h')
        print()


def main(args: argparse.Namespace) -> None:
    if args.task == 'plot_curve':
        plot_curve(args)
    else:
        cal_train_time(args)


if __name__ == '__main__':
    with report_user_errors():
        main(parse_args())
