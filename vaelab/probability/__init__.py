"""Log-densities, KL divergences and the bounds built from them (all in nats)."""
