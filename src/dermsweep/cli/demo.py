"""`dermsweep demo`: the main job end to end on an embedded default: a small sweep on generated data
(`python -m dermsweep.train -m +sweep=demo`, so an installed package needs no repository), the winner promoted,
and where to look next."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from ..errors import DermsweepError
from ..paths import sweep_file
from ..tracking import run_format as rf
from .console import EXIT_OK, client, console


def add_parser(sub: Any, common: Any) -> None:
    p = sub.add_parser("demo", help="small sweep on synthetic data, promote the winner, show where to look")
    common(p)
    p.add_argument("--sweep", default="demo", help="sweep definition (conf/sweep/NAME.yaml; default demo)")
    p.add_argument(
        "--name", default=rf.REGISTERED_MODEL, help=f"registered model to promote into (default {rf.REGISTERED_MODEL})"
    )
    p.add_argument("overrides", nargs="*", help="extra Hydra overrides for the sweep")
    p.set_defaults(fn=run)


def run_sweep(sweep: str, overrides: list[str]) -> int:
    return subprocess.call([sys.executable, "-m", "dermsweep.train", "-m", f"+sweep={sweep}", *overrides])


def latest_sweep(tracking, since_ms: int):
    runs = tracking.search_runs(
        [e.experiment_id for e in tracking.search_experiments()],
        filter_string=f"tags.`{rf.ROLE}` = 'sweep' and attributes.start_time >= {since_ms}",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    return runs[0] if runs else None


def _runs_page(parent) -> str:
    """The experiment's runs list in `make ui` (opened on the classic view, not MLflow's GenAI overview)."""
    from ..tracking.experiment_kind import UI_QUERY

    if parent is None:
        return "http://127.0.0.1:5000"
    return f"http://127.0.0.1:5000/#/experiments/{parent.info.experiment_id}{UI_QUERY}"


def run(args) -> int:
    from ..shipping.promotion import PromotionRefused, promote
    from .promote import explain

    con = console()
    sweep_file(args.sweep)  # a clear error for an unknown sweep, before anything starts
    overrides = list(args.overrides)
    if args.tracking_uri and not any(o.startswith("tracking.uri=") for o in overrides):
        overrides.append(f"tracking.uri={args.tracking_uri}")
    if not any(o.startswith("hydra.sweeper.study_name=") for o in overrides):
        # A fresh study each time: the same study name would resume the finished one and run nothing.
        overrides.append(f"hydra.sweeper.study_name=dermsweep-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    con.rule(f"1/3  sweep: python -m dermsweep.train -m +sweep={args.sweep} {' '.join(overrides)}")
    started = int(time.time() * 1000) - 1000
    rc = run_sweep(args.sweep, overrides)
    if rc != 0:
        raise DermsweepError(f"the sweep failed (exit code {rc}); see its output above")
    tracking = client(args)
    parent = latest_sweep(tracking, started)
    experiment = tracking.get_experiment(parent.info.experiment_id).name if parent else args.experiment
    con.rule("2/3  promote the best trial")
    try:
        p = promote(tracking, experiment, args.name, parent.info.run_id if parent else None)
        explain(p, con)
        con.print(f"promoted: {p.model_name} v{p.version} is now @{rf.CHAMPION}")
    except PromotionRefused as exc:
        if exc.promotion:
            explain(exc.promotion, con)
        con.print(f"kept the current champion: {exc.promotion.reason if exc.promotion else exc}")
    con.rule("3/3  where to look next")
    sweep_arg = f" --sweep {parent.info.run_id}" if parent else ""
    img = Path.cwd().parent / "shared" / "data" / "ham10000" / "HAM10000_images_part_1" / "ISIC_0024306.jpg"
    con.print(
        f"  make ui                  -> {_runs_page(parent)}  (experiment {experiment!r}, Models tab)\n"
        f"  dermsweep runs{sweep_arg}\n"
        f"  dermsweep predict {img if img.is_file() else 'IMAGE.jpg'}\n"
        f"  dermsweep export         -> SavedModel, TFLite f32/f16/int8, ONNX + size/latency/accuracy table\n"
        f"  dermsweep serve          -> REST endpoint for base64 images\n"
        f"  optuna-dashboard sqlite:///mlruns/optuna.db   -> the study (pip install optuna-dashboard)\n",
        soft_wrap=True,  # commands stay whole, to copy and paste
    )
    con.print(
        "`dermsweep` is in .venv/bin: run .venv/bin/dermsweep, or `source .venv/bin/activate` once per shell; "
        'shell completion: eval "$(dermsweep completion bash)"',
        soft_wrap=True,
    )
    return EXIT_OK
