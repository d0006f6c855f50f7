"""Vigo compliance engine: one root package so nothing generic lands in site-packages."""
