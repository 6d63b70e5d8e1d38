"""Fixed shares of per-layer work, each in a fresh spawned process, failing in one line."""

from __future__ import annotations

import signal

from .errors import WorkerError


def block_shares(items: list, jobs: int, block: int = 8) -> list[list]:
    """`jobs` fixed shares of a list of per-layer work items: blocks of `block` consecutive items
    dealt round-robin, so a worker reads a layer once for neighbouring items and the shares stay
    balanced along the network (deep layers cost more than the first ones)."""
    blocks = [items[i:i + block] for i in range(0, len(items), block)]
    return [[item for blk in blocks[w::jobs] for item in blk] for w in range(jobs)]


def in_processes(task, common: tuple, shares: list, progress=None) -> list:
    """task(*common, share, tick) for each share, each in its own spawned process; results in share
    order. A worker calls tick() after each unit of work; progress(units done by all) follows them.

    A fresh process per share: Mt-KaHyPar's result for a seed depends on the calls its process
    made before (measured), so a fixed share in a fresh process gives the same result every run.
    Spawn, not fork: Mt-KaHyPar's thread pool does not survive a fork. A worker that raises or
    dies fails the command within a second, in one line; when this process stops (an exception,
    SIGTERM or SIGINT turned into one by the CLI) its workers are terminated, and a worker whose
    parent died (even by SIGKILL) is killed by the kernel (PR_SET_PDEATHSIG)."""
    import multiprocessing as mp
    import queue

    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    procs = [ctx.Process(target=_run_share, args=(task, common, share, i, results), daemon=True)
             for i, share in enumerate(shares)]
    got = {}
    ticks = 0
    stop = {signal.SIGTERM, signal.SIGINT}
    try:
        # Signals wait until every worker has its whole task (a worker cut off while reading it would
        # print an unpickling traceback); workers unblock them first thing (`_run_share`).
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, stop)
        try:
            for p in procs:
                p.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
        while len(got) < len(procs):
            try:
                index, ok, value = results.get(timeout=0.5)
            except queue.Empty:
                dead = [p for i, p in enumerate(procs) if i not in got and p.exitcode is not None]
                if dead:
                    raise WorkerError(f"partition worker {dead[0].pid} died (exit code {dead[0].exitcode})") from None
                continue
            if ok == "tick":
                ticks += 1
                if progress:
                    progress(ticks)
                continue
            if not ok:
                raise WorkerError(f"partition worker {index} failed: {value}")
            got[index] = value
    finally:
        for p in procs:
            if p.is_alive():
                p.terminate()
        for p in procs:
            if p.pid is not None:
                p.join()
    return [got[i] for i in range(len(shares))]


def _die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies, however it died."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGKILL))  # PR_SET_PDEATHSIG = 1
    except (OSError, AttributeError):
        pass


def _run_share(task, common, share, index, results):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT})
    _die_with_parent()
    try:
        results.put((index, True, task(*common, share, lambda: results.put((index, "tick", None)))))
    except Exception as e:  # noqa: BLE001 — reported by the parent in one line
        results.put((index, False, f"{e.__class__.__name__}: {e}"))
