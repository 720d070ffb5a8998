"""filegen: numbered log lines written to a file at a rate, with rotation (standard library
only). writer.py writes and rotates; cli.py is the command line."""
