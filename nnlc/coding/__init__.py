"""Entropy coding: value binning, integer probability tables, and ANS coding with constriction.

Imports numpy and constriction only: the standalone decoder uses this package.
"""
