"""Folder watches: DICOM files put into a watched folder are imported (see ARCHITECTURE.md)."""

from __future__ import annotations

from .service import WatchedDirectory, WatchService, create_watch_service

__all__ = ["WatchService", "WatchedDirectory", "create_watch_service"]
