"""Where finopsd spends its time under load: py-spy's collapsed stacks, summarised.

py-spy on the dev VM cannot attach to a running pid (it fails to read the
target's memory), but it can start the target itself, so the profiled finopsd is
a second instance run as ``py-spy record -- python -m finopsd serve``, loaded
with the stream scenario at concurrency 32. Its numbers are not the bench's:
sampling costs the target some time.

By default py-spy samples every thread that is not idle, and a thread waiting
for the GIL is not idle: the event loop's syscalls that release the GIL
(``os.urandom``, socket send and recv) then collect the time the log writer's
thread held it. ``gil=True`` (``--profile-gil``) samples only the thread holding
the GIL: the Python CPU view, without SQLite's own C work.

The summary attributes each sample to the leaf frame (self time), to the library
the leaf lives in, and to the deepest finopsd frame on the stack (the finopsd
function whose work it was, json.loads and aiohttp writes included).
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections import Counter
from pathlib import Path

from bench.load import CLIENT_MODEL, HIGH, Load, Target, write_config
from bench.procs import Children, pin_all_threads

FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^():]*)(?::(?P<line>\d+))?\)$")
OWN = re.compile(r"(^|/)finopsd/")


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (py-spy's target)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == parent:
            out.append(int(entry))
    return out


def _frames(stack: str) -> list[tuple[str, str, str]]:
    out = []
    for raw in stack.split(";"):
        m = FRAME.match(raw)
        out.append((m.group("func"), m.group("file"), m.group("line") or "") if m else (raw, "", ""))
    return out


def _library(file: str) -> str:
    if OWN.search(file):
        return "finopsd"
    if file.startswith("<frozen"):
        return "stdlib (frozen)"
    top = file.split("/", 1)[0] if "/" in file else file.removesuffix(".py")
    return top or "?"


def summarise(raw: Path, top: int = 15) -> str:
    """A Markdown summary of a py-spy ``--format raw`` file (start-up imports left out)."""
    self_time: Counter[str] = Counter()
    library: Counter[str] = Counter()
    own: Counter[str] = Counter()
    own_line: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = imports = 0
    for line in raw.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        if "_find_and_load" in stack:  # importing at start-up: not the cost of a request
            imports += n
            continue
        total += n
        frames = _frames(stack)
        func, file, _ = frames[-1]
        self_time[f"{func} ({file})"] += n
        library[_library(file)] += n
        deepest = next(((fn, fl, ln) for fn, fl, ln in reversed(frames) if OWN.search(fl)), None)
        own[f"{deepest[0]} ({deepest[1]})" if deepest else "(no finopsd frame: the log writer thread, loose callbacks)"] += n
        own_line[f"{deepest[1]}:{deepest[2]} {deepest[0]}" if deepest else "(no finopsd frame)"] += n
        for name in {f"{fn} ({fl})" for fn, fl, _ in frames if OWN.search(fl)}:
            inclusive[name] += n
    if not total:
        return "py-spy recorded no samples"

    def block(title: str, counts: Counter[str]) -> list[str]:
        rows = [f"**{title}**", "", "| % of samples | frame |", "| ---: | --- |"]
        rows += [f"| {100 * c / total:.1f} | `{name}` |" for name, c in counts.most_common(top)]
        return rows + [""]

    parts = [f"{total} samples of active threads ({imports} more in start-up imports, left out)", ""]
    parts += block("by library of the leaf frame", library)
    parts += block("by deepest finopsd frame: its own work plus the library calls it makes "
                   "(serve_command: the event loop and aiohttp outside any handler)", own)
    parts += block("by deepest finopsd line", own_line)
    parts += block("finopsd functions, inclusive", inclusive)
    parts += block("leaf frames (self time)", self_time)
    return "\n".join(parts)


async def profile_finopsd(children: Children, load: Load, fake_url: str, raw: Path, *, seconds: float,
                          warmup: float, body_kb: float, log_content: bool, gil: bool) -> str:
    """Run a second finopsd under py-spy with the stream load at c=32; the summary as Markdown."""
    pyspy = shutil.which("py-spy", path=str(Path(sys.executable).parent)) or shutil.which("py-spy")
    if not pyspy:
        return "py-spy not found (.venv/bin/pip install py-spy)"
    pdir = children.workdir / "profiled"
    pdir.mkdir(exist_ok=True)
    config = write_config(pdir, fake_url, log_content)
    spy_args = [pyspy, "record", *(["--gil"] if gil else []), "--nonblocking", "-r", "250", "-f", "raw",
                "-o", str(raw), "--", sys.executable, "-m", "finopsd", "serve", "--config", str(config),
                "--port", "0"]
    spy = await children.server("py-spy", spy_args, load.pins.load)
    for pid in child_pids(spy.pid):
        children.adopt(pid)
        if load.pins.gateway:  # as in the c=32 scenarios: finopsd alone on its CPU, py-spy with the load
            pin_all_threads(pid, load.pins.gateway)
    target = Target("finopsd-profiled", spy.url + "/openai/chat/completions", CLIENT_MODEL, None)
    await load.run(target, True, HIGH, warmup, body_kb, record=False)
    result = await load.run(target, True, HIGH, seconds, body_kb)
    spy.proc.send_signal(signal.SIGINT)  # py-spy writes its file, then ends its child
    await asyncio.wait_for(spy.proc.wait(), 30)
    head = (f"profiled stream c={HIGH}{' (--gil)' if gil else ''}: {result['n']} requests in "
            f"{result['elapsed']:.1f} s, {result['errors']} errors; stacks in {raw}")
    return f"{head}\n\n{summarise(raw)}" if raw.exists() else f"{head}\npy-spy wrote nothing:\n{spy.tail()}"
