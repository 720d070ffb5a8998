"""`logd --config FILE`: run the daemon. `logd --check-config FILE`: validate and exit."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys

from logd import __version__, logsetup
from logd.config import ConfigError, check_file, load

DEFAULT_CONFIG = "/etc/logd/logd.toml"

EXIT_USAGE = 2


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="logd",
        description="logd: takes logs in over TCP, routes them, writes them to files.",
        epilog="Exit codes: 0 clean stop, 1 runtime failure, 2 bad config or usage. "
               "Signals: SIGTERM/SIGINT drain and stop (a second one, a second later, exits at "
               "once); SIGHUP reloads the config.",
    )
    p.add_argument("--config", "-c", default=DEFAULT_CONFIG, metavar="FILE",
                   help=f"TOML config file (default: {DEFAULT_CONFIG})")
    p.add_argument("--check-config", metavar="FILE",
                   help="validate FILE, print every problem found, exit 0 if it is valid")
    p.add_argument("--version", action="version", version=f"logd {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.check_config:
        return check_file(args.check_config)
    try:
        cfg = load(args.config)
    except ConfigError as e:
        print(e.render(), file=sys.stderr)
        return EXIT_USAGE
    logsetup.setup(cfg.daemon.log_level)
    _raise_fd_limit()
    import uvloop

    from logd.daemon import Daemon

    async def run() -> int:
        return await Daemon(cfg).run()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(run())


def _raise_fd_limit() -> None:
    """Thousands of emitter connections need thousands of descriptors: take the hard limit."""
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


if __name__ == "__main__":
    sys.exit(main())
