"""What a disk spool stores of a batch, and how it is read back.

Each kind of batch an output may buffer registers a one-byte kind with its encoder and
decoder: the spool writes `encode(batch)` and gives `decode(kind, body)` back to the output.
Batch (kind 1) is registered here; an output that buffers its own form (ClickHouse's columns)
registers that where it is defined.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

from logd.record import JSON, Batch, known_form

Encoder = Callable[[Any], bytes]
Decoder = Callable[[bytes], Any]

_BY_TYPE: dict[type, tuple[int, Encoder]] = {}
_BY_KIND: dict[int, Decoder] = {}


def register(cls: type, kind: int, encode: Encoder, decode: Decoder) -> None:
    _BY_TYPE[cls] = (kind, encode)
    _BY_KIND[kind] = decode


def encode(batch: Any) -> tuple[int, bytes]:
    kind, enc = _BY_TYPE[type(batch)]
    return kind, enc(batch)


def decode(kind: int, body: bytes) -> Any:
    dec = _BY_KIND.get(kind)
    if dec is None:
        raise ValueError(f"unknown batch kind {kind}")
    return dec(body)


# -- Batch --
# received f64, count u32, flags u8 (1: lines block, 2: severities follow, 4: a form
# follows), source length u16, source; then the form (length u8, name) if flagged, the
# severities (count bytes) if flagged; then either the lines block as received, or count
# u32 payload lengths and the payloads. A batch of the default form (JSON) stores none, as
# spools written before forms existed.

_HEAD = struct.Struct("<dIBH")
_LINES = 1
_SEVERITIES = 2
_FORM = 4


def encode_batch(batch: Batch) -> bytes:
    source = batch.source.encode()
    sevs = batch.severity_bytes() if batch.severities is not None or \
        batch._frames is not None else None
    form = batch.form.encode() if batch.form != JSON else b""
    flags = ((_LINES if batch.raw is not None else 0) | (_SEVERITIES if sevs is not None else 0)
             | (_FORM if form else 0))
    parts = [_HEAD.pack(batch.received, batch.count, flags, len(source)), source]
    if form:
        parts += [bytes((len(form),)), form]
    if sevs is not None:
        parts.append(sevs)
    if batch.raw is not None:
        parts.append(batch.raw)
    else:
        payloads = batch.payloads
        parts.append(struct.pack(f"<{len(payloads)}I", *map(len, payloads)))
        parts.extend(payloads)
    return b"".join(parts)


def decode_batch(body: bytes) -> Batch:
    received, count, flags, slen = _HEAD.unpack_from(body)
    off = _HEAD.size
    source = body[off:off + slen].decode()
    off += slen
    form = JSON
    if flags & _FORM:
        flen = body[off]
        form = body[off + 1:off + 1 + flen].decode()
        off += 1 + flen
        if not known_form(form):
            raise ValueError(f"batch of unknown form {form!r}")
    sevs = None
    if flags & _SEVERITIES:
        sevs = body[off:off + count]
        off += count
    if flags & _LINES:
        batch = Batch.from_lines(body[off:], count, source, received, form)
        batch.severities = sevs
        return batch
    lengths = struct.unpack_from(f"<{count}I", body, off)
    off += 4 * count
    payloads = []
    for n in lengths:
        payloads.append(body[off:off + n])
        off += n
    if off != len(body):
        raise ValueError(f"batch body has {len(body) - off} bytes past its payloads")
    return Batch(payloads, sevs, source, received, sum(lengths), form=form)


register(Batch, 1, encode_batch, decode_batch)
