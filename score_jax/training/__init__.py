"""Train state, sharding, jitted steps, checkpointing and the online SCoRe loop."""
