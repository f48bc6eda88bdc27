"""Compare two DCF files tensor by tensor: what changed, and what an update has to carry.

A tensor's content is the SHA-256 of its decoded bytes (:func:`dcformat.encoder.tensor_sha256`)
together with its dtype and shape. Files written by :func:`dcformat.encoder.compress` store
these hashes in their metadata (key :data:`dcformat.encoder.HASHES_KEY`), so a comparison
reads only the two directories. For a file without them, or with ``decode=True``, each
tensor is decoded and hashed.

The update size assumes a device that has OLD and receives only what it lacks:

- ``transfer_bytes``: NEW's preamble, directory and footer (the manifest), plus, for each
  tensor of NEW whose content is in no tensor of OLD, the bytes of its sections that are not
  byte-identical to a section of OLD. A tensor whose content OLD already has, under any name,
  costs nothing, even if NEW encodes it differently.
- ``exact_transfer_bytes``: the manifest plus every section of NEW that is not
  byte-identical to a section of OLD, enough to rebuild NEW byte for byte.

Padding is zero bytes that follow from the alignment, so neither figure counts it.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import asdict, dataclass
from typing import Any

from .constants import FOOTER_SIZE, PREAMBLE_SIZE
from .container import source_name as _source_name
from .encoder import HASHES_KEY, tensor_sha256
from .reader import DCFReader

__all__ = ["TensorChange", "Comparison", "compare_files", "content_hashes"]

logger = logging.getLogger(__name__)

_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
STATUSES = ("changed", "added", "removed", "unchanged")


@dataclass
class TensorChange:
    """One tensor in either file: its status, sizes and the bytes an update needs for it.

    ``status`` is ``"unchanged"`` (same content), ``"changed"``, ``"added"`` (only in NEW)
    or ``"removed"`` (only in OLD). ``identical_bytes`` is true when NEW stores the tensor
    exactly as OLD does (same record fields and section bytes). ``reused_from`` names the
    OLD tensor whose content an added or changed tensor repeats, if any.
    """

    name: str
    status: str
    old_shape: tuple[int, ...] | None
    new_shape: tuple[int, ...] | None
    old_dtype: str | None
    new_dtype: str | None
    old_encoding: str | None
    new_encoding: str | None
    old_bytes: int | None
    new_bytes: int | None
    old_sha256: str | None
    new_sha256: str | None
    identical_bytes: bool
    reused_from: str | None
    transfer_bytes: int

    @property
    def size_delta(self) -> int:
        """Stored bytes in NEW minus stored bytes in OLD (a missing side counts as 0)."""
        return (self.new_bytes or 0) - (self.old_bytes or 0)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        for key in ("old_shape", "new_shape"):
            if data[key] is not None:
                data[key] = list(data[key])
        data["size_delta"] = self.size_delta
        return data


@dataclass
class Comparison:
    """The result of :func:`compare_files`: a :class:`TensorChange` per tensor and the totals.

    ``tensors`` lists NEW's tensors in file order, then the removed ones in OLD's order.
    ``old_hashes`` and ``new_hashes`` name the origin of each file's content hashes:
    ``"metadata"``, ``"decoded"`` or ``"mixed"``.
    """

    old: str
    new: str
    old_file_bytes: int
    new_file_bytes: int
    manifest_bytes: int
    exact_transfer_bytes: int
    old_hashes: str
    new_hashes: str
    tensors: list[TensorChange]

    def with_status(self, *statuses: str) -> list[TensorChange]:
        return [t for t in self.tensors if t.status in statuses]

    @property
    def counts(self) -> dict[str, int]:
        return {status: len(self.with_status(status)) for status in STATUSES}

    @property
    def transfer_bytes(self) -> int:
        return self.manifest_bytes + sum(t.transfer_bytes for t in self.tensors)

    @property
    def reused_bytes(self) -> int:
        """Bytes of NEW's sections that the update does not carry."""
        return sum((t.new_bytes or 0) - t.transfer_bytes for t in self.tensors)

    @property
    def size_delta(self) -> int:
        return self.new_file_bytes - self.old_file_bytes

    def as_dict(self) -> dict[str, Any]:
        return {
            "old": self.old,
            "new": self.new,
            "old_file_bytes": self.old_file_bytes,
            "new_file_bytes": self.new_file_bytes,
            "size_delta": self.size_delta,
            "manifest_bytes": self.manifest_bytes,
            "transfer_bytes": self.transfer_bytes,
            "exact_transfer_bytes": self.exact_transfer_bytes,
            "reused_bytes": self.reused_bytes,
            "old_hashes": self.old_hashes,
            "new_hashes": self.new_hashes,
            "counts": self.counts,
            "tensors": [t.as_dict() for t in self.tensors],
        }


def content_hashes(reader: DCFReader, *, decode: bool = False) -> tuple[dict[str, str], str]:
    """Return ``({name: sha256 hex}, origin)`` for every tensor of an open file.

    Hashes come from the metadata where it contains a well-formed one for the tensor, else
    from decoding it. ``decode=True`` decodes every tensor. ``origin`` is ``"metadata"``,
    ``"decoded"`` or ``"mixed"``.
    """
    stored = {} if decode else reader.metadata().get(HASHES_KEY, {})
    if not isinstance(stored, dict):
        stored = {}
    hashes: dict[str, str] = {}
    decoded = 0
    for name in reader.keys():
        value = stored.get(name)
        if isinstance(value, str) and _SHA256_HEX.fullmatch(value):
            hashes[name] = value
        else:
            hashes[name] = tensor_sha256(reader.get(name))
            decoded += 1
    if decoded:
        logger.debug("hashed %d of %d tensors by decoding them", decoded, len(hashes))
    if decoded == 0 and hashes:
        origin = "metadata"
    elif decoded == len(hashes):
        origin = "decoded"
    else:
        origin = "mixed"
    return hashes, origin


def _section_digests(reader: DCFReader, sections) -> list[str]:
    return [hashlib.sha256(reader.section_bytes(s.index)).hexdigest() for s in sections]


def _fingerprint(reader: DCFReader, name: str) -> tuple:
    """Everything that makes a tensor's stored form: record fields and section bytes."""
    record = reader.record(name)
    info = reader.tensor_info(name)
    factors = ()
    if info.encoding == "lowrank":
        factors = tuple((reader.info.tensors[i].dtype, reader.info.tensors[i].shape,
                         reader.info.tensors[i].encoding, reader.info.tensors[i].params)
                        for i in (info.params["left"], info.params["right"]))
    return (record.dtype, record.shape, record.encoding, record.encoding_version, record.params,
            factors, tuple(_section_digests(reader, info.sections)))


def compare_files(old, new, *, decode: bool = False) -> Comparison:
    """Compare DCF files ``old`` and ``new`` (paths, bytes or binary file objects).

    With ``decode``, stored content hashes are ignored and every tensor is decoded and
    hashed, which also catches a stale or forged hash. Raises a
    :class:`~dcformat.errors.DCFormatError` subclass when either file is malformed.
    """
    with DCFReader(old) as old_reader, DCFReader(new) as new_reader:
        old_hashes, old_origin = content_hashes(old_reader, decode=decode)
        new_hashes, new_origin = content_hashes(new_reader, decode=decode)
        old_info = {name: old_reader.tensor_info(name) for name in old_reader.keys()}
        new_info = {name: new_reader.tensor_info(name) for name in new_reader.keys()}

        old_contents: dict[tuple, str] = {}
        for name, info in old_info.items():
            old_contents.setdefault((old_hashes[name], info.dtype, info.shape), name)
        old_sections = set(_section_digests(old_reader, old_reader.info.sections))

        changes: list[TensorChange] = []
        for name, info in new_info.items():
            content = (new_hashes[name], info.dtype, info.shape)
            before = old_info.get(name)
            if before is None:
                status = "added"
            elif (old_hashes[name], before.dtype, before.shape) == content:
                status = "unchanged"
            else:
                status = "changed"
            identical = before is not None and _fingerprint(old_reader, name) == _fingerprint(new_reader, name)
            reused_from = old_contents.get(content)
            digests = _section_digests(new_reader, info.sections)
            missing = sum(s.size for s, digest in zip(info.sections, digests) if digest not in old_sections)
            changes.append(TensorChange(
                name=name, status=status,
                old_shape=before.shape if before else None, new_shape=info.shape,
                old_dtype=before.dtype if before else None, new_dtype=info.dtype,
                old_encoding=before.encoding if before else None, new_encoding=info.encoding,
                old_bytes=before.stored_bytes if before else None, new_bytes=info.stored_bytes,
                old_sha256=old_hashes[name] if before else None, new_sha256=new_hashes[name],
                identical_bytes=identical,
                reused_from=reused_from if status != "unchanged" else None,
                transfer_bytes=0 if reused_from is not None else missing,
            ))
        for name, info in old_info.items():
            if name not in new_info:
                changes.append(TensorChange(
                    name=name, status="removed", old_shape=info.shape, new_shape=None,
                    old_dtype=info.dtype, new_dtype=None, old_encoding=info.encoding, new_encoding=None,
                    old_bytes=info.stored_bytes, new_bytes=None, old_sha256=old_hashes[name],
                    new_sha256=None, identical_bytes=False, reused_from=None, transfer_bytes=0,
                ))

        new_sections = new_reader.info.sections
        digests = _section_digests(new_reader, new_sections)
        footer = new_reader.info.footer
        manifest = PREAMBLE_SIZE + footer.directory_stored_size + FOOTER_SIZE
        exact = manifest + sum(s.size for s, digest in zip(new_sections, digests) if digest not in old_sections)
        return Comparison(
            old=_source_name(old), new=_source_name(new),
            old_file_bytes=old_reader.info.file_size, new_file_bytes=new_reader.info.file_size,
            manifest_bytes=manifest, exact_transfer_bytes=exact,
            old_hashes=old_origin, new_hashes=new_origin, tensors=changes,
        )
