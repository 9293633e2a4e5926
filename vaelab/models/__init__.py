"""The VAE's parts (encoder, decoders), the VAE that joins them, and its LightningModule."""
