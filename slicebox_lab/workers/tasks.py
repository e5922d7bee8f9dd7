"""What the worker processes run: module-level functions of paths and small values, returning small values.

Each function is also what the server process calls itself when it has no workers, so there is one
way to do each thing (house rule 3) whichever process does it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import pickle
import tempfile
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, TypeVar

import xxhash
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from .. import dicom
from ..anonymization import Action, Profile, PseudonymKeys, anonymize, keystore, report
from ..anonymization.pixeltext import scan_reason
from ..dicom.tagpath import TagValue, apply_tag_values
from ..errors import NotFound, SliceboxError
from ..model import IndexedAttributes

T = TypeVar("T")

#: (7FE0,0010) Pixel Data
_PIXEL_DATA = 0x7FE00010

__all__ = [
    "Anonymized",
    "AnonymizedBlob",
    "HeadInspected",
    "Inspected",
    "anonymize_file",
    "anonymize_each_into",
    "anonymize_into",
    "blob_digest",
    "blob_key",
    "inspect",
    "inspect_head",
    "read_pixels",
    "write_anonymized",
]


def blob_digest() -> xxhash.xxh3_128:
    """The content digest a stored blob's key carries, which the context checks a blob found without a row
    against after a power cut: it must see a write cut short, not withstand an attacker, so XXH3 (128 bits,
    50× faster than BLAKE2b: 0.01 ms for a 0.5 MB image instead of 0.6 ms of the server's CPU)."""
    return xxhash.xxh3_128()


def blob_key(prefix: str, source_id: int, hexdigest: str) -> str:
    """A stored blob's key: a unique prefix, the source it came from and its content digest, which is what
    the start-up reconcile needs to index a blob found without a row (``context._BLOB_KEY``)."""
    return f"{prefix}.{source_id}.{hexdigest}"


@dataclass(frozen=True)
class Inspected:
    """A validated file's indexed attributes, and what an anonymization key would match it by."""

    attributes: IndexedAttributes
    #: a de-identified file's values that a key would match (``keystore.match_values``); None for any other
    match_values: dict[str, str] | None

    @property
    def anonymous(self) -> bool:
        """The file says it is de-identified (PatientIdentityRemoved YES)."""
        return self.match_values is not None


def _read(path: str | None, data: bytes | None) -> bytes:
    if data is not None:
        return data
    assert path is not None
    return Path(path).read_bytes()


def inspect(path: str | None, data: bytes | None = None) -> Inspected:
    """Validate a stored (or about to be stored) file as the ingest must, and extract what the index keeps.

    Raises :class:`~slicebox_lab.errors.InvalidDicom` with the reason, as ``dicom.parse_part10`` does.
    """
    return _inspected(_read(path, data))


def _inspected(data: bytes) -> Inspected:
    """The validation every stored file passes (house rule 3), and what the index keeps of it."""
    parsed = dicom.parse_part10(data)
    dicom.verify_pixel_data(parsed.dataset)
    return _kept(parsed)


def _kept(parsed: dicom.ParsedDicom) -> Inspected:
    return Inspected(dicom.extract_attributes(parsed), keystore.match_values(parsed.dataset))


@dataclass(frozen=True)
class HeadInspected:
    """:func:`inspect`'s answer for a file from its first bytes, which holds if the whole file is ``size`` bytes."""

    inspected: Inspected
    size: int


def inspect_head(head: bytes) -> HeadInspected | None:
    """:func:`inspect` of a file whose first bytes are ``head``, while the rest of it is still arriving
    (``dicom.parse_header``): None where the header cannot decide, or the file would be refused; the
    whole file is then inspected."""
    return _head_inspected(dicom.parse_header(head))


def _head_inspected(header: dicom.Header | None) -> HeadInspected | None:
    """What the index keeps of a checked header, for a file of its size; None where the header could not
    decide, or an attribute cannot be decoded (the full inspection then says which)."""
    if header is None:
        return None
    try:
        return HeadInspected(_kept(header.parsed), header.size)
    except SliceboxError:
        return None


@dataclass(frozen=True)
class Anonymized:
    """A de-identified copy written to the spool folder (the caller streams it and removes it), with
    what its key records and, when asked, its SHA-256 (what a box sends along)."""

    path: str
    size: int
    key: keystore.KeyRecord
    sha256: str = ""


@dataclass(frozen=True)
class Deidentification:
    """How the node de-identifies: the profile, its pseudonym keys, tag values written after the profile, and
    what each key records (the same for every image of a request; one picklable argument for the workers)."""

    profile: Profile
    keys: PseudonymKeys
    tag_values: tuple[TagValue, ...]
    key_attributes: tuple[keystore.KeyAttribute, ...]

    def apply(self, path: str | None, data: bytes | None) -> tuple[bytes, keystore.KeyRecord]:
        """The one way to anonymize a stored file (house rule 3): parse, de-identify, apply the tag values; the
        Part-10 bytes and what the key records. Raises ``AnonymizationRefused`` as ``anonymize`` does."""
        return self._deidentified(dicom.parse_part10(_read(path, data)).dataset)

    def _deidentified(self, real: Dataset) -> tuple[bytes, keystore.KeyRecord]:
        out, record = self._deidentified_dataset(real)
        return dicom.write_part10(out), record

    def _deidentified_dataset(self, real: Dataset) -> tuple[Dataset, keystore.KeyRecord]:
        out = anonymize(real, self.profile, self.keys)
        if self.tag_values:
            apply_tag_values(out, self.tag_values)
        return out, keystore.key_record(real, out, self.profile, self.key_attributes)

    def apply_to_header(self, file: BinaryIO) -> DeidentifiedHeader | None:
        """:meth:`apply` to the header alone, when the pixels leave as they are: the de-identified file is the
        new header followed by the stored file's Pixel Data element, bytes as they are (copied by the kernel,
        never parsed nor held).  None where that would not give :meth:`apply`'s file: Pixel Data that does not
        end the file, a syntax other than little-endian, pixels the burned-in policy reads or cleans, tag
        values that remove Pixel Data."""
        split = dicom.read_until_pixels(file)
        if split is None:
            return None
        real, pixels = split
        if scan_reason(real, self.profile, has_pixels=True) is not None:
            return None
        if self.profile.action(_PIXEL_DATA) is not Action.K:
            return None
        if any(not value.path.steps and value.path.tag == _PIXEL_DATA for value in self.tag_values):
            return None  # a tag value removes (or would write) the pixels
        out, record = self._deidentified_dataset(real)
        header, meta = dicom.write_part10_and_meta(out)
        return DeidentifiedHeader(header, pixels, record, out, meta)


class DeidentifiedHeader(NamedTuple):
    """:meth:`Deidentification.apply_to_header`'s answer: the new header's bytes, the stored Pixel Data element
    that follows them, the key record, and the de-identified dataset and file meta the header was written from."""

    header: bytes
    pixels: dicom.TrailingPixels
    record: keystore.KeyRecord
    dataset: Dataset
    meta: dicom.MetaValues


def anonymize_file(
    path: str | None, data: bytes | None, how: Deidentification, spool: str, sha256: bool = False
) -> Anonymized:
    """A stored file anonymized (:func:`write_anonymized`) into a new file in ``spool``."""
    target = os.path.join(spool, f"{uuid.uuid4().hex}.dcm")
    digest = hashlib.sha256() if sha256 else None
    try:
        with open(target, "wb") as f:
            record = write_anonymized(f, path, data, how, digest)
            size = f.tell()
    except BaseException:  # refused, or the stored file gone: no half-written copy stays in the spool
        Path(target).unlink(missing_ok=True)
        raise
    return Anonymized(target, size, record, digest.hexdigest() if digest else "")


def anonymize_files(
    items: Sequence[tuple[str | None, bytes | None, tuple[TagValue, ...]]],
    how: Deidentification,
    spool: str,
    sha256: bool = False,
) -> list[Anonymized | Exception]:
    """:func:`anonymize_file` of each (stored file's path or bytes, tag values written after the profile): a box
    push of several images is one worker call (see :func:`_each_image`)."""
    return _each_image(items, how, lambda this, path, data: anonymize_file(path, data, this, spool, sha256))


def write_anonymized(
    target: BinaryIO, path: str | None, data: bytes | None, how: Deidentification, digest: Any = None
) -> keystore.KeyRecord:
    """Write the de-identified file of a stored one into ``target`` (``digest`` sees every byte): the header
    alone de-identified and the stored Pixel Data element appended as it is where that gives the same file
    (:meth:`Deidentification.apply_to_header`), else :meth:`Deidentification.apply`.  Its key record."""
    if path is not None:
        with _open_stored(path) as source:
            split = how.apply_to_header(source)
            if split is not None:
                _write(target, split.header, digest)
                _copy_pixels(source, target, split.pixels, digest)
                return split.record
    written, record = how.apply(path, data)
    _write(target, written, digest)
    return record


def _open_stored(path: str) -> BinaryIO:
    """A stored file to read; gone (deleted since its image was looked up): NotFound, the 404 storage gives."""
    try:
        return open(path, "rb")
    except FileNotFoundError:
        raise NotFound(f"the stored file {os.path.basename(path)} is gone: its image was deleted meanwhile") from None


def _write(target: BinaryIO, data: bytes | memoryview, digest: Any) -> None:
    if digest is not None:
        digest.update(data)
    target.write(data)


def _copy_pixels(source: BinaryIO, target: BinaryIO, pixels: dicom.TrailingPixels, digest: Any = None) -> None:
    """The stored Pixel Data element appended to ``target``: by the kernel (``sendfile``, page cache to
    page cache) into a file, or a megabyte at a time (through one buffer per thread, never allocated
    again) when ``digest`` must see the bytes or ``target`` is in memory."""
    by_kernel = digest is None and not isinstance(target, io.BytesIO)
    if by_kernel:
        target.flush()
    position, left = pixels.offset, pixels.length
    buffer = None if by_kernel else _copy_buffer()
    while left:
        if buffer is None:
            sent = os.sendfile(target.fileno(), source.fileno(), position, left)
        else:
            source.seek(position)
            chunk = buffer[: min(left, len(buffer))]
            sent = source.readinto(chunk)  # type: ignore[attr-defined]
            _write(target, chunk[:sent], digest)
        if not sent:
            raise SliceboxError("the stored file ended before its pixel data did: it changed while being read")
        position += sent
        left -= sent


_buffers = threading.local()


def _copy_buffer() -> memoryview:
    """This thread's megabyte for copies (a fresh one each time would cost its page faults again)."""
    buffer: memoryview | None = getattr(_buffers, "buffer", None)
    if buffer is None:
        buffer = _buffers.buffer = memoryview(bytearray(1 << 20))
    return buffer


@dataclass(frozen=True)
class AnonymizedBlob:
    """A de-identified copy written straight into a storage blob being created, with everything the
    ingest needs of it (no second parse): size, digest, indexed attributes; and its key."""

    size: int
    digest: str
    inspected: Inspected
    key: keystore.KeyRecord


def anonymize_into(path: str | None, data: bytes | None, how: Deidentification, blob_path: str) -> AnonymizedBlob:
    """Anonymize a stored file into the (already created) file of a new blob: anonymization in place
    costs one parse and one write, and the server only renames, flushes and indexes.

    Where the header alone is de-identified (:meth:`Deidentification.apply_to_header`), the stored Pixel Data
    goes into the blob a megabyte at a time, hashed on the way, and what the index keeps comes from the
    dataset the header was written from (:func:`_inspected_as_written`): the file is never held whole nor
    parsed again.  Otherwise the whole file is written, and inspected as every stored file is."""
    digest = blob_digest()
    if path is not None:
        with _open_stored(path) as source:
            split = how.apply_to_header(source)
            if split is not None:
                with open(blob_path, "r+b") as f:
                    _write(f, split.header, digest)
                    _copy_pixels(source, f, split.pixels, digest)
                    size = f.tell()
                inspected = _inspected_as_written(split, size)
                return AnonymizedBlob(size, digest.hexdigest(), inspected or inspect(blob_path), split.record)
    written, record = how.apply(path, data)
    inspected = _inspected(written)
    with open(blob_path, "r+b") as f:
        f.write(written)
    digest.update(written)
    return AnonymizedBlob(len(written), digest.hexdigest(), inspected, record)


def _inspected_as_written(split: DeidentifiedHeader, size: int) -> Inspected | None:
    """:func:`inspect` of the file of ``size`` bytes just written from ``split``, from the dataset it was written
    from: the checks of :func:`dicom.checked_header`, which the header of an upload passes, and the attributes
    the index keeps.  None where the file must be read back instead: a header those checks cannot decide, or a
    value decoded here whose text might not read back the same (anything but ASCII, which the file's character
    set then encodes)."""
    if not _reads_back_alike(split.dataset):
        return None
    known = _head_inspected(dicom.checked_header(split.dataset, split.meta, len(split.header), split.pixels.head))
    return known.inspected if known is not None and known.size == size else None


def _reads_back_alike(dataset: Dataset) -> bool:
    """Whether every top-level value decoded in memory is text that reads back as it is (ASCII) or no text;
    elements still as read are written as read."""
    for elem in dataset.elements():
        if isinstance(elem, RawDataElement):
            continue
        value = elem.value
        for one in value if isinstance(value, MultiValue | list | tuple) else (value,):
            if isinstance(one, str | PersonName) and not str(one).isascii():
                return False
    return True


def anonymize_each_into(
    items: Sequence[tuple[str, str, tuple[TagValue, ...]]], how: Deidentification
) -> list[AnonymizedBlob | Exception]:
    """:func:`anonymize_into` of each (stored file, new blob's file, tag values written after the profile): a
    bulk job hands a worker several images per call (see :func:`_each_image`)."""
    return _each_image(items, how, lambda this, source, blob: anonymize_into(source, None, this, blob))


def _each_image(items: Sequence[tuple[Any, ...]], how: Deidentification, one: Callable[..., T]) -> list[T | Exception]:
    """``one(how with the item's tag values, *the item's other fields)`` for each item (its tag values last): the
    server's share of a call (a pipe's round trip, a thread waking up to take the answer under the server's one
    GIL) is paid once for several images.  An image that fails answers its error, and the others go on, as they
    would in calls of their own."""
    answers: list[T | Exception] = []
    for *fields, tag_values in items:
        try:
            this_image = dataclasses.replace(how, tag_values=tag_values) if tag_values else how
            answers.append(one(this_image, *fields))
        except Exception as error:
            answers.append(_sendable(error))
    return answers


def _sendable(error: Exception) -> Exception:
    """``error``, or what it says where it cannot be pickled back (one such error must not fail the others)."""
    try:
        pickle.dumps(error)
    except Exception:
        return SliceboxError(f"{type(error).__name__}: {error}")
    return error


def read_pixels(path: str | None, data: bytes | None, profile: Profile) -> report.PixelReading:
    """A stored image's pixels read as the anonymizer will read them, for the review report: Tesseract's
    work (about a second a frame), done here so that it never holds the server process."""
    return report.read_pixels(dicom.parse_part10(_read(path, data)).dataset, profile)


def spool_folder() -> Path:
    """A private folder for files that live for one request (in RAM, /dev/shm, where Linux has it)."""
    base = Path("/dev/shm") if os.access("/dev/shm", os.W_OK) else Path(tempfile.gettempdir())
    return Path(tempfile.mkdtemp(prefix="slicebox-spool-", dir=base))
