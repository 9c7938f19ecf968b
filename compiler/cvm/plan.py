"""Storage plans for exported graphs: CVM's compiler plan, and a check of a given plan.

``plan_memory`` follows NNVM's PlanMemory as CVM's GraphCompile runs it: operator outputs in
node order (several outputs largest first) take a released pool whose size is within a factor
16 (the smallest at least as large, else the largest smaller one, which grows) or a new pool;
an entry's pool is released after its last reader (unread outputs at once); then every variable
gets a new pool of its own. It reproduces the storage ids of every conformance vector.
"""
from __future__ import annotations

from dataclasses import dataclass

MATCH_RANGE = 16


@dataclass(frozen=True)
class PlanNode:
    """A node as the planner sees it: entry ids read and written."""

    is_var: bool
    inputs: tuple[int, ...]
    outputs: tuple[int, ...]
    inplace: bool = False


class _Allocator:
    def __init__(self):
        self.bytes: list[int] = []
        self.free: list[tuple[int, int, int]] = []     # (bytes at release, order, id)
        self.order = 0

    def request(self, nbytes: int) -> int:
        above = [f for f in self.free if nbytes <= f[0] <= nbytes * MATCH_RANGE]
        below = [f for f in self.free if nbytes // MATCH_RANGE <= f[0] < nbytes]
        if above:
            pick = min(above)
        elif below:
            pick = max(below)
        else:
            self.bytes.append(nbytes)
            return len(self.bytes) - 1
        self.free.remove(pick)
        sid = pick[2]
        self.bytes[sid] = max(self.bytes[sid], nbytes)
        return sid

    def release(self, sid: int) -> None:
        self.order += 1
        self.free.append((self.bytes[sid], self.order, sid))


def plan_memory(nodes: list[PlanNode], sizes: list[int], heads: list[int]) -> list[int]:
    """Storage ids per entry, as CVM's compiler assigns them."""
    refs = [0] * len(sizes)
    for node in nodes:
        for e in node.inputs:
            refs[e] += 1
    for e in heads:
        refs[e] += 1
    sids, alloc, pool_refs = [-1] * len(sizes), _Allocator(), {}
    for node in nodes:
        if node.is_var:
            continue
        for e in sorted(node.outputs, key=lambda e: (sizes[e], e), reverse=True):
            sids[e] = alloc.request(4 * sizes[e])
            pool_refs[sids[e]] = refs[e]
        for e in node.inputs:
            if sids[e] >= 0:
                pool_refs[sids[e]] -= 1
                if pool_refs[sids[e]] == 0:
                    alloc.release(sids[e])
        for e in node.outputs:
            if pool_refs[sids[e]] == 0:
                alloc.release(sids[e])
    pools = len(alloc.bytes)
    for node in nodes:
        if node.is_var:
            sids[node.outputs[0]] = pools
            pools += 1
    return sids


def storage_bytes(sids: list[int], sizes: list[int]) -> int:
    """CVM's GetStorageSize: the sum over pools of ceil4(4 x the largest entry); int32 pools
    are multiples of 4 already."""
    pools: dict[int, int] = {}
    for s, n in zip(sids, sizes):
        pools[s] = max(pools.get(s, 0), n)
    return 4 * sum(pools.values())


def plan_is_safe(nodes: list[PlanNode], sids: list[int], heads: list[int]) -> bool:
    """Whether no two entries that are live at once share a pool (variables live always),
    except an in-place op's output taking the pool of an input read last by that op."""
    if len(sids) != sum(len(n.outputs) for n in nodes) or any(s < 0 for s in sids):
        return False
    forever = len(nodes)
    born, dies = [0] * len(sids), [0] * len(sids)
    for k, node in enumerate(nodes):
        for e in node.outputs:
            born[e], dies[e] = (-1, forever) if node.is_var else (k, k)
        for e in node.inputs:
            dies[e] = max(dies[e], k)
    for e in heads:
        dies[e] = forever
    handover = {(e, o) for k, n in enumerate(nodes) if n.inplace
                for e in n.inputs if dies[e] == k for o in n.outputs}
    by_pool: dict[int, list[int]] = {}
    for e, s in enumerate(sids):
        by_pool.setdefault(s, []).append(e)
    for entries in by_pool.values():
        for i, a in enumerate(entries):
            for b in entries[i + 1:]:
                overlap = born[a] <= dies[b] and born[b] <= dies[a]
                if overlap and (a, b) not in handover and (b, a) not in handover:
                    return False
    return True
