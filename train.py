"""Train one model (or, with -m, a sweep of them) from the Hydra configs in conf/.

    python train.py data=synthetic trainer=smoke model=mobilenet_v1 resolution=64x64
    python train.py -m +sweep=smoke

The same as `python -m dermsweep.train` (dermsweep/train.py), kept for the familiar command.
"""

from dermsweep.train import main

if __name__ == "__main__":
    main()
