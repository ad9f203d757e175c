"""Series and reference groups from one union-find set: tight groups, not chains.

Union-find joins A and C when A ~ B ~ C, so a set can hold members that are nothing alike (a rocket, a
poster and a micrograph linked through a chain of in-band neighbours). A group is built around a target:
its inputs are taken, most similar first, only when their embedding cosine to the target is inside the band
(above it an input would be the target's near-duplicate), their cosine to every input already taken at least
the band's floor (two near-duplicate inputs are still one subject), and (when `same` is given) when geometry
confirms they show one subject with the target and with each of those inputs. A target around which no
group of `min_inputs` can be built is dropped (`incoherent`). Every member of the set ends in exactly one
of: a group, `incoherent`, or `leftover` (fewer than a group's worth of members remained). Memory: the
set's rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np


@dataclass
class SetGroups:
    groups: list[tuple[np.ndarray, int]] = field(default_factory=list)  # (inputs, target): rows of the set
    incoherent: int = 0  # targets no tight group could be built around (dropped)
    leftover: int = 0  # members left over when fewer than min_inputs + 1 remained

    @property
    def grouped(self) -> int:
        return sum(len(i) + 1 for i, _ in self.groups)


def tight_groups(x: np.ndarray, lo: float, hi: float, rng: np.random.Generator,
                 same: Callable[[int, int], bool] | None = None, min_inputs: int = 3, max_inputs: int = 8,
                 max_candidates: int = 32) -> SetGroups:
    """Groups of `min_inputs`-`max_inputs` inputs + 1 target over the rows of x (one set's unit-norm
    vectors). Targets are tried in a seeded order, each group's size cap is drawn in [min_inputs,
    max_inputs]; at most `max_candidates` in-band neighbours of a target are tried (bounds the geometric
    checks per target)."""
    n = len(x)
    x = np.asarray(x, np.float32)
    alive = np.ones(n, bool)
    out = SetGroups()
    for t in rng.permutation(n).tolist():
        if not alive[t]:
            continue
        if int(alive.sum()) < min_inputs + 1:
            break
        cap = int(rng.integers(min_inputs, max_inputs + 1))
        cos = x @ x[t]
        cand = np.flatnonzero(alive & (cos >= lo) & (cos <= hi))
        cand = cand[cand != t]
        cand = cand[np.argsort(-cos[cand], kind="stable")][:max_candidates]
        chosen: list[int] = []
        for c in cand.tolist():
            if len(chosen) == cap:
                break
            if chosen:
                if not np.all(x[chosen] @ x[c] >= lo):
                    continue
            if same is not None and not (same(t, c) and all(same(m, c) for m in chosen)):
                continue
            chosen.append(c)
        if len(chosen) >= min_inputs:
            out.groups.append((np.sort(np.array(chosen, np.int64)), t))
            alive[chosen] = False
        else:
            out.incoherent += 1
        alive[t] = False
    out.leftover = int(alive.sum())
    if out.grouped + out.incoherent + out.leftover != n:
        raise RuntimeError(f"groups of a set of {n}: {out.grouped} grouped + {out.incoherent} incoherent + "
                           f"{out.leftover} left over")
    return out
