"""Backends: each turns the checked protocol (`crit.ir`) into one artefact."""
