"""Stand-in for a lightning-hydra-template project's train.py: returns the metric named by ``optimized_metric``.

No Lightning, no TensorFlow: the "validation metrics" are a smooth function of the hyper-parameters that the
template's hparams_search files sweep (learning rate, batch size, layer widths). Written for dermsweep's tests.
"""

import math

import hydra
from omegaconf import DictConfig


def fake_fit(cfg: DictConfig) -> dict[str, float]:
    lr_term = (math.log10(cfg.model.optimizer.lr) + 2.5) ** 2  # best near lr = 3e-3
    batch_term = abs(math.log2(cfg.data.batch_size) - 6) / 10  # best at 64
    width = cfg.model.net.lin1_size + cfg.model.net.lin2_size + cfg.model.net.lin3_size
    acc = 0.95 - 0.05 * lr_term - 0.02 * batch_term + 0.0001 * width
    return {"val/acc_best": acc, "val/loss": 1.0 - acc}


@hydra.main(version_base="1.3", config_path="configs", config_name="train")
def main(cfg: DictConfig) -> float:
    metrics = fake_fit(cfg)
    return metrics[cfg.optimized_metric]


if __name__ == "__main__":
    main()
