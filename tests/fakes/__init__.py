"""Fake servers for protocols whose real server cannot be installed here (named as fakes)."""
