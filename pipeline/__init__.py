"""Video in, stylized video out. Subpackages by layer (``docs/architecture.md``): ``io`` (the ground),
``latents`` (codecs, stylizers, cache), ``stylize`` and ``methods`` (the end-to-end pipeline and the method
registry), ``evaluation`` (metrics, comparison, reports). Import from the modules themselves."""
