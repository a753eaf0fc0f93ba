"""Times the standalone decoder on one core: `python -m benchmarks.decode_timer IN.nnlc OUT.onnx [--repeat N]`.

Prints one JSON line: best and all decode seconds (bitstream file -> ONNX file, serialization,
write and fsync included; the output is removed before each repeat), and the peak resident memory of this process. Pinned to one CPU core where the OS
allows it. Imports only what the standalone decoder imports.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def main(argv: list[str]) -> None:
    bitstream, output = argv[1], argv[2]
    repeat = int(argv[argv.index("--repeat") + 1]) if "--repeat" in argv else 3
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    from nnlc.decoder.files import decode_file

    seconds = []
    for _ in range(repeat):
        if os.path.exists(output):  # a first decode: replacing an existing file adds its unlink
            os.unlink(output)
        start = time.perf_counter()
        decode_file(bitstream, output, quiet=True)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"decode_s": min(seconds), "decode_s_all": seconds, "peak_rss_mib": peak_rss_mib()}))


def peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would include the parent's
    memory from before exec)."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


if __name__ == "__main__":
    main(sys.argv)
