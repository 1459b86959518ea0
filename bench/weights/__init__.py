"""Pretrained networks: weight files (located, checksummed), the frozen networks, the FID Inception."""
