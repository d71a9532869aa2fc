"""How many CPU threads torch computes with, and how its idle threads wait.

torch's CPU wheel runs its parallel loops (and MKL's) on GNU OpenMP (``libgomp.so.1`` inside the
wheel; ``torch.__config__.parallel_info()`` says "ATen parallel backend: OpenMP"), with one thread
per core by default. That is right for a process alone, and badly wrong for two: decoding a small
model is thousands of short parallel regions per second, each ending at a barrier that needs all
of the process's threads running at once, so two processes with a thread per core each keep
preempting each other's barrier partners (and libgomp's idle threads spin before they sleep,
burning the cores the other process needs).

So a command run as shard i of N (``--shard i/N``, its siblings presumably beside it) takes
``cores // N`` threads (at least one); ``--threads`` or ``CAI_THREADS`` says otherwise
(option over variable). A command neither sharded nor told keeps torch's default.

Waiting: libgomp's idle threads spin for about 300,000 rounds before they sleep (its documented
default while ``OMP_WAIT_POLICY`` is unset). Alone, spinning is what makes short parallel regions
fast; beside another process it burns the cores that process needs. Measured on the 2-core dev
machine with AVX2 kernels, quiet, batch 24 (`benchmarks/contention.py`): one process alone 83.7
tok/s spinning, 63.0 passive; two unsharded processes at once 33.4 tok/s together spinning, 92.6
passive; shards 0/2 + 1/2 (a thread each, passive) 95.8. So the `cai` command asks for passive
waiting (`cli_environment`) only when the command says it shares the machine: ``--shard i/N``
with N > 1, ``--threads`` or ``CAI_THREADS``; a lone command keeps spinning.

Only the CLI applies either choice: ``torch.set_num_threads`` and the environment are
process-wide state, and a library caller's process is its own business. The rest here are pure
functions of their arguments.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping, Sequence

THREADS_OPTION = "--threads"
WAIT_POLICY, SPIN_COUNT = "OMP_WAIT_POLICY", "GOMP_SPINCOUNT"  # libgomp's own variables
THREADS_ENV = "CAI_THREADS"
THREADS_HELP = (
    f"CPU threads for torch. Default: the {THREADS_ENV} environment variable, else cores // N "
    "under --shard i/N, else one per core. Either setting (or a shard) also makes idle threads "
    "sleep instead of spin: right beside other jobs, slower alone."
)


def parse_threads(text: str | None, named_by: str) -> int | None:
    """A thread count as given (None or empty: not given); anything but a whole number ≥ 1 is a
    one-line error naming `named_by` (the option or the variable that gave it)."""
    from cai.errors import option_error

    if text is None or not text.strip():
        return None
    try:
        n = int(text.strip())
    except ValueError:
        raise option_error(named_by, "must be a whole number of threads (1 or more)", value=text) from None
    if n < 1:
        raise option_error(named_by, "must be 1 or more", value=text)
    return n


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, e.g. under taskset or a container's
    cpuset), not the machine's total."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


def choose_threads(option: str | None, environ: Mapping[str, str], shard: tuple[int, int], cores: int) -> int | None:
    """The thread count a command should use, or None for torch's own default: the option, else
    the variable, else ``cores // N`` for shard i of N > 1."""
    explicit = parse_threads(option, THREADS_OPTION)
    from_env = parse_threads(environ.get(THREADS_ENV), THREADS_ENV)  # checked even when overridden
    if explicit is not None:
        return explicit
    if from_env is not None:
        return from_env
    n = shard[1]
    return max(1, cores // n) if n > 1 else None


def apply_threads(n: int | None) -> None:
    """Give torch `n` compute threads (None: leave its default). Imports torch only when there
    is something to set, so commands that never load a model stay fast."""
    if n is None:
        return
    import torch

    torch.set_num_threads(n)


def shares_machine(argv: Sequence[str], environ: Mapping[str, str]) -> bool:
    """Whether a command line says its process shares the machine: ``--shard i/N`` with N > 1, a
    ``--threads`` option, or a non-empty ``CAI_THREADS``. Read from the raw arguments because the
    answer is needed before the command's options are parsed (and before torch loads)."""
    if (environ.get(THREADS_ENV) or "").strip():
        return True
    for i, arg in enumerate(argv):
        name, eq, inline = arg.partition("=")
        value = inline if eq else (argv[i + 1] if i + 1 < len(argv) else "")
        if name == THREADS_OPTION and value.strip():
            return True
        if name == "--shard" and _shard_count(value) > 1:
            return True
    return False


def _shard_count(value: str) -> int:
    """N of ``i/N`` as `cai.io.store.parse_shard` reads it, 1 for anything it refuses: its
    one-line error comes when the command parses its options."""
    from cai.errors import CaiError
    from cai.io.store import parse_shard

    try:
        return parse_shard(value)[1] if value else 1
    except CaiError:
        return 1


def cli_environment(environ: MutableMapping[str, str], argv: Sequence[str]) -> MutableMapping[str, str]:
    """What the `cai` command puts into its own environment at entry; returns `environ`.

    Passive waiting when the command shares the machine (`shares_machine`; the module's docstring
    has the figures), and only where the user has not tuned libgomp's waiting (``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT``). Through the environment because libgomp reads it once, when torch
    loads it: the CLI calls this before anything imports torch. It is the one process-wide setting
    `cai` makes at entry; the thread count waits until the command knows its shard (`apply_threads`)."""
    tuned = WAIT_POLICY in environ or SPIN_COUNT in environ
    if not tuned and shares_machine(argv, environ):
        environ[WAIT_POLICY] = "PASSIVE"
    return environ
