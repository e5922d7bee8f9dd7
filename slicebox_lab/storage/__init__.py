"""Storage areas: bytes by opaque key, nothing about DICOM (house rule 1)."""

from __future__ import annotations

from .base import BlobWriter, StorageArea
from .filesystem import FileSystemStorage
from .memory import MemoryStorage

__all__ = ["BlobWriter", "FileSystemStorage", "MemoryStorage", "StorageArea"]
