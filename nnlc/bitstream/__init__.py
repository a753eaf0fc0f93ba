"""The .nnlc bitstream: one syntax description (`syntax.py`) read and written by the same code.

Imports the standard library only (plus numpy for arrays): the standalone decoder uses it.
"""

from nnlc.bitstream.syntax import FORMAT_VERSION, MAGIC, SYNTAX, read_fields, write_fields
from nnlc.bitstream.container import Unit, UnitType, read_container, write_container

__all__ = ["FORMAT_VERSION", "MAGIC", "SYNTAX", "Unit", "UnitType", "read_container", "read_fields",
           "write_container", "write_fields"]
