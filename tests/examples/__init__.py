"""Tests of examples/ and docs/: the examples run or validate, the docs say what the code does."""
