"""Numbers for people: ``1.2 M`` parameters, ``34.5 %`` sparsity, ``2.3 MiB``, ``4.0× fewer MACs``."""

from __future__ import annotations

_DECIMAL = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k"))
_BINARY = ((2**30, "GiB"), (2**20, "MiB"), (2**10, "KiB"))


def count(n: float) -> str:
    """A count with a decimal prefix: ``950``, ``12.3 k``, ``1.2 M``, ``3.4 G``."""
    for scale, prefix in _DECIMAL:
        if abs(n) >= scale:
            return f"{n / scale:.1f} {prefix}"
    return f"{n:g}" if isinstance(n, float) else str(n)


def nbytes(n: float) -> str:
    """A size with a binary prefix: ``512 B``, ``4.0 KiB``, ``2.3 MiB``."""
    for scale, unit in _BINARY:
        if abs(n) >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n:g} B"


def percent(fraction: float) -> str:
    """A fraction in [0, 1] as ``34.5 %``."""
    return f"{100 * fraction:.1f} %"


def millis(ms: float) -> str:
    """A duration in milliseconds: ``0.42 ms``, ``12.3 ms``."""
    return f"{ms:.2f} ms" if ms < 10 else f"{ms:.1f} ms"


def seconds(s: float) -> str:
    """A wall time: ``4.2 s`` or ``3 min 05 s``."""
    if s < 60:
        return f"{s:.1f} s"
    minutes, rest = divmod(round(s), 60)
    return f"{minutes} min {rest:02d} s"


def ratio(before: float, after: float, fewer: str, more: str) -> str:
    """How ``after`` compares with ``before``: ``4.0× fewer MACs``, ``1.2× slower``, ``unchanged``."""
    if after == before:
        return "unchanged"
    if after == 0:
        return "none left"
    if before == 0:
        return "was zero"
    if after < before:
        return f"{before / after:.1f}× {fewer}"
    return f"{after / before:.1f}× {more}"
