"""Helpers the tests share: fakes, harnesses and free ports. Never imported by product code."""
