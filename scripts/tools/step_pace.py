"""Where a train_gpt.py run's steps slowed down: the milliseconds a step between its `step:` lines (from the
cumulative train_time, logged to 0.1 s: ~2 ms of resolution over 50 steps), their median, and the stretches of
intervals at least --slow above it, each with the seconds it cost over the median and its learning-rate scale.
Where the log's step lines carry step_max (the longest step since the line before), each stretch gets its longest
step against the run's usual longest (the median over its intervals): one long step among usual ones points at
one stall (most likely the host's), steps all a little slower at a slower GPU.
Where the GPU sampler of scripts/tools/proxy_train.sh left NAME_gpu.csv beside NAME.log, each stretch and the
whole run also get the GPU's median SM clock, its highest temperature, its mean power (of the board's power limit,
where the file records it) and the clock-event reasons seen (nvidia-smi's bit mask; 0x0: none; 0x4: the power
cap), lined up by the log's train_start_unix.

  python3 scripts/tools/step_pace.py logs/*.log [--slow 0.05]
"""

import argparse
import re
import statistics
from pathlib import Path

STEP = re.compile(r"^step:(\d+)/\d+ .*lr_scale:([\d.]+) train_time:([\d.]+)s(?: .*step_max:([\d.]+)ms)?", re.M)
START = re.compile(r"^train_start_unix:([\d.]+)", re.M)


def intervals(text: str, min_steps: int = 10) -> list[list[tuple]]:
    """Per training run in the log (a step count that falls starts the next), (first step, last step, lr_scale at
    the last, ms a step, train_time at the first, at the last, the longest step's ms or None in logs without
    step_max) between step lines at least min_steps apart: the first five lines, one a step, are too coarse alone."""
    runs, start, longest = [], None, None
    for step, scale, seconds, most in ((int(s), float(lr), float(t), m) for s, lr, t, m in STEP.findall(text)):
        if start is None or step < start[0]:
            runs.append([])
            start, longest = (step, seconds), None
            continue
        longest = max(longest or 0.0, float(most)) if most else longest
        if step - start[0] >= min_steps:
            runs[-1].append((start[0], step, scale, 1000 * (seconds - start[1]) / (step - start[0]), start[1], seconds,
                             longest))
            start, longest = (step, seconds), None
    return [rows for rows in runs if rows]


def slow_stretches(rows: list, median: float, slow: float) -> list[dict]:
    """Runs of consecutive intervals at least `slow` (a share) above the median, merged."""
    out = []
    for first, last, scale, ms, t_first, t_last, longest in rows:
        if ms < median * (1 + slow):
            continue
        lost = (ms - median) * (last - first) / 1000
        if out and out[-1]["last"] == first:
            most = max(out[-1]["longest"], longest) if longest is not None else None
            out[-1].update(last=last, lr_last=scale, lost_s=out[-1]["lost_s"] + lost, t_last=t_last, longest=most)
        else:
            out.append(dict(first=first, last=last, lr_first=scale, lr_last=scale, lost_s=lost, t_first=t_first,
                            t_last=t_last, longest=longest))
        out[-1]["ms"] = median + 1000 * out[-1]["lost_s"] / (out[-1]["last"] - out[-1]["first"])
    return out


def pace(rows: list, slow: float) -> dict:
    """One run's median and mean ms a step, its intervals' median longest step (None without step_max) and its slow
    stretches."""
    steps = rows[-1][1] - rows[0][0]
    median = statistics.median(row[3] for row in rows)
    mean = sum(ms * (last - first) for first, last, _, ms, *_ in rows) / steps
    longest = [row[6] for row in rows if row[6] is not None]
    return dict(first=rows[0][0], last=rows[-1][1], intervals=len(rows), median=median, mean=mean,
                longest=statistics.median(longest) if longest else None, t_first=rows[0][4], t_last=rows[-1][5],
                stretches=slow_stretches(rows, median, slow))


def gpu_samples(path: Path) -> list[tuple[float, float, float, float, str, float | None]]:
    """(unix time, SM clock MHz, temperature C, power W, reasons, power limit W) per line of the sampler's file; the
    limit None in files from before the sampler recorded it."""
    out = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        parts = [p.strip() for p in line.split(",")]
        try:
            limit = float(parts[5]) if len(parts) > 5 else None
            out.append((float(parts[0]), float(parts[1]), float(parts[2]), float(parts[3]), parts[4], limit))
        except (ValueError, IndexError):
            raise SystemExit(f"{path}:{n}: expected 'unix time, SM clock, temperature, power, reasons[, power limit]' "
                             f"as scripts/tools/proxy_train.sh writes them, got {line!r}") from None
    return out


def gpu_summary(samples: list, start: float, t_first: float, t_last: float) -> str:
    seen = [s for s in samples if start + t_first <= s[0] <= start + t_last]
    if not seen:
        return "no GPU sample in this window"
    limits = sorted({s[5] for s in seen if s[5] is not None})
    of_limit = " of " + "/".join(f"{w:.0f}" for w in limits) if limits else ""
    return (f"SM {statistics.median(s[1] for s in seen):.0f} MHz, up to {max(s[2] for s in seen):.0f} C, "
            f"{statistics.fmean(s[3] for s in seen):.0f} W{of_limit}, reasons {' '.join(sorted({s[4] for s in seen}))} "
            f"({len(seen)} samples)")


def report(name: str, found: dict, slow: float, gpu=None) -> str:
    """gpu: (samples, the run's train_start_unix) or None."""
    stretches = found["stretches"]
    lines = [f"{name}: steps {found['first']}-{found['last']} in {found['intervals']} intervals, median "
             f"{found['median']:.1f} ms a step, mean {found['mean']:.1f}; {len(stretches)} stretches at least "
             f"{slow:.0%} above the median cost {sum(s['lost_s'] for s in stretches):.1f} s over it"
             + (f"; an interval's longest step {found['longest']:.1f} ms (median)" if found["longest"] else "")]
    if gpu:
        lines.append(f"  whole run: {gpu_summary(*gpu, found['t_first'], found['t_last'])}")
    for s in stretches:
        lines.append(f"  steps {s['first']}-{s['last']}  {s['ms']:.1f} ms a step  lr_scale {s['lr_first']:.3f}-"
                     f"{s['lr_last']:.3f}  +{s['lost_s']:.1f} s")
        if s["longest"] is not None:
            lines[-1] += f"  longest step {s['longest']:.1f} ms"
        if gpu:
            lines[-1] += f"  {gpu_summary(*gpu, s['t_first'], s['t_last'])}"
    return "\n".join(lines)


def main(argv=None):
    cli = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    cli.add_argument("logs", nargs="+")
    cli.add_argument("--slow", type=float, default=0.05, help="share above the median that counts as slow")
    opt = cli.parse_args(argv)
    for path in map(Path, opt.logs):
        text = path.read_text(encoding="utf-8")
        runs, starts = intervals(text), [float(t) for t in START.findall(text)]
        sampler = path.with_name(path.stem + "_gpu.csv")  # where proxy_train.sh's sampler writes
        if not runs:
            print(f"{path.name}: no step lines with lr_scale and train_time: not a train_gpt.py training log")
            continue
        samples = gpu_samples(sampler) if sampler.is_file() else None
        if samples is not None and len(starts) != len(runs):
            print(f"{path.name}: {sampler.name} left out: {len(starts)} train_start_unix lines for {len(runs)} runs")
            samples = None
        for i, rows in enumerate(runs):
            gpu = (samples, starts[i]) if samples is not None else None
            print(report(path.name + (f" run {i + 1}" if len(runs) > 1 else ""), pace(rows, opt.slow), opt.slow, gpu))


if __name__ == "__main__":
    main()
