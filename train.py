"""Edge-popup training on MNIST / Fashion-MNIST / CIFAR-10: ``python train.py --help``."""

import os
import signal
import sys

if __name__ == "__main__":
    # Ctrl-C and SIGTERM (and SIGUSR1, SLURM's, taken as SIGTERM) held back while the command
    # imports what it runs, until its handlers take them (process_lifetime.stopping_on_sigterm
    # unblocks them), which stop it in one line, exit 130 / 143, as later: Python's own handler
    # raised a Ctrl-C in the imports as a traceback, and SIGTERM's default action killed the
    # process without a word. Blocked here, not by process_lifetime.hold_stops, which a stop in
    # lotterynet's own import would precede (Windows has no signal masks, nor SIGUSR1)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGINT, signal.SIGTERM, signal.SIGUSR1])
    from lotterynet.cli import main
    from lotterynet.errors import encodable_output

    encodable_output()
    code = main()

    def exit_done(signum, frame):
        """Done: a Ctrl-C or SIGTERM (or SIGUSR1) as the interpreter exits (torch's teardown,
        W&B's exit hooks) ends it at once with the command's own code. The handler main put
        back killed a finished run by the signal (exit 143, no line: a scheduler counts it
        failed) or printed a Ctrl-C as an ignored KeyboardInterrupt; ignored, one would wait
        for a teardown that hangs."""
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)

    for signum in (signal.SIGINT, signal.SIGTERM, getattr(signal, "SIGUSR1", signal.SIGTERM)):
        signal.signal(signum, exit_done)
    sys.exit(code)
