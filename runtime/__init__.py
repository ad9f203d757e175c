"""The runtime: the stage contract, the executors (local, Prefect over Ray), cache, root lock, Ray, child lifetimes."""
