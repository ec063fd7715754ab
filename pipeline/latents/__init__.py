"""Latent space: the autoencoder codecs (TAEF2, TAESD, SD-VAE), the per-frame stylizers (latent WCT, DiffuseST)
that produce the frame-by-frame baseline, and the latent cache (``docs/architecture.md``)."""
