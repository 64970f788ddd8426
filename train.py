"""Edge-popup training on MNIST / Fashion-MNIST / CIFAR-10: ``python train.py --help``."""

import sys

from lotterynet.cli import main

if __name__ == "__main__":
    sys.exit(main())
