"""What the command-line tools (loadgen, analyzer) share: usage errors, number arguments,
how an OS or TLS error reads, and the client TLS context of --tls. Standard library only.

tools/ is first on sys.path when a tools/ script runs (and on the tests' path), so the tool
packages import this module as `toolargs`.
"""

from __future__ import annotations

import argparse
import math
import re
import ssl


class UsageError(Exception):
    """A bad option value; reported like argparse does, exit status 2."""


def os_reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        text = exc.strerror
    else:
        text = str(exc) or type(exc).__name__
    # TLS errors end with where in CPython's _ssl.c they were raised: nothing for a user.
    return re.sub(r" \(_ssl\.c:\d+\)$", "", text)


def positive_int(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return v


def nonneg_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return v


def nonneg_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v < 0:
        raise argparse.ArgumentTypeError(f"must be a number >= 0, got {text}")
    return v


def positive_float(text: str) -> float:
    v = float(text)
    if not math.isfinite(v) or v <= 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0, got {text}")
    return v


# argparse names the type function in its error message; make that read as the value's kind.
positive_int.__name__ = "integer"
nonneg_int.__name__ = "integer"
nonneg_float.__name__ = "number"
positive_float.__name__ = "number"


def make_tls_context(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The client context of --tls and its options (--ca, --cert, --key, --insecure); their
    files are read now, so a bad one is a usage error before anything connects."""
    if not args.tls:
        for option, used in (("--ca", args.ca), ("--cert", args.cert), ("--key", args.key),
                             ("--insecure", args.insecure)):
            if used:
                raise UsageError(f"{option} needs --tls")
        return None
    if args.insecure and args.ca is not None:
        raise UsageError("--insecure skips the verification --ca is for: give one of them")
    if args.key is not None and args.cert is None:
        raise UsageError("--key needs --cert")
    try:
        ctx = ssl.create_default_context(cafile=args.ca)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--ca {args.ca}: {os_reason(exc)}") from None
    if args.insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if args.cert is not None:
        try:
            ctx.load_cert_chain(args.cert, args.key)
        except OSError as exc:
            raise UsageError(f"--cert {args.cert}: {os_reason(exc)}") from None
    return ctx
