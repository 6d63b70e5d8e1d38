"""Progress lines of the long stages, on stderr (stdout carries results: `spdnn bound` prints its
JSON there). One helper for every stage, so that each says the same things the same way."""
import sys
import time


def every_tenth(what: str, noun: str = "layer", every: int = 64, seconds: float = 60.0):
    """report(done, total, stage=None): a line at each tenth of `total` (of each `stage`, named in
    the line, when a stage runs its own count: the partitioner's sweep, candidates, refinement
    passes), and one at least every `seconds` in between (a tenth of the bound of 65536×1920 is
    over 20 minutes, of its partition several). `total` None (an archive's layers, not counted
    yet): a line every `every`. Times are seconds since `every_tenth` was called; a count
    already printed is not printed again."""
    t0 = time.perf_counter()
    state = {"stage": None, "tenth": 1, "last": t0, "printed": None}  # tenths in whole numbers: no float drift

    def report(done: int, total: int | None, stage: str | None = None):
        now = time.perf_counter()
        label = what if stage is None else f"{what}, {stage}"
        if stage != state["stage"]:
            state.update(stage=stage, tenth=1)
        if total is None:
            if done % every == 0:
                _write(f"  {label}: {done} {noun}s ({now - t0:.1f} s)")
            return
        due = 10 * done >= state["tenth"] * total or done == total or now - state["last"] >= seconds
        if due and state["printed"] != (stage, done):
            _write(f"  {label}: {noun} {done}/{total} ({now - t0:.1f} s)")
            state.update(last=now, printed=(stage, done), tenth=max(state["tenth"], 10 * done // max(total, 1) + 1))

    return report


def _write(line: str) -> None:
    print(line, file=sys.stderr, flush=True)
