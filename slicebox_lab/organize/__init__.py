"""Organizing series: free-form series tags and rule-based series types (Slicebox §2.4, §2.12, §6.4, §6.5)."""

from __future__ import annotations
