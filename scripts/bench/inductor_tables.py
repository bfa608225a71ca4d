"""Each compiled graph's kernel table once, from what scripts/bench/profile_inductor.sh collects.

TORCHINDUCTOR_PROFILE appends a table (ms, GB, GB/s per generated kernel, each timed once in isolation) at
every call of a compiled graph, so the same graph repeats hundreds of times; the output-code log says which
dynamo frame and compile each graph file came from ("[frame/compile]": a block's forward and backward share
one id). Graphs print in the order they first ran.

    python3 scripts/bench/inductor_tables.py inductor_bandwidth.txt[.gz] output_code.log[.gz]
"""

import gzip
import re
import sys


def read(path: str) -> str:
    return (gzip.open if path.endswith(".gz") else open)(path, "rt").read()


def compile_ids(log: str) -> dict:
    """graph file name -> dynamo compile id."""
    found = re.findall(r"\[([\d/_]+)\] \[__output_code\] Output code written to: (\S+)", log)
    return {path.rsplit("/", 1)[-1]: cid for cid, path in found}


def first_tables(report: str) -> dict:
    """graph file name -> rows (ms, GB, GB/s, kernel) of its first table."""
    tables = {}
    for block in report.split("TRITON KERNELS BANDWIDTH INFO (")[1:]:
        name = block.split(")", 1)[0].rsplit("/", 1)[-1]
        rows = re.findall(r"^([\d.]+)ms\s+([\d.]+) GB\s+([\d.]+)GB/s\s+[\d.]+%\s+(\S+)", block, re.M)
        tables.setdefault(name, [(float(ms), float(gb), float(bw), k) for ms, gb, bw, k in rows])
    return tables


def main():
    report, log = sys.argv[1:3]
    ids = compile_ids(read(log))
    for name, rows in first_tables(read(report)).items():
        ms, gb = sum(r[0] for r in rows), sum(r[1] for r in rows)
        print(f"graph [{ids.get(name, '?')}] {name[:12]}: {ms:.3f} ms, {gb:.3f} GB, {len(rows)} kernels")
        for ms, gb, bw, kernel in rows:
            print(f"  {ms:7.3f} ms {gb:7.3f} GB {bw:7.0f} GB/s  {kernel[:110]}")


if __name__ == "__main__":
    main()
