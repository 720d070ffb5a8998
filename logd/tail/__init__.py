"""Tailing files: what the `tail` listener (logd/listeners/tail.py) is built from.

config.py       the listener's config (paths, format, multiline, limits)
identity.py     a file's identity: device, inode and a fingerprint of its first bytes
checkpoints.py  identity -> offset, written atomically in the state directory
decoders.py     a read of a file -> records: lines, multiline groups
containers.py   container runtimes' log files: CRI (containerd, CRI-O) and docker json-file
followed.py     one followed file: descriptor, offsets, what is in flight
"""
