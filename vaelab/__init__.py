"""vaelab: variational autoencoders on PyTorch Lightning."""
