"""packer: hate-speech and meme datasets -> leak-free WebDataset shards."""

__version__ = "0.1.0"
