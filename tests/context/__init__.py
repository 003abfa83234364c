"""Tests of the context engine (discovery, secrets, skeletons, packing, `v4code context`)."""
