"""Pack style pairs and chains into their own shard set: <root>/shards/<prefix>-<synthesis.shard_name>-chains/.

Style records give `style_transfer_reference` (content as the edit input + a style reference) and
`style_editing` (the content alone); long-context and multi-turn records give one sample each. The samples
reaching the supervision gate per task must equal what the stages' markers promise, or no marker is written.
"""

from __future__ import annotations

from stages.synthesis.chain_records import iter_chain_part
from stages.supervise import settings as supervision_settings
from stages.synthesis.pack import SynthPackStage


def chain_stages(cfg) -> list:
    """The enabled producers of the chain shard set and the stages they need that pack into no set, in registry
    order (long_context also needs the object removals: they run with the synthesis set's stages)."""
    from stages.registry import enabled, stage

    on = enabled(cfg)
    todo = [n for c in on if c.shard_set == "chains" for n in c.needs]
    prep: set[str] = set()  # what they need that packs into no set (style features and buckets)
    while todo:
        c = stage(todo.pop())
        if c.shard_set is None and c.name not in prep and c.scope == "synthesis":
            prep.add(c.name)
            todo += c.needs
    return [cls(cfg) for cls in on if cls.shard_set == "chains" or cls.name in prep]


class ChainPackStage(SynthPackStage):
    """A synthesized shard set like SynthPackStage's (announced and landed with the run's other sets; its
    label, folder, png shards, units and report), over the chain records' parts."""

    name = "pack-chains"
    packs, key = "chains", "chain_shards"
    title = "chain shard set"
    records = staticmethod(iter_chain_part)

    def settings(self) -> dict:
        return {"shards": self.shard_config().model_dump(mode="json"),
                "tasks": [t for _, ts in self._sources() for t in ts],
                "supervision": supervision_settings(self.cfg.supervision)}

    def _chat(self):
        """Chains and style pairs keep their templated instructions."""
        return None
