"""Edge-popup training on MNIST / Fashion-MNIST / CIFAR-10: ``python train.py --help``."""

import signal
import sys

if __name__ == "__main__":
    # Ctrl-C and SIGTERM held back while the command imports what it runs, until its handlers
    # take them (lifetime.stopping_on_sigterm), which stop it in one line, exit 130 / 143, as
    # later: Python's own handler raised a Ctrl-C in the imports as a traceback, and SIGTERM's
    # default action killed the process without a word (Windows has no signal masks)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM])
    from lotterynet.cli import main
    from lotterynet.errors import encodable_output

    encodable_output()
    code = main()
    # done: a Ctrl-C or SIGTERM as the interpreter exits (torch's teardown takes a moment) is
    # ignored, as during a stop; the handler main put back killed a finished run by the signal
    # (exit 143, no line) or printed a Ctrl-C as an ignored KeyboardInterrupt
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    sys.exit(code)
