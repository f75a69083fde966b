"""Restoration methods behind one interface: safegene and the published baselines (one file each)."""
