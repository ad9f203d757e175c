"""Records, shard layout, task taxonomy and typed configs. Imports nothing else of aceforge."""
