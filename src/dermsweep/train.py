"""The Hydra door: train one model (or, with -m, a sweep of them) from the configs in conf/.

    python -m dermsweep.train data=synthetic trainer=smoke model=mobilenet_v1 resolution=64x64
    python -m dermsweep.train -m +sweep=smoke
(or the repository's train.py, or dermsweep-train)
    ... -v (= verbose=true): also TensorFlow's and MLflow's own lines and Python warnings

All the work happens in dermsweep.training.task; this only hands Hydra's composed config over, after making its
hardware.backend the Keras backend of this process (before anything imports keras: keras_backend.py). SIGTERM
(a scheduler, `timeout`, a container stop) ends a run the way Ctrl-C does: tracking.stop_signal.
"""

import sys

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from .paths import conf_dir
from .tracking.stop_signal import stop_on_sigterm, stop_reason

EXIT_STOPPED = 130  # as a shell reports Ctrl-C


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="config")
def hydra_main(cfg: DictConfig):
    from .errors import DermsweepError  # imported late: `--help` and `--cfg` stay fast
    from .keras_backend import select

    try:
        select(str(cfg.hardware.backend))
        if not cfg.get("verbose"):
            from .quiet import import_backend_quietly

            import_backend_quietly(str(cfg.hardware.backend))
        from .training.task import run

        return run(cfg)
    except DermsweepError as exc:
        if HydraConfig.get().mode == RunMode.MULTIRUN:
            raise  # the sweeper records the trial as failed, with this message, and goes on
        print(f"error: {exc}", file=sys.stderr)  # a user mistake: the message, not a traceback
        sys.exit(2)


def main() -> None:
    """Train (or sweep) from the command line's overrides; SIGTERM stops it as Ctrl-C would.

    The libraries are quieted unless asked on the command line (-v or verbose=true), before Hydra composes the
    config: a sweep's process imports MLflow (and its log lines) before any trial's config."""
    from .quiet import quiet_training

    args = ["verbose=true" if a in ("-v", "--verbose") else a for a in sys.argv[1:]]
    sys.argv[1:] = args
    quiet_training(verbose=any(a.lstrip("+").lower() == "verbose=true" for a in args))
    stop_on_sigterm()
    try:
        hydra_main()
    except KeyboardInterrupt as exc:  # the run was ended KILLED, a sweep gave its trials back: one line, no traceback
        print(
            f"error: {stop_reason(exc)}: the run in progress ended KILLED (the log says where its checkpoint is)",
            file=sys.stderr,
        )
        sys.exit(EXIT_STOPPED)


if __name__ == "__main__":
    main()
