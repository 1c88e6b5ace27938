"""`python -m gateway`, and the `clawgate` command (setup.cfg's entry point)."""

import sys

from gateway import hangup

# As gateway.cli says it; not imported from there, since a Ctrl-C may come while it loads.
EX_INTERRUPTED = 128 + 2


def main() -> int:
    # Loading clawgate takes a fraction of a second, more on a loaded host: a Ctrl-C then is
    # an interruption like any other (gateway.cli.main), not a traceback of the import. A
    # SIGHUP then is a reload asked for early, not a stop (gateway/hangup.py).
    hangup.hold()
    try:
        from gateway.cli import main as cli_main
    except KeyboardInterrupt:
        return EX_INTERRUPTED
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
