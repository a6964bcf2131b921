"""Stand-in Hydra app for the sweeper tests: follows dermsweep.task's contract without TensorFlow."""

import math
import os
import time

import hydra
from omegaconf import DictConfig, OmegaConf


def _flat(d, prefix=""):
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def check(cfg: DictConfig) -> None:
    """A pre-flight rule for hydra.sweeper.validate=my_app.check: only some combinations of x and y are valid."""
    if cfg.x + cfg.y > 1.5:
        raise ValueError(f"x + y must not exceed 1.5 (x={cfg.x}, y={cfg.y})")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig):
    import mlflow
    import optuna

    from dermsweep.errors import TrainingDiverged
    from dermsweep.sweep import trial_link
    from dermsweep.tracking import run_owner
    from dermsweep.tracking.store import ensure_experiment

    link = trial_link.current()
    number = link.number if link else -1
    mlflow.set_tracking_uri(cfg.tracking.uri)
    client = mlflow.MlflowClient()
    exp_id = ensure_experiment(client, cfg.experiment, cfg.tracking.artifact_root)
    mlflow.set_experiment(experiment_id=exp_id)
    tags = dict(link.run_tags) if link else {}
    run = mlflow.start_run(run_name=f"trial-{number}", parent_run_id=trial_link.parent_run_id(), tags=tags)
    run_owner.claim(client, run.info.run_id)  # as dermsweep.training.task: a killed run can be reaped
    if link:
        link.set_run_id(run.info.run_id)
    mlflow.log_params(_flat(OmegaConf.to_container(cfg, resolve=True)))
    try:
        value = 0.0
        deadline = time.time() + 240
        while cfg.hold_until and not os.path.exists(cfg.hold_until) and time.time() < deadline:
            time.sleep(0.2)
        for epoch in range(cfg.epochs):
            if cfg.sleep:
                time.sleep(cfg.sleep)
            value = (1 - (cfg.x - 0.3) ** 2 - (cfg.y - 0.6) ** 2) * (epoch + 1) / cfg.epochs
            if number in cfg.nan_trials:
                value = math.nan
                raise TrainingDiverged(f"loss is NaN at epoch {epoch}")
            if number in cfg.fail_trials:
                raise RuntimeError("boom: injected failure")
            if number in cfg.prune_trials:
                value = -1000.0
            mlflow.log_metric(cfg.objective.metric, value, step=epoch)
            if link:
                link.report(epoch + cfg.first_step, value)
    except optuna.TrialPruned:
        mlflow.set_tag("dermsweep.status", "pruned")
        mlflow.end_run(status="KILLED")
        raise
    except Exception as exc:
        mlflow.set_tags({"dermsweep.status": "failed", "dermsweep.failure_reason": f"{type(exc).__name__}: {exc}"})
        mlflow.end_run(status="FAILED")
        raise
    mlflow.set_tag("dermsweep.status", "complete")
    mlflow.end_run()
    if cfg.objective.metrics:
        return {cfg.objective.metrics[0]: value, cfg.objective.metrics[1]: abs(cfg.x - cfg.y)}
    return value


if __name__ == "__main__":
    main()
